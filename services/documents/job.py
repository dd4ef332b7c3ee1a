"""What a conversion child is asked: picklable, and importable without Docling (the worker process never
imports it)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    content: bytes
    format: str
    filename: str
    max_pages: int
    max_chunks: int
    # Chunking: the served tokenizer and the bounds; None: convert only.
    tokenizer_json: str | None = None
    max_tokens: int = 0
    overlap: int = 0
    max_export_bytes: int = 64 * 1024 * 1024
