#!/usr/bin/env bash
# One line per service (gRPC health of each worker, readiness of the gateway); exit 1 if any is unhealthy.
set -uo pipefail
source "$(dirname "$0")/mesh.sh"

healthy=1
for name in "${WORKERS[@]}"; do
  status=$(worker_status "$name") || healthy=0
  printf '%-11s %-22s %s\n' "$name" "$(worker_host "$name"):$(worker_port "$name")" "$status"
done
status=$(gateway_ready) || healthy=0
printf '%-11s %-22s %s\n' gateway "$(gateway_url)" "$status"
((healthy))
