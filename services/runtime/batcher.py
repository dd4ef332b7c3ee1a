"""Dynamic batching: many concurrent requests, few forward passes, little padding.

Requests are split into items (one text or pair each) that wait in one queue. When the model can
take another batch, the batcher anchors it on the item of the least-served request (so a big
request cannot starve small ones), adds the queued items closest to it in estimated length up to
`max_batch_size` items and `max_batch_tokens` padded tokens, tokenizes it on the tokenizer thread
while the previous batch runs on the device thread, and hands each result back to its caller.
"""

import asyncio
import contextlib
import itertools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from services.runtime.adapter import ModelAdapter, Prepared
from services.runtime.errors import DeadlineExpired, Overloaded, Unavailable, WorkerError
from services.runtime.metrics import BatcherMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchingConfig:
    """Batching limits; see ModelWorkerSettings for what each one means and its measured default."""

    max_batch_size: int = 32
    max_batch_tokens: int = 4096
    max_wait_ms: float = 2.0
    max_queue_items: int = 4096


@dataclass
class BatchOutcome:
    """One request's results, in input order, with its token counts and where its time went."""

    results: list[Any]
    token_counts: list[int]
    queue_ms: float
    inference_ms: float


class _Request:
    __slots__ = ("future", "results", "token_counts", "remaining", "deadline", "seq", "enqueued_at",
                 "scheduled_at", "scheduled", "inference_s")

    def __init__(self, future: asyncio.Future, size: int, deadline: float | None, seq: int):
        self.future = future
        self.results: list[Any] = [None] * size
        self.token_counts = [0] * size
        self.remaining = size
        self.deadline = deadline
        self.seq = seq
        self.enqueued_at = time.monotonic()
        self.scheduled_at: float | None = None
        self.scheduled = 0
        self.inference_s = 0.0

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)

    def outcome(self) -> BatchOutcome:
        return BatchOutcome(
            results=self.results,
            token_counts=self.token_counts,
            queue_ms=((self.scheduled_at or self.enqueued_at) - self.enqueued_at) * 1000,
            inference_ms=self.inference_s * 1000,
        )


@dataclass(slots=True)
class _Item:
    request: _Request
    index: int
    payload: Any
    tokens: int


@dataclass(slots=True)
class _Batch:
    items: list[_Item]
    prepared: Prepared
    started: float


