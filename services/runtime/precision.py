"""Reduced precision on CPU: bf16 where the CPU computes it natively, kept only if it agrees with fp32 and
is faster than fp32 on this very machine.

The CPU flags say whether bf16 can be fast, not whether it is: issue #12 measured MiniLM under
`torch.autocast("cpu", dtype=torch.bfloat16)` at 2.3x fp32 on an AMD EPYC with AVX512-BF16, while an Intel
Xeon with the same flag (no AMX) ran the same packed batches at 0.6x fp32 (README, design notes). So the
start-up self-check runs a fixed batch in fp32, then in bf16, and keeps bf16 only when the results agree
within the task's tolerance and bf16 is clearly faster. Autocast keeps the weights in fp32 and runs the
matrix products in bf16 (layer norms and softmax stay fp32): the more accurate reduced-precision mode, and
free to switch off, which the self-check needs.
"""

import fcntl
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
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
    "ok",
    "def add(a, b):\n    return a + b  # TODO: overflow?",
    "Order #48213 shipped 2026-11-30 via UPS, 3 items, total $129.99 incl. VAT (20%).",
    "Où se trouve la gare la plus proche, s'il vous plaît ? Ich suche den Bahnhof.",
]
# A batch the size traffic forms, so that the timing compares the throughput the worker will get.
SELF_CHECK_BATCH = SELF_CHECK_TEXTS * 4
# bf16 must beat fp32 by this factor (time ratio) to be kept: a tie is not worth the lost precision.
REQUIRED_SPEEDUP = 1.1


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
    fp32_sample: Any = None      # the self-check batch's fp32 output, once a self-check computed it

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


def cosine_agreement(reference: np.ndarray, reduced: np.ndarray, minimum: float = 0.999,
                     share: float = 1.0) -> tuple[bool, str]:
    """Embeddings agree when every row's cosine to its fp32 row is within `share` of the tolerance (1 - minimum)."""
    needed = 1 - (1 - minimum) * share
    cosines = (reference * reduced).sum(1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(reduced, axis=1))
    worst = float(cosines.min())
    return worst >= needed, f"min cosine {worst:.5f} vs fp32 (needs >= {needed:.5g})"


def score_agreement(reference: np.ndarray, reduced: np.ndarray, tolerance: float = 0.02,
                    share: float = 1.0) -> tuple[bool, str]:
    """Scores in [0, 1] (activated relevance, class probabilities) agree within `share` of `tolerance` absolute."""
    needed = tolerance * share
    worst = float(np.abs(reference - reduced).max())
    return worst <= needed, f"max score difference {worst:.4f} vs fp32 (needs <= {needed:.4g})"


# One file for every worker on the machine (all share the temporary directory).
SELF_CHECK_LOCK = Path(tempfile.gettempdir()) / "torchgate-self-check.lock"
# A self-check waits at most this long for the others (a stopped process may hold the lock), then runs anyway.
SELF_CHECK_WAIT_S = 60.0


@contextmanager
def machine_to_itself(lock: Path = SELF_CHECK_LOCK, wait_s: float = SELF_CHECK_WAIT_S) -> Iterator[bool]:
    """Time self-checks one worker at a time on a machine: the workers of a mesh start together, and one worker's
    check run beside another's measured OpenVINO anywhere from 1.0x to 2.5x torch from one start to the next.
    Yields whether the lock was taken (not where the file cannot be opened, or after `wait_s`)."""
    try:
        handle = lock.open("a")
    except OSError:
        yield False
        return
    with handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    log.warning("another worker's self-check holds the machine; checking anyway",
                                extra={"lock": str(lock)})
                    yield False
                    return
                time.sleep(0.05)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def timed_in_turns(runs: list[Callable[[], np.ndarray]], rounds: int = 3) -> list[tuple[np.ndarray, float]]:
    """Each run's output and best time over `rounds` rounds in which the runs take turns (the caller warmed them
    up): a machine busy for part of the check, with another worker starting beside this one, slows every
    contender alike instead of whichever ran then."""
    outputs, best = [None] * len(runs), [float("inf")] * len(runs)
    for _ in range(rounds):
        for index, run in enumerate(runs):
            started = time.perf_counter()
            outputs[index] = run()
            best[index] = min(best[index], time.perf_counter() - started)
    return list(zip(outputs, best, strict=True))


def settle(precision: Precision, run_sample: Callable[[], np.ndarray],
           agreement: Callable[[np.ndarray, np.ndarray], tuple[bool, str]], model_id: str) -> Precision:
    """For a bf16 candidate: keep bf16 if the sample agrees with fp32 and runs faster, else use fp32; say why.

    `run_sample` runs the fixed batch under the adapter's current `precision.context()`.
    """
    if precision.autocast is None:
        return precision
    chosen = precision.autocast

    def run_in(autocast) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            precision.autocast = autocast
            return run_sample()
        return run

    fp32, bf16 = run_in(None), run_in(chosen)
    precision.fp32_sample = fp32()
    try:
        bf16()
        (reference, fp32_s), (reduced, bf16_s) = timed_in_turns([fp32, bf16])
        agrees, detail = agreement(reference, reduced)
    except Exception as error:  # noqa: BLE001 - any bf16 failure means fp32, never a dead worker
        agrees, detail, fp32_s, bf16_s = False, f"bf16 failed: {type(error).__name__}: {error}", 0.0, 1.0
    precision.autocast = chosen
    speedup = fp32_s / bf16_s
    if not agrees:
        precision.autocast = None
        precision.reason = f"{precision.reason}, but the self-check failed ({detail}): fp32"
        log.warning("bf16 self-check failed; computing in fp32", extra={"model": model_id, "detail": detail})
    elif speedup < REQUIRED_SPEEDUP:
        precision.autocast = None
        precision.reason = (f"{precision.reason}, but bf16 ran at {speedup:.2f}x the speed of fp32 here "
                            f"(needs >= {REQUIRED_SPEEDUP}x): fp32")
        log.info("bf16 is not faster here; computing in fp32", extra={"model": model_id, "speedup": speedup})
    else:
        precision.reason = f"{precision.reason}; self-check passed: {detail}, {speedup:.2f}x the speed of fp32"
        log.info("computing in bf16", extra={"model": model_id, "reason": precision.reason})
    return precision
