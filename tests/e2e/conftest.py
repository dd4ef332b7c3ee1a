"""The mesh as users run it: scripts/start.sh on free loopback ports, scripts/stop.sh afterwards."""

import os
import socket
import subprocess
import sys
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


@pytest.fixture
def mesh(tmp_path):
    ports = {name: free_port() for name in ("gpu", "embedding", "reranking", "classifier", "gateway")}
    env = {
        **os.environ,
        "TORCHGATE_RUN_DIR": str(tmp_path / "run"),
        "TORCHGATE_PYTHON": sys.executable,
        "TORCHGATE_GPU_PORT": str(ports["gpu"]),
        "TORCHGATE_GPU_METRICS_PORT": "0",
        "TORCHGATE_EMBEDDING_PORT": str(ports["embedding"]),
        "TORCHGATE_EMBEDDING_METRICS_PORT": "0",
        "TORCHGATE_RERANKING_PORT": str(ports["reranking"]),
        "TORCHGATE_RERANKING_METRICS_PORT": "0",
        "TORCHGATE_CLASSIFIER_PORT": str(ports["classifier"]),
        "TORCHGATE_CLASSIFIER_METRICS_PORT": "0",
        "TORCHGATE_GATEWAY_PORT": str(ports["gateway"]),
        "TORCHGATE_LOG_FORMAT": "text",
    }
    mesh = Mesh(env, tmp_path / "run", ports)
    started = mesh.script("start.sh")
    assert started.returncode == 0, started.stdout + started.stderr
    yield mesh
    mesh.script("stop.sh", timeout=60)
