"""Request validation shared by the model workers; every message says what to fix."""

from services.runtime.adapter import ModelDescription
from services.runtime.errors import InvalidInput, NotFound


def validate_texts(texts: list[str], max_items: int, max_chars: int, field: str = "texts") -> None:
    """Non-empty list of non-blank strings within the count and length limits."""
    if not texts:
        raise InvalidInput(f"{field} must contain at least one text")
    if len(texts) > max_items:
        raise InvalidInput(
            f"{field} has {len(texts)} items; at most {max_items} are allowed per request: split the request"
        )
    for index, text in enumerate(texts):
        validate_text(text, max_chars, f"{field}[{index}]")


def validate_text(text: str, max_chars: int, field: str) -> None:
    """One non-blank string within the length limit."""
    if not text.strip():
        raise InvalidInput(f"{field} is empty: send non-empty text")
    if len(text) > max_chars:
        raise InvalidInput(f"{field} has {len(text)} characters; the limit is {max_chars}: shorten it")


def validate_model_name(requested: str, model: ModelDescription) -> None:
    """An empty name means the served model; anything else must be one of its names (ModelDescription.names)."""
    if requested and requested not in model.names():
        shown = requested if len(requested) <= 80 else requested[:80] + "…"
        raise NotFound(f"model {shown!r} is not served here; this worker serves {model.model_id!r}")
