#!/usr/bin/env bash
# The containerized mesh (what start.sh, stop.sh and health.sh do with --compose), on the local mesh's host ports.
# Usage: scripts/compose.sh up|down|health
#   up      start the containers of `make images`' images, then wait until every worker answers SERVING on its
#           published port and the gateway is ready
#   down    drain and remove them (each container has its stop_grace_period)
#   health  one line per service: its container's state, its gRPC health (workers) or readiness (gateway)
set -euo pipefail
# The probes below go to the published default ports, never to a local mesh's port files.
export TORCHGATE_RUN_DIR=.run/compose
source "$(dirname "$0")/mesh.sh"
source "$(dirname "$0")/containers.sh"
find_compose
mkdir -p "$RUN_DIR"
LOG=$RUN_DIR/compose.log
START_TIMEOUT=${TORCHGATE_START_TIMEOUT:-300}

container_id() {  # compose service name: its container's id, if it has one
  "${ENGINE_CMD[@]}" ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT" \
    --filter "label=com.docker.compose.service=$1" | head -n1
}

container_state() {  # compose service name: the engine's state of its container (missing when there is none)
  local id
  id=$(container_id "$1")
  if [ -z "$id" ]; then echo missing; return; fi
  "${ENGINE_CMD[@]}" inspect --format '{{.State.Status}}' "$id"
}

all_healthy() {
  local name
  for name in "${WORKERS[@]}"; do worker_status "$name" >/dev/null 2>&1 || return 1; done
  gateway_ready >/dev/null 2>&1
}

up() {
  local image
  for image in "$GATEWAY_IMAGE" "$WORKER_IMAGE"; do
    "${ENGINE_CMD[@]}" image inspect "$image" >/dev/null 2>&1 \
      || { echo "image $image is missing: run make images" >&2; exit 1; }
  done
  if ! "${COMPOSE[@]}" up -d >>"$LOG" 2>&1; then
    echo "compose up failed; last lines of $LOG:" >&2
    tail -n 20 "$LOG" >&2
    exit 1
  fi
  local deadline=$((SECONDS + START_TIMEOUT))
  until all_healthy; do
    if ((SECONDS > deadline)); then
      echo "the containerized mesh is not healthy after ${START_TIMEOUT}s:" >&2
      health >&2 || true
      exit 1
    fi
    sleep 1
  done
  health
}

down() {  # stop (each container drains within its grace period), say how each one exited, remove them
  "${COMPOSE[@]}" stop >>"$LOG" 2>&1 || { echo "compose stop failed; see $LOG" >&2; exit 1; }
  local drained=1 name id code
  for name in gateway "${WORKERS[@]}"; do
    id=$(container_id "$name")
    [ -n "$id" ] || continue
    code=$("${ENGINE_CMD[@]}" inspect --format '{{.State.ExitCode}}' "$id")
    if [ "$code" = 0 ]; then echo "$name stopped"; else echo "$name exited $code (not drained)"; drained=0; fi
  done
  "${COMPOSE[@]}" down >>"$LOG" 2>&1 || { echo "compose down failed; see $LOG" >&2; exit 1; }
  ((drained))
}

health() {
  local healthy=1 name status
  for name in "${WORKERS[@]}"; do
    status=$(worker_status "$name" 2>/dev/null) || healthy=0
    printf '%-13s %-22s %-12s container %s\n' "$name" "127.0.0.1:$(worker_port "$name")" "${status:-unreachable}" \
      "$(container_state "$name")"
  done
  status=$(gateway_ready) || healthy=0
  printf '%-13s %-22s %-12s container %s\n' gateway "$(gateway_url)" "$status" "$(container_state gateway)"
  ((healthy))
}

case ${1:-} in
  up|down|health) "$1" ;;
  *) echo "usage: scripts/compose.sh up|down|health" >&2; exit 2 ;;
esac
