#!/usr/bin/env bash
# Drain and stop the mesh: gateway first, then the workers; SIGTERM, wait, then SIGKILL stragglers.
# Idempotent: stopping a stopped mesh succeeds. Usage: scripts/stop.sh [--compose] (the containers: compose.sh down)
set -uo pipefail
# A drain runs to its end: neither a closed stdout (`| tee` gone after Ctrl-C) nor a second Ctrl-C stops it
# half-way; every wait below is bounded.
trap '' PIPE INT
source "$(dirname "$0")/mesh.sh"

if [ "${1:-}" = "--compose" ]; then
  exec scripts/compose.sh down
fi

STOP_TIMEOUT=${TORCHGATE_STOP_TIMEOUT:-20}

stop_one() {
  local name=$1 pid_file="$RUN_DIR/$1.pid"
  [ -f "$pid_file" ] || return 0
  local pid
  pid=$(cat "$pid_file")
  if kill -TERM "$pid" 2>/dev/null; then
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "$name did not drain within ${STOP_TIMEOUT}s; killing it"
      kill -KILL "$pid" 2>/dev/null
    fi
    echo "$name stopped"
  fi
  rm -f "$pid_file" "$(port_file "$name")"
}

# Anything else start.sh launched for this run directory: a start cut short between a fork and its pid file.
stop_marked() {
  local pids
  mapfile -t pids < <(grep -lzxF "$MESH_MARK" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3)
  ((${#pids[@]})) || return 0
  echo "stopping ${#pids[@]} process(es) of an unfinished start: ${pids[*]}"
  kill -TERM "${pids[@]}" 2>/dev/null
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while kill -0 "${pids[@]}" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  kill -KILL "${pids[@]}" 2>/dev/null
}

stop_one gateway
for ((i = ${#WORKERS[@]} - 1; i >= 0; i--)); do
  for instance in $(instances "${WORKERS[$i]}"); do stop_one "$instance"; done
done
stop_marked
