"""The mesh as users run it: scripts/start.sh on free loopback ports, scripts/stop.sh afterwards."""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


SERVICES = ("gpu", "embedding", "reranking", "classifier", "documents", "gateway")


@dataclass
class Mesh:
    env: dict[str, str]
    run_dir: Path
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def script(self, name: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(ROOT / "scripts" / name)], env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def pid(self, service: str) -> int:
        return int((self.run_dir / f"{service}.pid").read_text())


def mesh_env(run_dir: Path, **extra_env: str) -> dict[str, str]:
    """What start.sh needs to run a mesh of its own: every port 0, logs and pid files under `run_dir`."""
    return {
        **os.environ,
        "TORCHGATE_RUN_DIR": str(run_dir),
        "TORCHGATE_PYTHON": sys.executable,
        "TORCHGATE_GPU_METRICS_PORT": "0",
        "TORCHGATE_EMBEDDING_METRICS_PORT": "0",
        "TORCHGATE_RERANKING_METRICS_PORT": "0",
        "TORCHGATE_CLASSIFIER_METRICS_PORT": "0",
        "TORCHGATE_DOCUMENTS_METRICS_PORT": "0",
        "TORCHGATE_LOG_FORMAT": "text",
        # The suite checks CPU behaviour; a GPU machine would otherwise pick CUDA and fp16.
        "TORCHGATE_EMBEDDING_DEVICE": "cpu",
        "TORCHGATE_RERANKING_DEVICE": "cpu",
        "TORCHGATE_CLASSIFIER_DEVICE": "cpu",
        **{f"TORCHGATE_{name.upper()}_PORT": "0" for name in SERVICES},
        **extra_env,
    }


@contextmanager
def running_mesh(run_dir: Path, **extra_env: str) -> Iterator[Mesh]:
    """The whole mesh started by scripts/start.sh; stop.sh runs whatever happened, a failed start included.

    Every service binds port 0 and start.sh reads back the port it got ($RUN_DIR/<service>.port): no races.
    """
    env = mesh_env(run_dir, **extra_env)
    mesh = Mesh(env, run_dir)
    try:
        started = mesh.script("start.sh")
        assert started.returncode == 0, started.stdout + started.stderr
        mesh.ports = {name: int((run_dir / f"{name}.port").read_text()) for name in SERVICES}
        yield mesh
    finally:
        mesh.script("stop.sh", timeout=60)


@pytest.fixture
def mesh(tmp_path):
    with running_mesh(tmp_path / "run") as running:
        yield running
