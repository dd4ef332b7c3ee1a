"""The one extension point of a model worker."""

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.runtime.backend import Backend, Candidate, Request, cache_root, restore_backend, settle_backend
from services.runtime.decision import Decision, decision_key, load_decision, save_decision
from services.runtime.device import place, stream_layout
from services.runtime.models import resolve_model
from services.runtime.packing import TRACED, PackedBatch, PackedEncoder, encoder_inputs
from services.runtime.precision import (
    SELF_CHECK_BATCH,
    SELF_CHECK_TEXTS,
    Precision,
    cpu_bf16_flags,
    machine_to_itself,
    settle,
)
from torchgate.models import model_names

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """Which model an adapter loads and how: the part of a model worker's settings adapters need."""

    model_id: str
    device: str = "auto"
    dtype: str = "auto"
    cpu_threads: int = 0
    pack_length: int = 128
    device_streams: int = 0
    trace: bool = True
    inference_backend: str = "auto"
    quantize: str = "none"
    openvino_cache_dir: str = ""
    recheck: bool = False

    @classmethod
    def from_settings(cls, settings, model_id: str | None = None) -> "ModelSpec":
        return cls(model_id or settings.model, settings.device, settings.dtype, settings.cpu_threads,
                   settings.pack_length, settings.device_streams, settings.trace, settings.inference_backend,
                   settings.quantize, settings.openvino_cache_dir, settings.recheck)


@dataclass
class Prepared:
    """A tokenized batch: model inputs plus the real token count of each input (for usage)."""

    features: Any
    token_counts: list[int]


@dataclass
class ModelDescription:
    """What a loaded model is; the runtime turns it into the `ModelInfo` every worker's Info returns."""

    model_id: str
    model_path: str
    device: str
    dtype: str
    max_input_tokens: int
    dimension: int = 0
    labels: list[str] = field(default_factory=list)
    fallback_reason: str = ""
    dtype_reason: str = ""
    backend: str = "torch"
    backend_reason: str = ""
    prompts: dict[str, str] = field(default_factory=dict)
    vocab_size: int = 0
    stands_in_for: str = ""  # the configured model a fallback replaces
    result_files: list[str] = field(default_factory=list)  # files besides the model's that change its results
    result_parts: list[str] = field(default_factory=list)  # settings besides the model's that change its results
    fingerprint: str = ""  # services.runtime.fingerprint, set by the servicer after loading

    def names(self) -> set[str]:
        """What a request may call this model (torchgate.models.model_names)."""
        return model_names(self.model_id, self.stands_in_for)


class ModelAdapter(ABC):
    """Everything a worker knows about its model; the runtime does the rest (server, batching, health).

    The dynamic batcher drives an adapter through this life cycle:

    1. `load()` once, in a worker thread, before the service reports SERVING. Resolve the weights
       (never download) and pick the device and dtype: a `SpecAdapter` gets all three from
       `self.locate()`. Return a `ModelDescription`.
    2. `warmup()` once after loading: run the shapes traffic will use, so the first real request does
       not pay for lazy initialisation (CUDA kernels, allocator pools). Health turns SERVING only
       after it succeeds.
    3. Per batch, in this order, on one of the worker's device threads (one per device stream, each
       running one batch at a time; the event loop stays free for requests):
       - `preprocess(items)`: CPU work only (tokenize, pad or pack, pin memory). Returns a `Prepared`
         with the features and each item's real token count. Runs for one batch at a time.
       - `forward(prepared)`: the model call under `torch.inference_mode()`, ending with the single
         host copy of the result (the one synchronisation per batch on CUDA).
       - `postprocess(prepared, output)`: split the output into one result per item, in input order
         (numpy arrays or plain Python values).
       `forward` and `postprocess` run for several batches at once when the worker has several device
       streams, so they must not change the adapter's state.
    4. `estimate_tokens(item)` is called on the event loop for every queued item, so it must be cheap
       (no tokenizer): the batcher groups items of similar estimated length and caps each batch's
       padded tokens (`max_batch_tokens`) with it.

    An adapter whose `preprocess` packs inputs end to end (services/runtime/packing.py) sets
    `packs_sequences`: the batcher then budgets a batch by its summed tokens instead of padded ones.

    Items are whatever the servicer submits: a text for embeddings and classification, a
    (query, document) pair for reranking. An exception from `preprocess`, `forward` or `postprocess`
    fails only the requests of that batch (INTERNAL to their callers; the details go to the log).
    """

    packs_sequences: bool = False

    @abstractmethod
    def load(self) -> ModelDescription:
        """Load weights onto the chosen device; called once, off the event loop."""

    @abstractmethod
    def warmup(self) -> None:
        """Run representative batches so later requests hit warm kernels and allocators."""

    @abstractmethod
    def estimate_tokens(self, item: Any) -> int:
        """Cheap token estimate of one item (no tokenizer), capped at the model's max input tokens."""

    @abstractmethod
    def preprocess(self, items: list[Any]) -> Prepared:
        """Tokenize a batch (CPU)."""

    @abstractmethod
    def forward(self, prepared: Prepared) -> Any:
        """Run the model on a prepared batch (device)."""

    @abstractmethod
    def postprocess(self, prepared: Prepared, output: Any) -> list[Any]:
        """Split a batch output into one result per item, in order."""


