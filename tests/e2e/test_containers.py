"""The containerized mesh as an operator runs it: `make images`' script builds both images with this machine's engine,
`scripts/start.sh --compose` starts them, the engine's own commands look at them, `scripts/stop.sh --compose` drains.

A second run reuses the engine's layer cache and the local base. No engine and no way to install one: skipped.
"""

import os
import shlex
import signal
import subprocess
import time

import httpx
import numpy as np
import pytest

from tests.e2e.conftest import ROOT
from tests.integration.conftest import grpcurl

# A cold build (torch, transformers) takes minutes on 2 cores; the tests after it take seconds each.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

# Host ports of their own, beside a developer's local mesh on the defaults.
PORTS = {"gateway": 18000, "gpu": 51051, "embedding": 51052, "reranking": 51053, "classifier": 51054,
         "documents": 51055}
SERVICES = {"gpu": "torchgate.v1.GpuService", "embedding": "torchgate.v1.EmbeddingService",
            "reranking": "torchgate.v1.RerankingService", "classifier": "torchgate.v1.ClassifierService",
            "documents": "torchgate.v1.DocumentService"}
ENV = {**os.environ, **{f"TORCHGATE_{name.upper()}_PORT": str(port) for name, port in PORTS.items()},
       "TORCHGATE_PYTHON": os.environ.get("TORCHGATE_PYTHON", str(ROOT / ".venv" / "bin" / "python"))}
URL = f"http://127.0.0.1:{PORTS['gateway']}"


