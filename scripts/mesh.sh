# Sourced by start.sh, stop.sh and health.sh: what the local mesh is made of and where it runs.
# shellcheck shell=bash
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

RUN_DIR=${TORCHGATE_RUN_DIR:-.run}
# In the environment of every process start.sh launches for this run directory (and of their children): what
# stop.sh finds a process by when a start was cut short before its pid file was written.
MESH_MARK="TORCHGATE_MESH=$(realpath -m "$RUN_DIR")"
PYTHON=${TORCHGATE_PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3

# Worker name -> default gRPC port and gRPC service; start order is this order.
WORKERS=(gpu embedding reranking classifier documents)
declare -A DEFAULT_PORT=([gpu]=50051 [embedding]=50052 [reranking]=50053 [classifier]=50054 [documents]=50055)
declare -A DEFAULT_METRICS_PORT=([gpu]=9451 [embedding]=9452 [reranking]=9453 [classifier]=9454 [documents]=9455)
declare -A SERVICE=(
  [gpu]=torchgate.v1.GpuService
  [embedding]=torchgate.v1.EmbeddingService
  [reranking]=torchgate.v1.RerankingService
  [classifier]=torchgate.v1.ClassifierService
  [documents]=torchgate.v1.DocumentService
)
# A worker that calls another starts once that one's addresses are known: the documents worker reads the
# embedding models' tokenizers from the embedding workers (TORCHGATE_DOCUMENTS_EMBEDDING_ADDRESSES).
declare -A CALLS=([documents]=embedding)

# A worker runs one pool of processes per model (TORCHGATE_<WORKER>_MODELS: comma-separated model ids or local
# directories; unset: the worker's MODEL setting), each pool TORCHGATE_<WORKER>_REPLICAS processes (default 1).
# Names: <worker> for the first model's first replica, -m<j> for model j, -<k> for replica k:
# embedding, embedding-2, embedding-m2, embedding-m2-2. Each process has its own pid, port and log file.
base_name() { echo "${1%%-*}"; }
models_of() {  # the worker's models, one a line (none when TORCHGATE_<WORKER>_MODELS is unset)
  local var="TORCHGATE_${1^^}_MODELS"
  tr ',' '\n' <<<"${!var:-}" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//' | grep -v '^$' || true
}
model_count() {
  local count
  count=$(models_of "$1" | wc -l)
  echo $((count > 0 ? count : 1))
}
replica_count() {
  local var="TORCHGATE_${1^^}_REPLICAS"
  local count=${!var:-1}
  if ! [[ $count =~ ^[1-9][0-9]*$ ]]; then
    echo "$var must be a whole number >= 1, not '$count'" >&2
    return 1
  fi
  echo "$count"
}
replicas() {  # worker, model number (default 1): the names of that model's processes
  local count k pool=$1
  count=$(replica_count "$1") || return 1
  if ((${2:-1} > 1)); then pool="$1-m$2"; fi
  echo "$pool"
  for ((k = 2; k <= count; k++)); do echo "$pool-$k"; done
}
instances() {  # a worker's processes that have a pid file (what stop.sh and health.sh look at)
  echo "$1"
  local pid_file
  for pid_file in "$RUN_DIR/$1"-*.pid; do
    [ -e "$pid_file" ] && basename "$pid_file" .pid
  done
}
model_number() { if [[ $1 =~ -m([0-9]+) ]]; then echo "${BASH_REMATCH[1]}"; else echo 1; fi; }
replica_number() { if [[ $1 =~ -([0-9]+)$ ]]; then echo "${BASH_REMATCH[1]}"; else echo 1; fi; }
model_of() {  # process name: the model it serves when TORCHGATE_<WORKER>_MODELS names them, else nothing
  models_of "$(base_name "$1")" | sed -n "$(model_number "$1")p"
}

instance_env() {  # process name: VAR=value lines for that process only (its model; ports off the first one's)
  local base j k model
  base=$(base_name "$1")
  j=$(model_number "$1")
  k=$(replica_number "$1")
  model=$(model_of "$1")
  if [ -n "$model" ]; then echo "TORCHGATE_${base^^}_MODEL=$model"; fi
  ((j == 1 && k == 1)) && return
  local metrics_var="TORCHGATE_${base^^}_METRICS_PORT"
  local metrics=${!metrics_var:-${DEFAULT_METRICS_PORT[$base]}}
  echo "TORCHGATE_${base^^}_PORT=0"
  # Prometheus' server has no port 0 (0 switches it off): model j's replica k takes the first process's
  # metrics port + 100 (j - 1) + 10 (k - 1).
  if ((metrics)); then echo "TORCHGATE_${base^^}_METRICS_PORT=$((metrics + 100 * (j - 1) + 10 * (k - 1)))"; fi
}

# A started service writes the port it bound to $RUN_DIR/<name>.port (port 0 picks a free one).
port_file() { echo "$RUN_DIR/$1.port"; }
worker_port() {
  local base
  base=$(base_name "$1")
  local var="TORCHGATE_${base^^}_PORT"
  if [ -s "$(port_file "$1")" ]; then cat "$(port_file "$1")"; else echo "${!var:-${DEFAULT_PORT[$base]}}"; fi
}
worker_host() {
  local var
  var="TORCHGATE_$(base_name "$1" | tr '[:lower:]' '[:upper:]')_HOST"
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
  "$PYTHON" -m torchgate.health_probe "$(worker_host "$1"):$(worker_port "$1")" "${SERVICE[$(base_name "$1")]}" \
    --timeout 2 \
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
