"""A real redis-server (Debian's package) on a free loopback port, started as a user would start it."""

import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from tests.network import released_port


class RedisServer:
    def __init__(self, password: str = "", certs: Path | None = None):
        """`certs`: a folder of scripts/certs.sh's files; the server then speaks TLS only."""
        self.password = password
        self.certs = certs
        self.port = released_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        scheme, query = ("rediss", f"?ssl_ca_certs={self.certs / 'ca.crt'}") if self.certs else ("redis", "")
        return f"{scheme}://{':' + self.password + '@' if self.password else ''}127.0.0.1:{self.port}/0{query}"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def start(self) -> None:
        """Start on this server's port; a port taken meanwhile (released_port can race) is traded for another."""
        for _ in range(5):
            if self._started():
                return
            self.port = released_port()
        raise RuntimeError("redis-server did not start")

    def _started(self) -> bool:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no"] + (["--requirepass", self.password] if self.password else [])
        if self.certs:
            command[1:3] = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file",
                            str(self.certs / "server.crt"), "--tls-key-file", str(self.certs / "server.key"),
                            "--tls-ca-cert-file", str(self.certs / "ca.crt"), "--tls-auth-clients", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                if self.client().info("server")["process_id"] == self.process.pid:
                    return True
            except redis.RedisError:
                time.sleep(0.02)
        if self.process.poll() is None:
            self.kill()
        return False

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@contextmanager
def redis_server(password: str = "", certs: Path | None = None):
    """A running redis-server, killed at the end; skips the test where Debian's redis-server is missing."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; make test installs it)")
    server = RedisServer(password, certs)
    server.start()
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.kill()
