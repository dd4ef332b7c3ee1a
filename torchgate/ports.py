"""Bound ports announced in a file, so whoever started a server on port 0 learns the port without a race."""

import os
from pathlib import Path


def announce_port(path: str, port: int) -> None:
    """Write `port` to `path` atomically: a reader sees no file or the whole number, never a partial one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    partial.write_text(f"{port}\n")
    partial.replace(target)
