"""Vector arithmetic that the embedding worker and the gateway's response cache must do bit for bit alike."""

import numpy as np


def shape_vectors(vectors: np.ndarray, dimension: int, normalize: bool) -> np.ndarray:
    """The first `dimension` components of each float32 row, scaled to unit length when `normalize`."""
    vectors = np.asarray(vectors, dtype=np.float32)[:, :dimension]
    if normalize:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    return np.ascontiguousarray(vectors, dtype="<f4")
