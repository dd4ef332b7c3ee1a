"""Base classes of the servicers: what the runtime needs to serve, load and drain them."""

import asyncio
import logging
import time
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from services.runtime.adapter import ModelAdapter, ModelDescription
from services.runtime.batcher import BatchingConfig, BatchOutcome, DynamicBatcher
from services.runtime.config import ModelWorkerSettings
from services.runtime.device import cuda_memory_held, stream_layout
from services.runtime.errors import Unavailable
from services.runtime.fingerprint import fingerprint
from services.runtime.gpu_share import GpuShare, share_mb
from services.runtime.metrics import BatcherMetrics
from services.runtime.tracing import record_batching
from torchgate import __version__
from torchgate.priority import BACKGROUND, PRIORITY_KEY
from torchgate.v1 import common_pb2

log = logging.getLogger(__name__)


class WorkerServicer:
    """A servicer the runtime can serve: names its gRPC service, loads before SERVING, drains on stop."""

    SERVICE: ServiceDescriptor

    def add_to_server(self, server: grpc.aio.Server) -> None:
        raise NotImplementedError

    async def load(self) -> None:
        """Heavy start-up work; health reports NOT_SERVING until it returns."""

    async def drain(self, timeout: float) -> None:
        """Finish queued work within `timeout` after the server stopped taking requests."""

    async def reload(self) -> None:
        """SIGHUP: read again what the worker reads from files besides its model (nothing, by default)."""


class ModelServicer(WorkerServicer):
    """A servicer backed by a ModelAdapter behind a DynamicBatcher; serves the shared `Info` RPC."""

    def __init__(self, adapter: ModelAdapter, settings: ModelWorkerSettings):
        self.adapter = adapter
        self.settings = settings
        self.model: ModelDescription | None = None
        self.batcher: DynamicBatcher | None = None
        self.gpu_share: GpuShare | None = None
        self.streams = 1
        self.threads_per_stream = 0

    async def load(self) -> None:
        self.model = await asyncio.to_thread(self.adapter.load)
        await self.prepare(self.model)
        self.model.fingerprint = await asyncio.to_thread(fingerprint, self.model)
        await asyncio.to_thread(self.adapter.warmup)
        if self.settings.gpu_address and self.model.device.startswith("cuda"):
            self.gpu_share = GpuShare(self.settings.gpu_address, self.settings.service_name())
            memory_mb = share_mb(cuda_memory_held(self.model.device), self.settings.gpu_memory_mb)
            await self.gpu_share.reserve(memory_mb, int(self.model.device.partition(":")[2] or 0))
        # The layout services.runtime.device.place gave torch when the adapter loaded.
        self.streams, self.threads_per_stream = stream_layout(self.model.device, self.settings.device_streams,
                                                              self.settings.cpu_threads)
        self.batcher = DynamicBatcher(self.adapter, self.batching_config(), BatcherMetrics(self.model.model_id))
        await self.batcher.start()
        log.info("model ready", extra={"model": self.model.model_id, "device": self.model.device,
                                       "dtype": self.model.dtype, "device_streams": self.streams,
                                       "threads_per_stream": self.threads_per_stream})

    async def prepare(self, model: ModelDescription) -> None:
        """What the servicer derives from the loaded model before its fingerprint is taken (nothing, by default)."""

    async def drain(self, timeout: float) -> None:
        if self.batcher:
            await self.batcher.close(timeout)
        if self.gpu_share:
            await self.gpu_share.release()

    def batching_config(self) -> BatchingConfig:
        s = self.settings
        return BatchingConfig(s.max_batch_size, s.max_batch_tokens, s.max_wait_ms, s.max_queue_items,
                              self.streams, s.background_batch_size)

    def ready_model(self) -> ModelDescription:
        """The loaded model, or UNAVAILABLE while it is still loading."""
        if self.model is None or self.batcher is None:
            raise Unavailable("the model is still loading; retry shortly")
        return self.model

    async def run_batched(self, items: list[Any], context: grpc.aio.ServicerContext) -> BatchOutcome:
        """Send items through the batcher, honouring the caller's deadline and priority; traces the queue and the
        batches."""
        model = self.ready_model()
        remaining = context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        background = (PRIORITY_KEY, BACKGROUND) in (context.invocation_metadata() or ())
        outcome = await self.batcher.submit(items, deadline, background)
        record_batching(outcome, model)
        return outcome

    async def Info(self, request, context) -> common_pb2.ModelInfo:
        model, s = self.ready_model(), self.settings
        return common_pb2.ModelInfo(
            model_id=model.model_id,
            model_path=model.model_path,
            device=model.device,
            dtype=model.dtype,
            max_input_tokens=model.max_input_tokens,
            dimension=model.dimension,
            labels=model.labels,
            batching=common_pb2.BatchingInfo(
                max_batch_size=s.max_batch_size, max_batch_tokens=s.max_batch_tokens,
                max_wait_ms=s.max_wait_ms, max_queue_items=s.max_queue_items,
                device_streams=self.streams, threads_per_stream=self.threads_per_stream,
            ),
            version=__version__,
            max_items_per_request=s.max_items_per_request,
            max_chars_per_item=s.max_chars_per_item,
            fallback_reason=model.fallback_reason,
            dtype_reason=model.dtype_reason,
            backend=model.backend,
            backend_reason=model.backend_reason,
            prompts=model.prompts,
            vocab_size=model.vocab_size,
            stands_in_for=model.stands_in_for,
            fingerprint=model.fingerprint,
        )


def timing(outcome: BatchOutcome, started: float) -> common_pb2.Timing:
    """The Timing message of a reply, from a batch outcome and the request's perf_counter start."""
    return common_pb2.Timing(
        queue_ms=outcome.queue_ms, inference_ms=outcome.inference_ms,
        total_ms=(time.perf_counter() - started) * 1000,
    )
