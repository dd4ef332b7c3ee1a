# Sourced by start.sh, stop.sh and health.sh: what the local mesh is made of and where it runs.
# shellcheck shell=bash
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

RUN_DIR=${TORCHGATE_RUN_DIR:-.run}
PYTHON=${TORCHGATE_PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3

# Worker name -> default gRPC port and gRPC service; start order is this order.
WORKERS=(gpu embedding reranking classifier)
declare -A DEFAULT_PORT=([gpu]=50051 [embedding]=50052 [reranking]=50053 [classifier]=50054)
declare -A SERVICE=(
  [gpu]=torchgate.v1.GpuService
  [embedding]=torchgate.v1.EmbeddingService
  [reranking]=torchgate.v1.RerankingService
  [classifier]=torchgate.v1.ClassifierService
)

# A started service writes the port it bound to $RUN_DIR/<name>.port (port 0 picks a free one).
port_file() { echo "$RUN_DIR/$1.port"; }
worker_port() {
  local var="TORCHGATE_${1^^}_PORT"
  if [ -s "$(port_file "$1")" ]; then cat "$(port_file "$1")"; else echo "${!var:-${DEFAULT_PORT[$1]}}"; fi
}
worker_host() {
  local var="TORCHGATE_${1^^}_HOST"
  echo "${!var:-127.0.0.1}"
}
gateway_port() {
  if [ -s "$(port_file gateway)" ]; then cat "$(port_file gateway)"; else echo "${TORCHGATE_GATEWAY_PORT:-8000}"; fi
}
gateway_url() { echo "http://${TORCHGATE_GATEWAY_HOST:-127.0.0.1}:$(gateway_port)"; }

pid_alive() { [ -f "$RUN_DIR/$1.pid" ] && kill -0 "$(cat "$RUN_DIR/$1.pid")" 2>/dev/null; }

# Secure mode: probe with the gateway's client credentials.
TLS_ARGS=()
if [ -n "${TORCHGATE_GATEWAY_TLS_CA:-}" ]; then
  TLS_ARGS=(--ca "$TORCHGATE_GATEWAY_TLS_CA" --cert "${TORCHGATE_GATEWAY_TLS_CERT:-}"
            --key "${TORCHGATE_GATEWAY_TLS_KEY:-}" --server-name "${TORCHGATE_GATEWAY_TLS_SERVER_NAME:-}")
fi

worker_status() {
  "$PYTHON" -m torchgate.health_probe "$(worker_host "$1"):$(worker_port "$1")" "${SERVICE[$1]}" --timeout 2 \
    "${TLS_ARGS[@]}"
}

gateway_ready() {
  "$PYTHON" - "$(gateway_url)/health/ready" <<'PY'
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=3)
    print("ready")
except urllib.error.HTTPError:
    print("not_ready"); sys.exit(1)
except OSError:
    print("unreachable"); sys.exit(1)
PY
}
