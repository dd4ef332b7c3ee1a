#!/usr/bin/env bash
# Start the mesh: workers first (waiting on the gRPC health protocol), then the gateway.
# Usage: scripts/start.sh [--follow] [--compose]
#   --follow   stay in the foreground streaming the logs; Ctrl-C drains and stops everything
#   --compose  use docker compose (ops/docker/docker-compose.yml) instead of local processes
set -euo pipefail
source "$(dirname "$0")/mesh.sh"

follow=0
for arg in "$@"; do
  case $arg in
    --follow) follow=1 ;;
    --compose) exec docker compose -f ops/docker/docker-compose.yml up -d --wait ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
  esac
done

START_TIMEOUT=${TORCHGATE_START_TIMEOUT:-300}
# Locally the reranker may stand in with the bundled embedder (announced in Info, responses and logs).
export TORCHGATE_RERANKING_FALLBACK=${TORCHGATE_RERANKING_FALLBACK:-embedding}
mkdir -p "$RUN_DIR"

launch() {  # name, module
  if pid_alive "$1"; then
    echo "$1 already running (pid $(cat "$RUN_DIR/$1.pid"))"
    return
  fi
  rm -f "$(port_file "$1")"
  export "TORCHGATE_${1^^}_PORT_FILE=$(port_file "$1")"
  # setsid: Ctrl-C in this terminal must not reach the services; stop.sh drains them in order.
  setsid "$PYTHON" -m "$2" >>"$RUN_DIR/$1.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/$1.pid"
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
  launch "$name" "services.$name"
done
for name in "${WORKERS[@]}"; do
  wait_until "$name" test -s "$(port_file "$name")"
  upstream_var="TORCHGATE_GATEWAY_${name^^}__ADDRESSES"
  export "$upstream_var=${!upstream_var:-127.0.0.1:$(worker_port "$name")}"
  wait_until "$name" worker_status "$name"
  echo "$name   serving on $(worker_host "$name"):$(worker_port "$name")  (${SERVICE[$name]})"
done
launch gateway gateway
wait_until gateway test -s "$(port_file gateway)"
wait_until gateway gateway_ready
echo "gateway   ready on $(gateway_url)   (docs: $(gateway_url)/docs, logs: $RUN_DIR/)"

if ((follow)); then
  trap 'echo; scripts/stop.sh; exit 0' INT TERM
  tail -n 0 -F "$RUN_DIR"/*.log &
  wait
fi
