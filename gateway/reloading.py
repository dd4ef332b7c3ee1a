"""Configuration files the gateway reloads without a restart (the tenants file, the routing file, the client
certificate it presents to workers).

All of them reload on SIGHUP (one handler for the process: a loop holds one per signal) and each when it
changes on disk (polled, which also catches Kubernetes ConfigMap updates). A file that does not load keeps
the previous value and says why in one log line; at start it stops the gateway with the reason instead.
"""

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
POLL_S = 0.5


def _stamp(path: str) -> tuple | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


class ConfigFile(Generic[T]):
    """`value`: what `load(path)` made of the file last time it loaded."""

    def __init__(self, path: str, load: Callable[[str], T], what: str,
                 on_reload: Callable[[T], None] | None = None):
        self.path, self.load, self.what, self.on_reload = path, load, what, on_reload
        self.stamp = _stamp(path)
        try:
            self.value: T = load(path)
        except Exception as error:  # any reason the file does not load is the operator's to read
            raise SystemExit(f"{what} {path}: {_one_line(error)}") from None

    def reload(self) -> None:
        self.stamp = _stamp(self.path)
        try:
            self.value = self.load(self.path)
        except Exception as error:  # the previous value stays; the log line says why
            log.error("%s %s not reloaded, the previous one stays: %s", self.what, self.path, _one_line(error))
            return
        log.info("%s reloaded", self.what, extra={"path": self.path})
        if self.on_reload is not None:
            self.on_reload(self.value)

    def changed(self) -> bool:
        return _stamp(self.path) != self.stamp


def _one_line(error: Exception) -> str:
    return str(error).replace("\n", "; ")[:1000]


class Reloader:
    """Reloads its files on SIGHUP and when one changes; start() inside the serving loop."""

    def __init__(self, files: list[ConfigFile]):
        self.files = files
        self._watcher: asyncio.Task | None = None

    def reload_all(self) -> None:
        for file in self.files:
            file.reload()

    def start(self) -> None:
        if not self.files:
            return
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload_all)
        self._watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            for file in self.files:
                if file.changed():
                    file.reload()

    async def close(self) -> None:
        if self._watcher is None:
            return
        self._watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watcher
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
