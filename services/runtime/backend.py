"""Which runtime computes a packed BERT encoder on CPU: torch (the traced graph) or OpenVINO, chosen per machine.

Issue #32 measured OpenVINO's CPU plugin at 1.2-1.5x torch on the same packed batches, but machines differ
(AMX, AVX512-BF16 alone, neither), so nothing is assumed: the start-up self-check converts the packed encoder
(dynamic rows and widths, the block-diagonal mask as an input, so packing is kept), compiles each candidate
(OpenVINO's bf16 where the CPU has native bf16, fp32; with int8 weights too when QUANTIZE=int8), runs the fixed
batch through the adapter's own forward with it, and keeps the fastest candidate that agrees with fp32 within
the task's tolerance and beats the torch choice by REQUIRED_SPEEDUP. INFERENCE_BACKEND=openvino keeps the fastest one
that agrees, whatever its speed, and fails the start where none does; INFERENCE_BACKEND=torch skips all of this.

The converted model is saved under CACHE_DIR keyed by the model's files, the encoder's role, the OpenVINO and
Torchgate versions, so a restart reads it instead of converting; an unwritable directory only costs that.
"""

import contextlib
import hashlib
import io
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.runtime.device import DeviceError
from services.runtime.fingerprint import feed_files
from services.runtime.precision import REQUIRED_SPEEDUP, timed_in_turns
from torchgate import __version__

log = logging.getLogger(__name__)

# A candidate must agree with fp32 within this share of the task's tolerance on the self-check batch: traffic
# brings other texts, and a lossy candidate (int8 weights on MiniLM: min cosine 0.9993 on the batch, 0.9987 on
# the embedding tests' texts) that only just passes the batch does not hold on them.
TOLERANCE_SHARE = 0.5
# Rounds in which torch and the candidates take turns on the self-check batch; each keeps its best time.
TIMING_ROUNDS = 5

# OpenVINO's names for the compute precisions, and the dtype names Info reports for them.
PRECISION_NAMES = {"bf16": "bfloat16", "f32": "float32"}


class BackendError(DeviceError):
    """INFERENCE_BACKEND=openvino cannot be honoured on this machine or model: the worker does not start."""


@dataclass(frozen=True)
class Candidate:
    """One way OpenVINO may compile the encoder."""

    precision: str       # OpenVINO inference precision: bf16 or f32
    int8_weights: bool

    @property
    def dtype(self) -> str:
        return ("int8+" if self.int8_weights else "") + PRECISION_NAMES[self.precision]


@dataclass
class Backend:
    """What computes the encoder, in which dtype, and why."""

    name: str
    reason: str
    dtype: str = ""  # the encoder's compute dtype when OpenVINO runs it; empty: torch's precision
    candidate: Candidate | None = None  # the OpenVINO compilation chosen


@dataclass(frozen=True)
class Request:
    """The worker's backend settings and the CPU layout a compiled model is sized for."""

    backend: str = "auto"
    quantize: str = "none"
    cache_dir: str = ""
    dtype: str = "auto"          # the worker's DTYPE setting
    native_bf16: bool = False    # the CPU computes bf16 natively (precision.cpu_bf16_flags)
    streams: int = 1
    threads_per_stream: int = 1


class OpenVinoEncoder:
    """A compiled OpenVINO encoder called like the traced graph: the packed encoder's inputs in, token states out.

    A compiled model serves several inferences at once (one per OpenVINO stream) but an infer request only one,
    so each device thread keeps its own request.
    """

    def __init__(self, compiled):
        self.compiled = compiled
        self._local = threading.local()

    def __call__(self, *inputs):
        import torch

        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return torch.from_numpy(request.infer([tensor.numpy() for tensor in inputs])[0])


def candidates(request: Request) -> list[Candidate]:
    """OpenVINO compilations to try, as DTYPE allows: `auto` bf16 (where the CPU has it natively) and fp32,
    `bfloat16` bf16, `float32` fp32; each with int8 weights too when QUANTIZE=int8."""
    dtype = request.dtype.strip().lower()
    if dtype in ("bfloat16", "bf16"):
        precisions = ["bf16"]
    elif dtype == "auto" and request.native_bf16:
        precisions = ["bf16", "f32"]
    else:
        precisions = ["f32"]
    weights = [False, True] if request.quantize == "int8" else [False]
    return [Candidate(p, w) for w in weights for p in precisions]


def model_key(model_path: Path, role: str) -> str:
    """What a converted encoder depends on: the model's files, the encoder's role, OpenVINO and Torchgate."""
    import openvino

    digest = hashlib.sha256(f"{role}\0{openvino.__version__}\0{__version__}\0".encode())
    feed_files(digest, model_path)
    return digest.hexdigest()[:32]