class DynamicBatcher:
    """One per loaded model: a bounded queue in front of a tokenizer thread and a device thread."""

    def __init__(self, adapter: ModelAdapter, config: BatchingConfig, metrics: BatcherMetrics | None = None):
        self.adapter = adapter
        self.config = config
        self.metrics = metrics or BatcherMetrics("unnamed")
        self._pending: list[_Item] = []
        self._in_flight = 0
        self._seq = itertools.count()
        self._accepting = False
        self._tasks: list[asyncio.Task] = []
        self._tokenize_pool = ThreadPoolExecutor(1, thread_name_prefix="tokenize")
        self._device_pool = ThreadPoolExecutor(1, thread_name_prefix="device")

    @property
    def queued_items(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        self._arrived = asyncio.Event()
        self._ready: asyncio.Queue[_Batch] = asyncio.Queue()
        self._prepared_slot = asyncio.Semaphore(1)
        self._tasks = [asyncio.create_task(self._assemble_loop()), asyncio.create_task(self._execute_loop())]
        self._accepting = True

    async def submit(self, items: list[Any], deadline: float | None = None) -> BatchOutcome:
        """Queue the items and wait for their results; `deadline` is a time.monotonic() instant."""
        if not self._accepting:
            raise Unavailable("the worker is shutting down; retry on another replica")
        if not items:
            return BatchOutcome([], [], 0.0, 0.0)
        if len(self._pending) + len(items) > self.config.max_queue_items:
            self.metrics.rejected.inc()
            raise Overloaded(
                f"the worker's queue is full ({len(self._pending)} inputs waiting, limit "
                f"{self.config.max_queue_items}); retry later"
            )
        request = _Request(asyncio.get_running_loop().create_future(), len(items), deadline, next(self._seq))
        estimate = self.adapter.estimate_tokens
        self._pending.extend(_Item(request, i, payload, estimate(payload)) for i, payload in enumerate(items))
        self.metrics.queue_depth.set(len(self._pending))
        self._arrived.set()
        return await request.future

    async def close(self, timeout: float) -> None:
        """Stop accepting, let queued and running batches finish within `timeout`, then stop."""
        self._accepting = False
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        while (self._pending or self._in_flight) and loop.time() < give_up:  # noqa: ASYNC110 - once per process
            await asyncio.sleep(0.01)
        for item in self._pending:
            item.request.fail(Unavailable("the worker shut down before this request ran; retry"))
        self._pending.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tokenize_pool.shutdown(wait=False, cancel_futures=True)
        self._device_pool.shutdown(wait=False, cancel_futures=True)

    async def _assemble_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # One batch prepared ahead of the device, no more: a later batch forms from a fuller queue.
            await self._prepared_slot.acquire()
            await self._wait_for_items()
            items = self._take_batch()
            started = time.perf_counter()
            try:
                prepared = await loop.run_in_executor(
                    self._tokenize_pool, self.adapter.preprocess, [item.payload for item in items]
                )
            except Exception:
                log.exception("preprocess failed for a batch of %d inputs", len(items))
                self._fail_batch(items)
                self._in_flight -= 1
                self._prepared_slot.release()
                continue
            self._ready.put_nowait(_Batch(items, prepared, started))

    async def _execute_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._ready.get()
            self._prepared_slot.release()
            try:
                if any(not item.request.future.done() for item in batch.items):
                    results = await loop.run_in_executor(self._device_pool, self._run_model, batch.prepared)
                    self._deliver(batch, results)
            except Exception:
                log.exception("forward pass failed for a batch of %d inputs", len(batch.items))
                self._fail_batch(batch.items)
            finally:
                self._in_flight -= 1

    def _run_model(self, prepared: Prepared) -> list[Any]:
        return self.adapter.postprocess(prepared, self.adapter.forward(prepared))

    async def _wait_for_items(self) -> None:
        """Return when a batch should be formed: the queue fills one, or the oldest item waited max_wait."""
        max_wait = self.config.max_wait_ms / 1000
        while True:
            self._drop_dead_items()
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            waited = time.monotonic() - self._pending[0].request.enqueued_at
            if len(self._pending) >= self.config.max_batch_size or waited >= max_wait:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), max_wait - waited)

    def _drop_dead_items(self) -> None:
        """Forget items of cancelled or failed requests and fail those whose deadline passed."""
        now = time.monotonic()
        for item in self._pending:
            request = item.request
            if request.deadline is not None and now >= request.deadline:
                request.fail(DeadlineExpired("the request's deadline passed while it waited in the queue"))
        if any(item.request.future.done() for item in self._pending):
            self._pending = [item for item in self._pending if not item.request.future.done()]
            self.metrics.queue_depth.set(len(self._pending))

    def _take_batch(self) -> list[_Item]:
        """Remove and return the next batch (queue not empty): anchored on the least-served request."""
        pending = self._pending
        anchor = min(range(len(pending)), key=lambda i: (pending[i].request.scheduled, pending[i].request.seq))
        order = sorted(range(len(pending)), key=lambda i: pending[i].tokens)
        low = high = order.index(anchor)
        anchor_tokens = longest = total = pending[anchor].tokens
        count = 1
        while count < self.config.max_batch_size:
            neighbours = [pos for pos in (low - 1, high + 1) if 0 <= pos < len(order)]
            neighbours.sort(key=lambda pos: abs(pending[order[pos]].tokens - anchor_tokens))
            for pos in neighbours:
                tokens = pending[order[pos]].tokens
                if self._cost(max(longest, tokens), total + tokens, count + 1) <= self.config.max_batch_tokens:
                    break
            else:
                break
            low, high = min(low, pos), max(high, pos)
            longest, total, count = max(longest, tokens), total + tokens, count + 1
        chosen = set(order[low : high + 1])
        items = [pending[i] for i in order[low : high + 1]]
        self._pending = [item for i, item in enumerate(pending) if i not in chosen]
        now = time.monotonic()
        for item in items:
            request = item.request
            if request.scheduled_at is None:
                request.scheduled_at = now
                self.metrics.queue_wait.observe(now - request.enqueued_at)
            request.scheduled += 1
        self._in_flight += 1
        self.metrics.queue_depth.set(len(self._pending))
        self.metrics.batch_size.observe(len(items))
        self.metrics.batch_tokens.observe(self._cost(longest, total, count))
        return items

    def _cost(self, longest: int, total: int, count: int) -> int:
        """Tokens a batch costs the model: summed when the adapter packs inputs, else padded."""
        return total if self.adapter.packs_sequences else longest * count

    def _deliver(self, batch: _Batch, results: list[Any]) -> None:
        elapsed = time.perf_counter() - batch.started
        self.metrics.inference_seconds.observe(elapsed)
        charged: set[int] = set()
        for item, result, tokens in zip(batch.items, results, batch.prepared.token_counts, strict=True):
            request = item.request
            if request.future.done():
                continue
            if id(request) not in charged:
                request.inference_s += elapsed
                charged.add(id(request))
            request.results[item.index] = result
            request.token_counts[item.index] = tokens
            request.remaining -= 1
            if request.remaining == 0:
                request.future.set_result(request.outcome())

    def _fail_batch(self, items: list[_Item]) -> None:
        for item in items:
            item.request.fail(WorkerError("internal error while running the model"))
