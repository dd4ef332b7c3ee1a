"""Reduced precision on CPU: bf16 where the CPU computes it natively, kept only if it agrees with fp32.

On a CPU with AVX512-BF16 or AMX, a BERT encoder under `torch.autocast("cpu", dtype=torch.bfloat16)` runs
about 2.3x faster than in fp32 with embeddings at cosine >= 0.9999 (README, Benchmarks). Autocast keeps the
weights in fp32 and runs the matrix products in bf16 (layer norms and softmax stay fp32), so it is both the
more accurate reduced-precision mode and free to switch off: the start-up self-check runs a fixed sample in
fp32 first, then in bf16, and keeps bf16 only when the two agree within the task's tolerance.
"""

import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# Fixed texts of the lengths traffic has (a few words to a paragraph); the self-check runs them both ways.
SELF_CHECK_TEXTS = [
    "What is DNS?",
    "The cat sat on the mat while the rain fell softly on the old tin roof.",
    "Write a Python function that parses an ISO 8601 timestamp and returns the number of seconds since "
    "the Unix epoch, handling time zones and fractional seconds correctly.",
    "Quarterly revenue grew by twelve percent, driven by the new subscription tier, while operating costs "
    "stayed flat; the board approved a share buyback and asked management to expand into two new regions "
    "next year, pending a review of the supply chain and the hiring plan for the engineering teams.",
]


def cpu_bf16_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The native-bf16 instruction sets this CPU reports (empty where none, or where cpuinfo is unreadable)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [flag for flag in NATIVE_BF16_FLAGS if flag in flags]


@dataclass
class Precision:
    """How a model computes: its weights' dtype, an optional autocast compute dtype, and why."""

    weights: Any                 # torch dtype the weights are loaded in
    autocast: Any = None         # torch dtype matrix products run in (CPU bf16), or None
    reason: str = ""

    @property
    def name(self) -> str:
        """The dtype the model effectively computes in, as Info reports it."""
        return str(self.autocast or self.weights).removeprefix("torch.")

    def context(self):
        """Wrap a forward pass: bf16 autocast when chosen, else nothing."""
        if self.autocast is None:
            return nullcontext()
        import torch

        return torch.autocast("cpu", dtype=self.autocast)


def cosine_agreement(reference: np.ndarray, reduced: np.ndarray, minimum: float = 0.999) -> tuple[bool, str]:
    """Embeddings agree when every row's cosine to its fp32 row is at least `minimum`."""
    cosines = (reference * reduced).sum(1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(reduced, axis=1))
    worst = float(cosines.min())
    return worst >= minimum, f"min cosine {worst:.5f} vs fp32 (needs >= {minimum})"


def score_agreement(reference: np.ndarray, reduced: np.ndarray, tolerance: float = 0.02) -> tuple[bool, str]:
    """Scores in [0, 1] (activated relevance, class probabilities) agree within `tolerance` absolute."""
    worst = float(np.abs(reference - reduced).max())
    return worst <= tolerance, f"max score difference {worst:.4f} vs fp32 (needs <= {tolerance})"


def settle(precision: Precision, run_sample: Callable[[], np.ndarray],
           agreement: Callable[[np.ndarray, np.ndarray], tuple[bool, str]], model_id: str) -> Precision:
    """For a bf16 candidate: keep bf16 if the sample agrees with fp32, else fall back to fp32 and say why.

    `run_sample` runs the fixed sample under the adapter's current `precision.context()`.
    """
    if precision.autocast is None:
        return precision
    chosen = precision.autocast
    precision.autocast = None
    reference = run_sample()
    precision.autocast = chosen
    try:
        agrees, detail = agreement(reference, run_sample())
    except Exception as error:  # noqa: BLE001 - any bf16 failure means fp32, never a dead worker
        agrees, detail = False, f"bf16 failed: {type(error).__name__}: {error}"
    if agrees:
        precision.reason = f"{precision.reason}; self-check passed: {detail}"
        log.info("computing in bf16", extra={"model": model_id, "reason": precision.reason})
    else:
        precision.autocast = None
        precision.reason = f"{precision.reason}, but the self-check failed ({detail}): fp32"
        log.warning("bf16 self-check failed; computing in fp32", extra={"model": model_id, "detail": detail})
    return precision
