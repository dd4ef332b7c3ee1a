"""Real worker and gateway processes for the fault tests, and a bounded closed-loop REST load."""

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from tests.e2e.conftest import ROOT
from torchgate.health_probe import check


class Service:
    """One process of ours, logging to a file, that a test can kill, pause and resume.

    It binds the port its env names (0: a free one) and writes the port it got to `port_file`.
    """

    def __init__(self, module: str, env: dict[str, str], log: Path, port_file: Path):
        self.log = log
        self.port_file = port_file
        port_file.unlink(missing_ok=True)
        # Its own process group, so stop() takes down anything it started too.
        self.process = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env={**os.environ, **env},
                                        stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)

    def bound_port(self, timeout: float = 60) -> int:
        """The port the service announced; fails (and stops it) if it exits or never binds."""
        give_up = time.monotonic() + timeout
        while not self.port_file.exists():
            if time.monotonic() > give_up or self.process.poll() is not None:
                self.stop()
                raise AssertionError(f"{self.log.stem} never bound its port; see {self.log}")
            time.sleep(0.05)
        return int(self.port_file.read_text())

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGCONT)
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def start_worker(log_dir: Path, port: int = 0, host: str = "127.0.0.1", env: dict[str, str] | None = None,
                           kind: str = "embedding", **settings: str) -> tuple[Service, int]:
    """A worker of `kind` (embedding by default) on `host`:`port` (0: a free one), and the port it bound;
    `env` adds variables."""
    name = f"{kind}-{next(_started)}"
    port_file = log_dir / f"{name}.port"
    prefix = f"TORCHGATE_{kind.upper()}_"
    env = {f"{prefix}HOST": host, f"{prefix}PORT": str(port), f"{prefix}PORT_FILE": str(port_file),
           f"{prefix}METRICS_PORT": "0", "TORCHGATE_LOG_FORMAT": "text", f"{prefix}GRACE_PERIOD_S": "10",
           f"{prefix}DEVICE": "cpu", **{f"{prefix}{k.upper()}": v for k, v in settings.items()}, **(env or {})}
    service = Service(f"services.{kind}", env, log_dir / f"{name}.log", port_file)
    return service, service.bound_port()


_started = itertools.count(1)


def wait_serving(*ports: int, host: str = "127.0.0.1", timeout: float = 180,
                 service: str = "torchgate.v1.EmbeddingService") -> None:
    give_up = time.monotonic() + timeout
    for port in ports:
        while check(f"{host}:{port}", service, timeout=1) != "SERVING":
            assert time.monotonic() < give_up, f"worker on {host}:{port} did not become SERVING"
            time.sleep(0.3)


def start_gateway(upstream_ports: list[int] | str, log_dir: Path, env: dict[str, str] | None = None,
                  **upstream: str) -> tuple[Service, str]:
    """A gateway whose embedding upstream is 127.0.0.1 on each of `upstream_ports`, or a gRPC target string."""
    port_file = log_dir / "gateway.port"
    addresses = (upstream_ports if isinstance(upstream_ports, str)
                 else ",".join(f"127.0.0.1:{port}" for port in upstream_ports))
    env = {"TORCHGATE_GATEWAY_PORT": "0", "TORCHGATE_GATEWAY_PORT_FILE": str(port_file),
           "TORCHGATE_LOG_FORMAT": "text", "TORCHGATE_GATEWAY_EMBEDDING__ADDRESSES": addresses,
           **{f"TORCHGATE_GATEWAY_EMBEDDING__{k.upper()}": v for k, v in upstream.items()}, **(env or {})}
    service = Service("gateway", env, log_dir / "gateway.log", port_file)
    url = f"http://127.0.0.1:{service.bound_port()}"
    give_up = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                return service, url
        except httpx.TransportError:
            pass
        if time.monotonic() > give_up or service.process.poll() is not None:
            service.stop()
            raise AssertionError(f"gateway did not start; see {service.log}")
        time.sleep(0.2)


@dataclass
class Answer:
    status: int          # HTTP status; 0 = no answer before the client gave up (a hang)
    started: float       # time.monotonic()
    elapsed: float
    retry_after: str | None


async def closed_loop(url: str, concurrency: int, seconds: float, deadline_s: float,
                      texts: list[str] | None = None) -> list[Answer]:
    """`concurrency` callers POST /v1/embeddings back to back for `seconds`; every call is recorded. The calls
    skip the response cache: these loads are about the path to the workers."""
    body = {"input": texts or ["the quick brown fox jumps over the lazy dog"]}
    headers = {"X-Request-Timeout": str(deadline_s), "Cache-Control": "no-cache"}
    answers: list[Answer] = []
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=256)
    async with httpx.AsyncClient(base_url=url, timeout=deadline_s + 5, limits=limits) as client:

        async def caller() -> None:
            while time.monotonic() < stop_at:
                started = time.monotonic()
                try:
                    reply = await client.post("/v1/embeddings", json=body, headers=headers)
                    status, retry_after = reply.status_code, reply.headers.get("Retry-After")
                except httpx.TimeoutException:
                    status, retry_after = 0, None
                answers.append(Answer(status, started, time.monotonic() - started, retry_after))
                if status != 200:
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
    return answers


def p99_ms(answers: list[Answer]) -> float:
    return float(np.percentile([a.elapsed * 1000 for a in answers], 99)) if answers else 0.0


def report(name: str, **numbers) -> None:
    """One line a test prints for the record (`pytest -s tests/e2e/test_faults.py` shows them)."""
    print(f"\nFAULTS {name}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))
