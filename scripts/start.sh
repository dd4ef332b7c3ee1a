#!/usr/bin/env bash
# Start the mesh: workers first (waiting on the gRPC health protocol), then the gateway.
# Usage: scripts/start.sh [--follow] [--compose]
#   --follow   stay in the foreground streaming the logs; Ctrl-C drains and stops everything
#   --compose  run the images of `make images` as containers instead (scripts/compose.sh up)
set -euo pipefail
source "$(dirname "$0")/mesh.sh"

follow=0
for arg in "$@"; do
  case $arg in
    --follow) follow=1 ;;
    --compose) exec scripts/compose.sh up ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
  esac
done

# One drain path for every moment: from before the first service starts, Ctrl-C (or a TERM, or a failed start)
# stops whatever has started, in order, through stop.sh; a start that succeeds without --follow disarms it.
drain() {
  trap '' INT TERM PIPE
  trap - EXIT
  set +e
  [ -z "${follower:-}" ] || kill "$follower" 2>/dev/null
  scripts/stop.sh
  exit "${1:-130}"
}
trap drain INT TERM
trap 'status=$?; ((status == 0)) || drain "$status"' EXIT

START_TIMEOUT=${TORCHGATE_START_TIMEOUT:-300}
# Locally the reranker may stand in with the bundled embedder (announced in Info, responses and logs).
export TORCHGATE_RERANKING_FALLBACK=${TORCHGATE_RERANKING_FALLBACK:-embedding}
mkdir -p "$RUN_DIR"

launch() {  # name, module, [VAR=value ...] for this process only
  local name=$1 module=$2
  shift 2
  if pid_alive "$name"; then
    echo "$name already running (pid $(cat "$RUN_DIR/$name.pid"))"
    return
  fi
  rm -f "$(port_file "$name")"
  local base
  base=$(base_name "$name")
  # setsid: Ctrl-C in this terminal must not reach the services; stop.sh drains them in order. The MESH_MARK lets
  # stop.sh find a process whose pid file a Ctrl-C between the fork and the next line kept from being written.
  env "TORCHGATE_${base^^}_PORT_FILE=$(port_file "$name")" "$MESH_MARK" "$@" \
    setsid "$PYTHON" -m "$module" >>"$RUN_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/$name.pid"
}

wait_until() {  # name, command...
  local name=$1; shift
  local deadline=$((SECONDS + START_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if ! pid_alive "$name"; then
      echo "$name exited during start-up; last log lines:" >&2
      tail -n 20 "$RUN_DIR/$name.log" >&2
      exit 1
    fi
    if ((SECONDS > deadline)); then
      echo "$name not healthy after ${START_TIMEOUT}s; see $RUN_DIR/$name.log" >&2
      exit 1
    fi
    sleep 0.5
  done
}

for name in "${WORKERS[@]}"; do
  replicas "$name" >/dev/null || exit 2
done
launch_worker() {  # name: every process of every model of the worker
  local name=$1 j process
  for ((j = 1; j <= $(model_count "$name"); j++)); do
    for process in $(replicas "$name" "$j"); do
      mapfile -t overrides < <(instance_env "$process")
      launch "$process" "services.$name" "${overrides[@]}"
    done
  done
}

for name in "${WORKERS[@]}"; do
  [ -n "${CALLS[$name]:-}" ] || launch_worker "$name"
done
for name in "${WORKERS[@]}"; do
  if [ -n "${CALLS[$name]:-}" ]; then
    called_var="TORCHGATE_GATEWAY_${CALLS[$name]^^}__ADDRESSES"
    calling_var="TORCHGATE_${name^^}_${CALLS[$name]^^}_ADDRESSES"
    export "$calling_var=${!calling_var:-${!called_var//;/,}}"
    launch_worker "$name"
  fi
  # The gateway gets one pool per model (`;` between pools) of all its replicas (`,`); an explicit list wins.
  pools=()
  for ((j = 1; j <= $(model_count "$name"); j++)); do
    addresses=()
    for process in $(replicas "$name" "$j"); do
      wait_until "$process" test -s "$(port_file "$process")"
      addresses+=("127.0.0.1:$(worker_port "$process")")
    done
    pools+=("$(IFS=,; echo "${addresses[*]}")")
  done
  upstream_var="TORCHGATE_GATEWAY_${name^^}__ADDRESSES"
  export "$upstream_var=${!upstream_var:-$(IFS=';'; echo "${pools[*]}")}"
  for ((j = 1; j <= $(model_count "$name"); j++)); do
    for process in $(replicas "$name" "$j"); do
      wait_until "$process" worker_status "$process"
      model=$(model_of "$process")
      printf '%-13s serving on %s  (%s)%s\n' "$process" "$(worker_host "$process"):$(worker_port "$process")" \
        "${SERVICE[$name]}" "${model:+  model $model}"
    done
  done
done
launch gateway gateway
wait_until gateway test -s "$(port_file gateway)"
wait_until gateway gateway_ready
printf '%-13s ready on %s   (docs: %s/docs, logs: %s/)\n' gateway "$(gateway_url)" "$(gateway_url)" "$RUN_DIR"

if ((follow)); then
  # Whatever stdout is piped into may be gone by now (Ctrl-C reaches `| tee` too): a write to it must not end
  # the drain half-way, so the drain ignores SIGPIPE and a write error, as stop.sh does itself.
  tail -n 0 -F "$RUN_DIR"/*.log &
  follower=$!
  wait "$follower"
  drain 0  # the follower ended (its reader went away): the foreground run ends, and its mesh with it
fi
trap - INT TERM EXIT
