#!/usr/bin/env bash
# One line per service (gRPC health of each worker, readiness of the gateway); exit 1 if any is unhealthy.
set -uo pipefail
source "$(dirname "$0")/mesh.sh"

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
