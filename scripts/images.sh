#!/usr/bin/env bash
# Build the gateway and worker images with this machine's engine (`make images`).
# Usage: scripts/images.sh [--variant cpu|cuda] [--base auto|public|local|IMAGE]
#   --variant  the worker's torch: cuda where an NVIDIA GPU is present, else cpu (TORCHGATE_IMAGE_VARIANT)
#   --base     auto (default): the public python:3.11-slim when it is here or can be pulled, else `local`;
#              local: a Debian base built here with mmdebstrap from Debian's packages, for machines that reach no
#              image registry; or any image with python3 and its venv module (TORCHGATE_IMAGE_BASE)
# Podman builds see this machine's pip configuration (its files and the certificates, wheel folders and indexes
# they name) mounted read-only into the build stage, so pip inside a build reaches what pip here reaches; the
# final images hold none of it.
set -euo pipefail
source "$(dirname "$0")/containers.sh"

PUBLIC_BASE=python:3.11-slim
LOCAL_BASE=torchgate-base:bookworm
variant=${TORCHGATE_IMAGE_VARIANT:-}
base=${TORCHGATE_IMAGE_BASE:-auto}
while (($#)); do
  case $1 in
    --variant) variant=$2; shift 2 ;;
    --base) base=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$variant" ]; then
  if has_nvidia_gpu; then variant=cuda; else variant=cpu; fi
fi
case $variant in cpu|cuda) ;; *) echo "--variant must be cpu or cuda, not '$variant'" >&2; exit 2 ;; esac
find_engine

LOG_DIR=${TORCHGATE_RUN_DIR:-.run}/images
mkdir -p "$LOG_DIR"

image_present() { "${ENGINE_CMD[@]}" image inspect "$1" >/dev/null 2>&1; }

build_local_base() {
  image_present "$LOCAL_BASE" && return
  command -v mmdebstrap >/dev/null || { can_install && apt_install mmdebstrap; } \
    || { echo "the local base needs mmdebstrap (Debian package)" >&2; return 1; }
  local rootfs="$LOG_DIR/base.tar"
  echo "building the local base $LOCAL_BASE (Debian bookworm, python3)"
  local excludes=()
  for path in /usr/share/doc /usr/share/man /usr/share/info /usr/share/locale /usr/lib/x86_64-linux-gnu/gconv; do
    excludes+=(--dpkgopt="path-exclude=$path/*")
  done
  # merged-usr hook: bookworm's usrmerge package would bring perl along (50 MB).
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --aptopt='APT::Install-Recommends "false"' "${excludes[@]}" bookworm "$rootfs" >"$LOG_DIR/base.log" 2>&1 \
    || { echo "mmdebstrap could not build the base: $(grep -m1 -E '^E:' "$LOG_DIR/base.log" || tail -n1 "$LOG_DIR/base.log")" >&2
         return 1; }
  "${ENGINE_CMD[@]}" import --change 'CMD ["python3"]' "$rootfs" "$LOCAL_BASE" >/dev/null 2>&1
  rm -f "$rootfs"
}

case $base in
  auto)
    if image_present "$PUBLIC_BASE" || "${ENGINE_CMD[@]}" pull -q "$PUBLIC_BASE" >/dev/null 2>&1; then
      base=$PUBLIC_BASE
    else
      echo "no image registry answers; building on a local base"
      build_local_base
      base=$LOCAL_BASE
    fi ;;
  public) base=$PUBLIC_BASE ;;
  local) build_local_base; base=$LOCAL_BASE ;;
esac

# The machine's pip configuration, for Podman's build stage: each config file and every existing path its values
# name (file:// indexes with the files beside them, find-links folders, the certificate bundle, a constraints file).
BUILD_MOUNTS=()
if [ "$ENGINE" = podman ]; then
  mapfile -t pip_paths < <(python3 - <<'PY'
import configparser, os
files = ["/etc/pip.conf", "/etc/xdg/pip/pip.conf", os.path.expanduser("~/.config/pip/pip.conf"),
         os.path.expanduser("~/.pip/pip.conf"), os.environ.get("PIP_CONFIG_FILE", "")]
paths = set()
for name in filter(os.path.isfile, files):
    paths.add(name)
    config = configparser.ConfigParser(interpolation=None)
    config.read(name)
    for section in config.sections():
        for value in config[section].values():
            for token in value.split():
                path = token.removeprefix("file://")
                if path.startswith("/") and os.path.exists(path):
                    path = os.path.realpath(path)
                    # A simple index's pages link to files beside it, not below it.
                    paths.add(os.path.dirname(path) if os.path.basename(path) == "simple" else path)
print("\n".join(sorted(paths)))
PY
)
  for path in "${pip_paths[@]}"; do BUILD_MOUNTS+=(-v "$path:$path:ro"); done
fi

# The CPU torch: PyTorch's CPU index, unless the pip configuration already finds a CPU build of the pinned torch.
torch_version=$(sed -n 's/^ *"torch==\(.*\)",$/\1/p' pyproject.toml)
torch_index=${TORCHGATE_TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}
for path in "${pip_paths[@]:-}"; do
  if compgen -G "$path/torch-$torch_version+cpu-*.whl" >/dev/null; then torch_index=""; fi
done

build() {  # name, dockerfile, engine build arguments...
  local name=$1 dockerfile=$2 started=$SECONDS
  shift 2
  echo "building $name on $base"
  if ! "${ENGINE_CMD[@]}" build "${BUILD_MOUNTS[@]}" -f "$dockerfile" --build-arg "BASE_IMAGE=$base" "$@" . \
      >"$LOG_DIR/$name.log" 2>&1; then
    local reason
    reason=$(grep -m1 -E '^(ERROR|Error|error):' "$LOG_DIR/$name.log" || tail -n1 "$LOG_DIR/$name.log")
    echo "building $name failed: $reason (full log: $LOG_DIR/$name.log)" >&2
    exit 1
  fi
  printf '%-24s built in %ss, %s\n' "$name" $((SECONDS - started)) \
    "$("${ENGINE_CMD[@]}" image inspect --format '{{.Size}}' "$name" | awk '{printf "%.0f MB", $1 / 1e6}')"
}

build "$GATEWAY_IMAGE" ops/docker/Dockerfile.gateway -t "$GATEWAY_IMAGE"
build "$WORKER_IMAGE" ops/docker/Dockerfile.worker --build-arg "VARIANT=$variant" \
  --build-arg "TORCH_INDEX_URL=$torch_index" -t "$WORKER_IMAGE" -t "$WORKER_IMAGE-$variant"
