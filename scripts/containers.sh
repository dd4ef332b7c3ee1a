# Sourced by images.sh and by start.sh, stop.sh and health.sh with --compose: this machine's container engine,
# its compose tool and the images the compose file and the Kubernetes manifests name.
# shellcheck shell=bash
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
GATEWAY_IMAGE=torchgate-gateway:$VERSION
WORKER_IMAGE=torchgate-worker:$VERSION
COMPOSE_PROJECT=torchgate

has_nvidia_gpu() { command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; }

can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

apt_install() {  # Debian packages, quietly; one line naming them when that fails
  echo "installing $* (apt-get)" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } >/dev/null 2>&1 \
    || { echo "cannot install $* with apt-get" >&2; return 1; }
}

# ENGINE (docker or podman) and ENGINE_CMD: TORCHGATE_CONTAINER_ENGINE, else a Docker that answers, else Podman,
# installed when neither is here and this machine allows it.
find_engine() {
  ENGINE=${TORCHGATE_CONTAINER_ENGINE:-}
  if [ -z "$ENGINE" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
      ENGINE=docker
    elif command -v podman >/dev/null; then
      ENGINE=podman
    elif can_install; then
      apt_install podman runc || return 1
      ENGINE=podman
    else
      echo "no container engine: install Docker or Podman" >&2
      return 1
    fi
  fi
  ENGINE_CMD=("$ENGINE")
  # crun refuses a host with cgroup v1 controllers mounted beside v2 ("hybrid mode"); runc runs there.
  if [ "$ENGINE" = podman ] && [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
    command -v runc >/dev/null || { can_install && apt_install runc; } || return 1
    ENGINE_CMD+=(--runtime runc)
  fi
}

# COMPOSE: the engine's compose tool with the project's files; the GPU override only where a GPU is present.
find_compose() {
  find_engine || return 1
  local files=(-f ops/docker/docker-compose.yml)
  if has_nvidia_gpu; then files+=(-f ops/docker/docker-compose.gpu.yml); fi
  if [ "$ENGINE" = docker ]; then
    if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
  else
    local tool=.venv/bin/podman-compose
    # podman-compose is pinned in the dev set: `make install` brings it, with the venv the probes run in.
    if ! [ -x "$tool" ] && ! command -v podman-compose >/dev/null; then make -s install >&2 || return 1; fi
    [ -x "$tool" ] || tool=$(command -v podman-compose)
    COMPOSE=("$tool" --podman-args "${ENGINE_CMD[*]:1}")
  fi
  COMPOSE+=(-p "$COMPOSE_PROJECT" "${files[@]}")
}
