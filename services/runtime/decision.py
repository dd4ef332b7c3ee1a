"""The start-up self-check's decision, kept on disk so that a restart on the same machine, model and settings
reads it instead of measuring again.

The self-check (precision.py, packing.py, backend.py) times fp32 against bf16 and torch against OpenVINO's
candidates, and most of a worker's start-up went into it. Its outcome depends only on what the key holds: the
model's files, the adapter, the versions of everything that computes (torch, transformers, OpenVINO, Torchgate),
the CPU's model and flags, the stream and thread layout, and the worker's precision and backend settings. A
change in any of them, or RECHECK=true, measures again. A decision that cannot be restored (a damaged file, a
conversion that fails now) is discarded and measured again too.
"""

import hashlib
import json
import logging
import os
import platform
import tempfile
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from services.runtime.fingerprint import feed_files
from torchgate import __version__

log = logging.getLogger(__name__)

# The packages whose versions change what the self-check measures.
COMPUTING_PACKAGES = ("torch", "transformers", "sentence-transformers", "openvino", "nncf")
# Bumped when the stored fields change meaning.
FORMAT = 1


@dataclass
class Decision:
    """What the self-check chose, and the reasons it gave then."""

    autocast: str            # the compute dtype under autocast ("bfloat16"), or "" for none
    precision_reason: str
    forward: str             # "traced" or "eager": whether the packed encoder ran as a traced graph
    backend: str             # "torch" or "openvino"
    backend_dtype: str       # OpenVINO's compute dtype as Info reports it ("" on torch)
    openvino_precision: str  # the OpenVINO candidate: its inference precision ("bf16", "f32")
    int8_weights: bool
    backend_reason: str


def cpu_identity(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name and flags (what decides bf16's and OpenVINO's speed), else the platform's name."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    fields = {}
    for line in lines:
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    return f"{fields.get('model name', '')}|{fields.get('flags', '')}"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def decision_key(model_path: Path, role: str, layout: tuple[int, int], settings: dict[str, object],
                 cpu: str | None = None) -> str:
    """The key a decision is stored under: everything its outcome depends on (module docstring)."""
    digest = hashlib.sha256()
    parts = {"format": FORMAT, "torchgate": __version__, "role": role, "layout": list(layout),
             "cpu": cpu if cpu is not None else cpu_identity(), "cores": len(os.sched_getaffinity(0)),
             "packages": {package: _version(package) for package in COMPUTING_PACKAGES}, "settings": settings}
    digest.update(json.dumps(parts, sort_keys=True).encode())
    feed_files(digest, model_path)
    return digest.hexdigest()[:32]


def load_decision(directory: Path, key: str) -> Decision | None:
    path = directory / f"{key}.json"
    try:
        return Decision(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as error:
        log.warning("cached self-check decision unreadable; measuring again", extra={"path": str(path),
                                                                                       "error": str(error)})
        return None


def save_decision(directory: Path, key: str, decision: Decision) -> None:
    """Write atomically (another worker of the machine may read it at the same moment); unwritable: not kept."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".tmp", delete=False) as staging:
            json.dump(asdict(decision), staging)
        Path(staging.name).replace(directory / f"{key}.json")
    except OSError as error:
        log.warning("self-check decision not cached", extra={"directory": str(directory), "error": str(error)})