def containers_sh(expression: str) -> str:
    """Evaluate `expression` after scripts/containers.sh has found the engine."""
    done = subprocess.run(["bash", "-c", f"source scripts/containers.sh && {expression}"], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.skip(f"no container engine on this machine: {done.stderr.strip()}")
    return done.stdout.strip()


@pytest.fixture(scope="module")
def reference_model():
    """The bundled MiniLM loaded in-process by sentence-transformers: what the containers must reproduce."""
    from sentence_transformers import SentenceTransformer

    from services.runtime.models import resolve_model

    return SentenceTransformer(str(resolve_model("sentence-transformers/all-MiniLM-L6-v2")), device="cpu")


@pytest.fixture(scope="module")
def engine() -> list[str]:
    return shlex.split(containers_sh('find_engine && echo "${ENGINE_CMD[@]}"'))


@pytest.fixture(scope="module")
def images(engine) -> dict[str, str]:
    built = subprocess.run(["scripts/images.sh"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=1500)
    assert built.returncode == 0, built.stdout + built.stderr
    gateway, worker = containers_sh('echo "$GATEWAY_IMAGE $WORKER_IMAGE"').split()
    return {"gateway": gateway, "worker": worker}


def script(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "scripts" / args[0]), *args[1:]], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def compose_mesh(images):
    try:
        started = script("start.sh", "--compose")
        assert started.returncode == 0, started.stdout + started.stderr
        yield started
    finally:
        script("stop.sh", "--compose", timeout=120)


def inspect(engine: list[str], container: str, template: str) -> str:
    return subprocess.run([*engine, "inspect", "--format", template, container], capture_output=True, text=True,
                          check=True, timeout=30).stdout.strip()


def mesh_containers(engine: list[str]) -> dict[str, str]:
    """Compose service name -> container id, from the engine's labels."""
    listed = subprocess.run([*engine, "ps", "-q", "--filter", "label=com.docker.compose.project=torchgate"],
                            capture_output=True, text=True, check=True, timeout=30).stdout.split()
    return {inspect(engine, cid, '{{index .Config.Labels "com.docker.compose.service"}}'): cid for cid in listed}


def run_image(engine: list[str], image: str, *command: str, env: dict[str, str] | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess:
    flags = [f"--env={name}={value}" for name, value in (env or {}).items()]
    return subprocess.run([*engine, "run", "--rm", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096",
                           "--read-only", "--tmpfs", "/tmp", *flags, image, *command],
                          capture_output=True, text=True, timeout=timeout)


def embed(client: httpx.Client, texts: list[str]) -> np.ndarray:
    response = client.post("/v1/embeddings", json={"input": texts})
    assert response.status_code == 200, response.text
    return np.array([item["embedding"] for item in response.json()["data"]], dtype=np.float32)


def test_the_containerized_mesh_serves_what_the_model_computes_in_process(compose_mesh, reference_model):
    for name in (*SERVICES, "gateway"):
        assert f"{name} " in compose_mesh.stdout
    texts = ["a container runs the model", "the gateway speaks REST", "ünïcödé and emoji 🚀"]
    with httpx.Client(base_url=URL, timeout=60) as client:
        served = embed(client, texts)
    expected = reference_model.encode(texts, normalize_embeddings=True)
    cosines = np.sum(served * expected, axis=1) / np.linalg.norm(served, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosines.min() >= 0.9999, cosines

    healthy = script("health.sh", "--compose")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert healthy.stdout.count("SERVING") == len(SERVICES) and "ready" in healthy.stdout


def test_workers_answer_grpcurl_on_their_published_ports(compose_mesh):
    for name, service in SERVICES.items():
        address = f"127.0.0.1:{PORTS[name]}"
        listed = subprocess.run([grpcurl(), "-plaintext", address, "list"], capture_output=True, text=True,
                                timeout=30)
        assert service in listed.stdout and "grpc.health.v1.Health" in listed.stdout, listed.stderr
        health = subprocess.run([grpcurl(), "-plaintext", "-d", f'{{"service": "{service}"}}', address,
                                 "grpc.health.v1.Health/Check"], capture_output=True, text=True, timeout=30)
        assert '"status": "SERVING"' in health.stdout, health.stdout + health.stderr


def test_every_container_is_unprivileged_with_a_read_only_root(compose_mesh, engine):
    containers = mesh_containers(engine)
    assert set(containers) == {*SERVICES, "gateway"}
    for name, cid in containers.items():
        user = inspect(engine, cid, "{{.Config.User}}")
        assert user not in ("", "0", "root") and not user.startswith("0:"), (name, user)
        assert inspect(engine, cid, "{{.HostConfig.ReadonlyRootfs}}") == "true", name
        assert inspect(engine, cid, "{{.HostConfig.RestartPolicy.Name}}") == "unless-stopped", name
        capabilities = subprocess.run([*engine, "exec", cid, "sh", "-c", "grep CapEff /proc/1/status"],
                                      capture_output=True, text=True, timeout=30).stdout
        assert capabilities.split()[-1].strip("0") == "", (name, capabilities)


def test_the_images_hold_no_torch_in_the_gateway_and_nothing_of_the_build_machine(images, engine):
    no_torch = run_image(engine, images["gateway"], "python", "-c", "import torch")
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    for image in images.values():
        leftovers = run_image(engine, image, "sh", "-c",
                              "ls -d /etc/pip.conf /etc/xdg/pip /root/.config/pip /opt/wheels /opt/pypi 2>/dev/null;"
                              " env | grep -i '^pip_' ; command -v pip; true")
        assert leftovers.returncode == 0 and leftovers.stdout.strip() == "", (image, leftovers.stdout)


def test_a_worker_without_its_model_or_without_a_required_gpu_exits_with_one_line(images, engine):
    missing = run_image(engine, images["worker"], "python", "-m", "services.embedding",
                        env={"TORCHGATE_EMBEDDING_MODEL": "acme/absent-model", "TORCHGATE_EMBEDDING_METRICS_PORT": "0"})
    assert missing.returncode != 0
    assert "acme/absent-model" in missing.stderr.strip().splitlines()[-1]
    if subprocess.run(["sh", "-c", "nvidia-smi -L"], capture_output=True).returncode == 0:
        return
    started = time.monotonic()
    no_gpu = run_image(engine, images["worker"], "python", "-m", "services.embedding",
                       env={"TORCHGATE_REQUIRE_GPU": "1"})
    assert no_gpu.returncode != 0 and "no CUDA device" in no_gpu.stderr.strip().splitlines()[-1]
    assert time.monotonic() - started < 60


def test_a_killed_embedding_container_is_a_503_then_restarts_and_serves(compose_mesh, engine):
    container = mesh_containers(engine)["embedding"]
    os.kill(int(inspect(engine, container, "{{.State.Pid}}")), signal.SIGKILL)
    killed = time.monotonic()
    with httpx.Client(base_url=URL, timeout=10) as client:
        while True:
            down = client.post("/v1/embeddings", json={"input": "anyone there?"})
            if down.status_code == 503 or time.monotonic() - killed > 2:
                break
        assert down.status_code == 503 and time.monotonic() - killed <= 2, down.text
        assert int(down.headers["retry-after"]) >= 1
        deadline = time.monotonic() + 120
        while client.post("/v1/embeddings", json={"input": "back?"}).status_code != 200:
            assert time.monotonic() < deadline, "the restart policy did not bring the embedding worker back"
            time.sleep(0.5)
    assert int(inspect(engine, container, "{{.RestartCount}}")) >= 1


def test_stop_drains_every_container_to_exit_0(compose_mesh, engine):
    stopped = script("stop.sh", "--compose", timeout=120)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    for name in (*SERVICES, "gateway"):
        assert f"{name} stopped" in stopped.stdout, stopped.stdout
    assert mesh_containers(engine) == {}
