"""Cohere's embedding types from float32 vectors (numpy only, so the gateway stays torch-free).

Scaling, for the unit-normalized vectors the workers return (every component in [-1, 1]):
- int8: round(x * 127), clipped to [-128, 127]; dot products stay proportional to the float ones up to rounding;
- uint8: round((x + 1) * 127.5), clipped to [0, 255];
- ubinary: one bit per dimension, 1 where x > 0, packed 8 to a byte, most significant bit first (dimension / 8
  values in [0, 255]), as Cohere and sentence-transformers' `quantize_embeddings` do;
- binary: the same bytes minus 128 (values in [-128, 127]);
- base64: the float32 little-endian bytes of each vector, base64-encoded.
"""

import base64

import numpy as np

EMBEDDING_TYPES = ("float", "int8", "uint8", "binary", "ubinary", "base64")


def by_type(vectors: np.ndarray, embedding_type: str) -> list:
    """One JSON-ready list per vector, in `embedding_type`."""
    if embedding_type == "float":
        return list(vectors)
    if embedding_type == "int8":
        return np.clip(np.rint(vectors * 127), -128, 127).astype(np.int8).tolist()
    if embedding_type == "uint8":
        return np.clip(np.rint((vectors + 1) * 127.5), 0, 255).astype(np.uint8).tolist()
    if embedding_type == "ubinary":
        return _sign_bits(vectors).tolist()
    if embedding_type == "binary":
        return (_sign_bits(vectors).astype(np.int16) - 128).tolist()
    if embedding_type == "base64":
        return [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in vectors]
    raise ValueError(f"unknown embedding type {embedding_type!r}")


def _sign_bits(vectors: np.ndarray) -> np.ndarray:
    return np.packbits(vectors > 0, axis=-1)
