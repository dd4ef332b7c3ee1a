"""The identity of what a worker computes, published in `Info.fingerprint`: equal fingerprints, equal results.

It covers every file of the model's directory (weights, configuration, tokenizer), the files and settings an adapter
names besides (a classifier's example file, its zero-shot method), the precision, backend and device kind the worker
chose, its prompts, and the Torchgate version (whose code turns model outputs into results). A cache keyed by it
never serves a result of another model, another example file or another precision.
"""

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from torchgate import __version__

if TYPE_CHECKING:
    from services.runtime.adapter import ModelDescription

_CHUNK = 1 << 20


def feed_files(digest, root: Path, extra: list[Path] = ()) -> None:
    """Feed `digest` every file of `root` (a directory, or one file) and the `extra` files: names and bytes."""
    files = sorted(path for path in root.rglob("*") if path.is_file()) if root.is_dir() else [root] * root.is_file()
    for path in [*files, *extra]:
        digest.update(str(path.relative_to(root) if path.is_relative_to(root) else path.name).encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)


def fingerprint(model: "ModelDescription") -> str:
    """sha256 (hex) over the model's files and everything else that changes its results."""
    digest = hashlib.sha256()
    for part in (__version__, model.model_id, model.dtype, model.backend, model.device.partition(":")[0],
                 *sorted(f"{name}={prompt}" for name, prompt in model.prompts.items()), *model.result_parts):
        digest.update(part.encode() + b"\0")
    feed_files(digest, Path(model.model_path), [Path(name) for name in model.result_files])
    return digest.hexdigest()