def cache_root(configured: str) -> Path:
    """CACHE_DIR, else $XDG_CACHE_HOME/torchgate/openvino (~/.cache/...)."""
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torchgate" / "openvino"


def _save(model, directory: Path, name: str) -> None:
    """Write `name`.xml/.bin into `directory` atomically (a temporary directory renamed into place)."""
    import openvino

    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=directory.parent))
    try:
        openvino.save_model(model, staging / f"{name}.xml", compress_to_fp16=False)
        if directory.exists():
            for file in staging.iterdir():
                file.replace(directory / file.name)
        else:
            staging.rename(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def converted(module, example: tuple, cache_dir: Path, key: str, int8_weights: bool) -> tuple[object, str]:
    """The encoder as an OpenVINO model (fp32 weights, or int8 weight-only compressed by NNCF), read from the
    disk cache when there, converted (and saved) otherwise; and where it came from."""
    import openvino

    name = "encoder-int8" if int8_weights else "encoder"
    directory = cache_dir / key
    path = directory / f"{name}.xml"
    core = openvino.Core()
    if path.is_file():
        try:
            return core.read_model(path), f"read from the cache {directory}"
        except Exception as error:  # noqa: BLE001 - a damaged cache entry is converted again
            log.warning("cached OpenVINO model unreadable; converting again", extra={"path": str(path),
                                                                                       "error": str(error)})
    if int8_weights:
        import nncf

        source = converted(module, example, cache_dir, key, False)[0]
        nncf.set_log_level(logging.WARNING)
        with contextlib.redirect_stdout(io.StringIO()):  # NNCF draws a progress bar on stdout
            model = nncf.compress_weights(source, mode=nncf.CompressWeightsMode.INT8_ASYM)
    else:
        rows, mask = openvino.PartialShape([-1, -1]), openvino.PartialShape([-1, 1, -1, -1])
        with warnings.catch_warnings():  # the converter traces, and tracing warns of every value it freezes
            warnings.simplefilter("ignore")
            model = openvino.convert_model(module, example_input=example, input=[rows, rows, mask, rows])
    try:
        _save(model, directory, name)
        origin = f"converted, cached in {directory}"
    except OSError as error:
        origin = f"converted, not cached ({error.strerror or error})"
    return model, origin


def compile_encoder(model, candidate: Candidate, request: Request) -> OpenVinoEncoder:
    """Compiled for the worker's layout: one OpenVINO stream per device stream, each with its threads. Threads are
    not pinned to cores: the workers of a mesh share the cores, and every worker's OpenVINO would pin its first
    stream to the same core (a self-check then measured OpenVINO at 0.5-1.7x torch from one start to the next)."""
    import openvino

    config = {"INFERENCE_PRECISION_HINT": candidate.precision, "NUM_STREAMS": str(request.streams),
              "INFERENCE_NUM_THREADS": str(request.streams * request.threads_per_stream),
              "ENABLE_CPU_PINNING": False}
    # OpenVINO keeps the compiled blob under CACHE_DIR, keyed by the model and this configuration: a restart loads
    # it (0.09 s here) instead of compiling (0.17 s). A directory it cannot use costs only that.
    compiled_cache = cache_root(request.cache_dir) / "compiled"
    try:
        compiled_cache.mkdir(parents=True, exist_ok=True)
        cached_config = {**config, "CACHE_DIR": str(compiled_cache)}
        return OpenVinoEncoder(openvino.Core().compile_model(model, "CPU", cached_config))
    except (OSError, RuntimeError) as error:
        log.warning("compiled OpenVINO model not cached", extra={"directory": str(compiled_cache), "error": str(error)})
    return OpenVinoEncoder(openvino.Core().compile_model(model, "CPU", config))


@dataclass
class Trial:
    """A candidate's run of the self-check batch: its best time, whether it agreed with fp32, and the detail."""

    candidate: Candidate
    encoder: OpenVinoEncoder
    seconds: float
    agrees: bool
    detail: str


def choose(request: Request, torch_seconds: float, trials: list[Trial]) -> tuple[Trial | None, str]:
    """The candidate to serve with (None: torch) and why; `trials` were timed on the same batch as torch."""
    summary = "; ".join(f"openvino {t.candidate.dtype}: {t.detail}, {torch_seconds / t.seconds:.2f}x torch"
                        if t.seconds else f"openvino {t.candidate.dtype}: {t.detail}" for t in trials)
    agreeing = sorted((t for t in trials if t.agrees), key=lambda t: t.seconds)
    if not agreeing:
        return None, f"no OpenVINO candidate agreed with fp32 ({summary})"
    best = agreeing[0]
    speedup = torch_seconds / best.seconds
    if request.backend == "auto" and speedup < REQUIRED_SPEEDUP:
        return None, f"OpenVINO was not {REQUIRED_SPEEDUP}x faster than torch here ({summary})"
    return best, summary


def settle_backend(request: Request, device: str, encoder, example: tuple, model_path: Path, role: str,
                   run_sample: Callable[[], np.ndarray], reference: np.ndarray | None,
                   agreement: Callable[[np.ndarray, np.ndarray], tuple[bool, str]]) -> Backend:
    """Choose torch or OpenVINO for `encoder` (a PackedEncoder, or None for a model that runs padded batches).

    `example` is a packed batch's encoder inputs to convert with; `run_sample` runs the fixed self-check batch
    through the adapter's forward; `reference` is its fp32 output when torch's precision self-check computed one
    (else torch's choice is fp32 and its output is the reference). Leaves `encoder.graph` the chosen forward.
    """
    if request.backend == "torch":
        return Backend("torch", "configured INFERENCE_BACKEND=torch")
    refusal = ("OpenVINO runs on CPU only; CUDA stays on torch" if device != "cpu"
               else "OpenVINO converts packed BERT encoders only; this model runs padded batches"
               if encoder is None else "")
    if refusal:
        return _torch_or_fail(request, refusal)
    torch_graph = encoder.graph
    try:
        compiled, origins = _compiled(request, encoder, example, model_path, role, candidates(request))
    except Exception as error:  # noqa: BLE001 - a model OpenVINO cannot convert runs on torch
        return _torch_or_fail(request, f"OpenVINO conversion failed: {type(error).__name__}: {error}")

    def run_on(graph) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            encoder.graph = graph
            return run_sample()
        return run

    runnable, trials = [], []
    for candidate, graph in compiled:
        try:
            run_on(graph)()  # the warm-up: a candidate that cannot run is not timed
            runnable.append((candidate, graph))
        except Exception as error:  # noqa: BLE001 - a candidate that cannot run is not kept
            trials.append(Trial(candidate, graph, 0.0, False, f"failed: {type(error).__name__}: {error}"))
    try:
        torch_run = run_on(torch_graph)
        torch_run()
        timings = timed_in_turns([torch_run, *(run_on(graph) for _, graph in runnable)], rounds=TIMING_ROUNDS)
    finally:
        encoder.graph = torch_graph
    (torch_output, torch_seconds), candidate_timings = timings[0], timings[1:]
    reference = torch_output if reference is None else reference
    for (candidate, graph), (output, seconds) in zip(runnable, candidate_timings, strict=True):
        agrees, detail = agreement(reference, output, share=TOLERANCE_SHARE)
        trials.append(Trial(candidate, graph, seconds, agrees, detail))
    chosen, why = choose(request, torch_seconds, trials)
    if chosen is None:
        return _torch_or_fail(request, why)
    encoder.graph = chosen.encoder
    import openvino

    version = openvino.__version__.split("-")[0]
    reason = (f"{'auto' if request.backend == 'auto' else 'configured'}: openvino {version} "
              f"{chosen.candidate.dtype} (model {origins[0]}): {why}")
    log.info("encoder runs on OpenVINO", extra={"backend_reason": reason})
    return Backend("openvino", reason, chosen.candidate.dtype, chosen.candidate)


def restore_backend(request: Request, encoder, example: tuple, model_path: Path, role: str, candidate: Candidate,
                    reason: str) -> Backend:
    """The OpenVINO compilation an earlier self-check chose (decision.py), compiled again without measuring.
    Leaves `encoder.graph` the compiled forward; raises what reading or compiling raises."""
    [(_, graph)], [origin] = _compiled(request, encoder, example, model_path, role, [candidate])
    encoder.graph = graph
    return Backend("openvino", f"{reason} (model {origin} now)", candidate.dtype, candidate)


def _compiled(request: Request, encoder, example: tuple, model_path: Path, role: str,
              wanted: list[Candidate]) -> tuple[list[tuple[Candidate, OpenVinoEncoder]], list[str]]:
    """Each wanted candidate compiled (its model read from the disk cache or converted), and where each came from."""
    key, cache_dir, module = model_key(model_path, role), cache_root(request.cache_dir), encoder.module()
    compiled, origins = [], []
    for candidate in wanted:
        model, origin = converted(module, example, cache_dir, key, candidate.int8_weights)
        origins.append(origin)
        compiled.append((candidate, compile_encoder(model, candidate, request)))
    return compiled, origins


def _torch_or_fail(request: Request, why: str) -> Backend:
    if request.backend == "openvino":
        raise BackendError(f"INFERENCE_BACKEND=openvino: {why}")
    log.info("encoder runs on torch", extra={"backend_reason": why})
    return Backend("torch", f"auto: {why}: torch")
