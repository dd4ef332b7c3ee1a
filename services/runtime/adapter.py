"""The one extension point of a model worker."""

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.runtime.backend import Backend, Request, settle_backend
from services.runtime.device import place, stream_layout
from services.runtime.models import resolve_model
from services.runtime.packing import PackedBatch, PackedEncoder, encoder_inputs
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

    @classmethod
    def from_settings(cls, settings, model_id: str | None = None) -> "ModelSpec":
        return cls(model_id or settings.model, settings.device, settings.dtype, settings.cpu_threads,
                   settings.pack_length, settings.device_streams, settings.trace, settings.inference_backend,
                   settings.quantize, settings.openvino_cache_dir)


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
        """
        with machine_to_itself() if self.device == "cpu" else nullcontext():
            self.precision = settle(self.precision, run_sample, agreement, self.model_id)
            if encoder is None:
                forward = "eager (padded batches)"
            elif not self.spec.trace:
                forward = "eager (TRACE=false)"
            else:
                forward = encoder.trace([sample(SELF_CHECK_BATCH), sample(SELF_CHECK_TEXTS[1:3])],
                                        self.precision.context)
            streams, threads = stream_layout(self.device, self.spec.device_streams, self.spec.cpu_threads)
            spec = self.spec
            request = Request(spec.inference_backend, spec.quantize, spec.openvino_cache_dir, spec.dtype,
                              bool(cpu_bf16_flags()), streams, threads)
            example = encoder_inputs(sample(SELF_CHECK_BATCH)) if encoder is not None else ()
            self.backend = settle_backend(request, self.device, encoder, example, self.path, type(self).__name__,
                                          run_sample, self.precision.fp32_sample, agreement)
        if self.backend.name != "torch":
            forward = f"{self.backend.name} {self.backend.dtype}"
        log.info("forward pass: %s", forward, extra={"model": self.model_id, "forward": forward,
                                                     "backend_reason": self.backend.reason})

    def describe(self, **fields) -> ModelDescription:
        """The loaded model's description with where, in what and by which backend it computes."""
        on_openvino = self.backend.name != "torch"
        return ModelDescription(
            model_id=self.model_id, model_path=str(self.path), device=self.device,
            dtype=self.backend.dtype if on_openvino else self.precision.name,
            dtype_reason="chosen with the backend (backend_reason)" if on_openvino else self.precision.reason,
            backend=self.backend.name, backend_reason=self.backend.reason, **fields)
