"""The mesh as users run it: scripts/start.sh on free loopback ports, scripts/stop.sh afterwards."""

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Mesh:
    env: dict[str, str]
    run_dir: Path
    ports: dict[str, int]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def script(self, name: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(ROOT / "scripts" / name)], env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def pid(self, service: str) -> int:
        return int((self.run_dir / f"{service}.pid").read_text())


@contextmanager
def running_mesh(run_dir: Path, **extra_env: str) -> Iterator[Mesh]:
    """The whole mesh started by scripts/start.sh; stop.sh runs whatever happened, a failed start included."""
    ports = {name: free_port() for name in ("gpu", "embedding", "reranking", "classifier", "gateway")}
    env = {
        **os.environ,
        "TORCHGATE_RUN_DIR": str(run_dir),
        "TORCHGATE_PYTHON": sys.executable,
        "TORCHGATE_GPU_METRICS_PORT": "0",
        "TORCHGATE_EMBEDDING_METRICS_PORT": "0",
        "TORCHGATE_RERANKING_METRICS_PORT": "0",
        "TORCHGATE_CLASSIFIER_METRICS_PORT": "0",
        "TORCHGATE_LOG_FORMAT": "text",
        # The suite checks CPU behaviour; a GPU machine would otherwise pick CUDA and fp16.
        "TORCHGATE_EMBEDDING_DEVICE": "cpu",
        "TORCHGATE_RERANKING_DEVICE": "cpu",
        "TORCHGATE_CLASSIFIER_DEVICE": "cpu",
        **{f"TORCHGATE_{name.upper()}_PORT": str(port) for name, port in ports.items()},
        **extra_env,
    }
    mesh = Mesh(env, run_dir, ports)
    try:
        started = mesh.script("start.sh")
        assert started.returncode == 0, started.stdout + started.stderr
        yield mesh
    finally:
        mesh.script("stop.sh", timeout=60)


@pytest.fixture
def mesh(tmp_path):
    with running_mesh(tmp_path / "run") as running:
        yield running
