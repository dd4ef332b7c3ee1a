#!/usr/bin/env bash
# One line per service (gRPC health of each worker, readiness of the gateway); exit 1 if any is unhealthy.
# Usage: scripts/health.sh [--compose] (the containers: compose.sh health)
set -uo pipefail
source "$(dirname "$0")/mesh.sh"
if [ "${1:-}" = "--compose" ]; then exec scripts/compose.sh health; fi

healthy=1
for name in "${WORKERS[@]}"; do
  for instance in $(instances "$name"); do
    status=$(worker_status "$instance") || healthy=0
    printf '%-13s %-22s %s\n' "$instance" "$(worker_host "$instance"):$(worker_port "$instance")" "$status"
  done
done
status=$(gateway_ready) || healthy=0
printf '%-13s %-22s %s\n' gateway "$(gateway_url)" "$status"
((healthy))
