"""A real PostgreSQL server (Debian's package) in a fresh data directory on a free loopback port, started as an
operator would start one: initdb, then postgres. As root it runs as the `postgres` user, which PostgreSQL insists on."""

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.network import released_port


def _binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(versions[-1]).parent if versions else None


class PostgresServer:
    def __init__(self):
        self.bin = _binaries()
        if self.bin is None:
            pytest.skip("PostgreSQL is not installed (apt-get install postgresql; make test installs it)")
        self.directory = Path(tempfile.mkdtemp(prefix="torchgate-postgres-"))
        self.data = self.directory / "data"
        self.port = released_port()
        self.process: subprocess.Popen | None = None
        self._as = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.directory, account.pw_uid, account.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql://torchgate@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        subprocess.run([*self._as, str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "torchgate",
                        "--no-sync"], check=True, capture_output=True)
        self.process = subprocess.Popen(
            [*self._as, str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k",
             str(self.directory), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
            stdout=subprocess.DEVNULL, stderr=(self.directory / "postgres.log").open("wb"))
        give_up = time.monotonic() + 30
        while subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                             capture_output=True).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > give_up:
                raise RuntimeError(f"postgres did not start: {(self.directory / 'postgres.log').read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        shutil.rmtree(self.directory, ignore_errors=True)