class SpecAdapter(ModelAdapter):
    """An adapter for the model a ModelSpec names: locates its weights and its device once, the same way."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.model_id = spec.model_id

    def locate(self) -> tuple[Path, str, Precision]:
        """The weights' local directory (never a download), the device, and the precision to load and run in.

        The adapter loads the weights in `self.precision.weights`, wraps every forward pass in
        `self.precision.context()`, calls `self.settle(...)` once loaded and describes itself with
        `self.describe(...)`.
        """
        self.path = resolve_model(self.spec.model_id)
        self.device, self.precision = place(self.spec.device, self.spec.dtype, self.spec.cpu_threads,
                                            self.spec.device_streams)
        self.backend = Backend("torch", "")
        return self.path, self.device, self.precision

    def settle(self, encoder: PackedEncoder | None, run_sample: Callable[[], np.ndarray],
               agreement: Callable[[np.ndarray, np.ndarray], tuple[bool, str]],
               sample: Callable[[list[str]], PackedBatch]) -> None:
        """Once loaded, how the model computes, each step checked on this machine against the last:

        1. precision: keep a bf16 candidate only if `run_sample()` agrees with its fp32 run and runs faster
           (precision.py);
        2. the packed encoder as a traced graph where it reproduces the module, on `sample(texts)` batches of two
           shapes (packing.py);
        3. the backend: OpenVINO where it agrees with fp32 and beats the torch choice (backend.py).

        The outcome is kept on disk (decision.py): a restart with the same model, machine and settings restores it
        without measuring, unless RECHECK is set.
        """
        spec = self.spec
        streams, threads = stream_layout(self.device, spec.device_streams, spec.cpu_threads)
        request = Request(spec.inference_backend, spec.quantize, spec.openvino_cache_dir, spec.dtype,
                          bool(cpu_bf16_flags()), streams, threads)
        decisions = cache_root(spec.openvino_cache_dir) / "decisions"
        key = decision_key(self.path, type(self).__name__, (streams, threads), {
            "device": self.device, "dtype": spec.dtype, "candidate": self.precision.name, "trace": spec.trace,
            "backend": spec.inference_backend, "quantize": spec.quantize, "pack_length": spec.pack_length})
        cached = None if spec.recheck else load_decision(decisions, key)
        forward = self._restore(cached, encoder, sample, request) if cached else None
        restored = forward is not None
        if not restored:
            with machine_to_itself() if self.device == "cpu" else nullcontext():
                forward = self._measure(encoder, run_sample, agreement, sample, request)
            candidate = self.backend.candidate
            save_decision(decisions, key, Decision(
                autocast=str(self.precision.autocast or "").removeprefix("torch."),
                precision_reason=self.precision.reason, forward="traced" if forward == TRACED else "eager",
                backend=self.backend.name, backend_dtype=self.backend.dtype,
                openvino_precision=candidate.precision if candidate else "",
                int8_weights=bool(candidate and candidate.int8_weights), backend_reason=self.backend.reason))
        if self.backend.name != "torch":
            forward = f"{self.backend.name} {self.backend.dtype}"
        log.info("forward pass: %s", forward, extra={"model": self.model_id, "forward": forward,
                                                     "backend_reason": self.backend.reason,
                                                     "self_check": "cached" if restored else "measured"})

    def _measure(self, encoder: PackedEncoder | None, run_sample: Callable[[], np.ndarray],
                 agreement: Callable[[np.ndarray, np.ndarray], tuple[bool, str]],
                 sample: Callable[[list[str]], PackedBatch], request: Request) -> str:
        """The self-check itself (settle's three steps); returns which forward the torch side runs."""
        self.precision = settle(self.precision, run_sample, agreement, self.model_id)
        forward = self._untraced(encoder) or encoder.trace(
            [sample(SELF_CHECK_BATCH), sample(SELF_CHECK_TEXTS[1:3])], self.precision.context)
        example = encoder_inputs(sample(SELF_CHECK_BATCH)) if encoder is not None else ()
        self.backend = settle_backend(request, self.device, encoder, example, self.path, type(self).__name__,
                                      run_sample, self.precision.fp32_sample, agreement)
        return forward

    def _untraced(self, encoder: PackedEncoder | None) -> str:
        """Why the encoder runs eager whatever a self-check finds, or "" when tracing is up to it."""
        if encoder is None:
            return "eager (padded batches)"
        return "" if self.spec.trace else "eager (TRACE=false)"

    def _restore(self, cached: Decision, encoder: PackedEncoder | None, sample: Callable[[list[str]], PackedBatch],
                 request: Request) -> str | None:
        """Apply an earlier start's decision without measuring; the forward it runs, or None where it no longer
        applies (the caller measures again)."""
        import torch

        candidate_autocast, earlier = self.precision.autocast, "cached decision of an earlier start: "
        self.precision.autocast = getattr(torch, cached.autocast) if cached.autocast else None
        self.precision.reason = earlier + cached.precision_reason
        try:
            if cached.backend == "openvino":
                self.backend = restore_backend(
                    request, encoder, encoder_inputs(sample(SELF_CHECK_BATCH)), self.path, type(self).__name__,
                    Candidate(cached.openvino_precision, cached.int8_weights), earlier + cached.backend_reason)
                return f"openvino {self.backend.dtype}"
            self.backend = Backend("torch", earlier + cached.backend_reason)
            if untraced := self._untraced(encoder):
                return untraced
            if cached.forward != "traced":
                return "eager (the traced graph did not reproduce the module at an earlier start)"
            return encoder.trace([sample(SELF_CHECK_BATCH), sample(SELF_CHECK_TEXTS[1:3])], self.precision.context)
        except Exception as error:  # noqa: BLE001 - a decision that cannot be restored is measured again
            log.warning("cached self-check decision no longer applies; measuring again",
                        extra={"model": self.model_id, "error": f"{type(error).__name__}: {error}"})
            self.precision.autocast = candidate_autocast
            if encoder is not None:
                encoder.graph = None
            return None

    def describe(self, **fields) -> ModelDescription:
        """The loaded model's description with where, in what and by which backend it computes."""
        on_openvino = self.backend.name != "torch"
        return ModelDescription(
            model_id=self.model_id, model_path=str(self.path), device=self.device,
            dtype=self.backend.dtype if on_openvino else self.precision.name,
            dtype_reason="chosen with the backend (backend_reason)" if on_openvino else self.precision.reason,
            backend=self.backend.name, backend_reason=self.backend.reason, **fields)
