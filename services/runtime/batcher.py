"""Dynamic batching: many concurrent requests, few forward passes, little padding.

Requests are split into items (one text or pair each) that wait in one queue. Whenever the device is
free, the batcher anchors the next batch on the item of the least-served request (so a big request
cannot starve small ones), adds the queued items closest to it in estimated length up to
`max_batch_size` items and `max_batch_tokens` tokens, and tokenizes and runs it on the device thread.
The next batch starts as soon as the device finishes, before the finished batch's callers are
answered on the event loop, so replies never hold the device up.

Measured on 2 CPU cores with 32 concurrent single-text callers: preparing the next batch on a
tokenizer thread during the forward pass cut the average batch from 19 to 11 inputs and throughput
by 8%, while tokenizing (Rust fast tokenizers) costs about 1% of a batch's time; so batches form when
the device frees up and are tokenized on the device thread.
"""

import asyncio
import contextlib
import itertools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from services.runtime.adapter import ModelAdapter, Prepared
from services.runtime.errors import DeadlineExpired, Overloaded, Unavailable, WorkerError
from services.runtime.metrics import BatcherMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchingConfig:
    """Batching limits; see ModelWorkerSettings for what each one means and its measured default."""

    max_batch_size: int = 64
    max_batch_tokens: int = 4096
    max_wait_ms: float = 0.0
    max_queue_items: int = 4096


@dataclass(frozen=True)
class BatchRecord:
    """One forward pass that served (part of) a request, on the wall clock in nanoseconds (for trace spans)."""

    batch_id: int
    started_ns: int
    ended_ns: int
    size: int  # inputs in the batch, all requests together
    tokens: int  # what the batch cost the model: summed tokens when packed, else padded
    inputs: int  # this request's inputs in it


@dataclass
class BatchOutcome:
    """One request's results, in input order, with its token counts and where its time went."""

    results: list[Any]
    token_counts: list[int]
    queue_ms: float
    inference_ms: float
    enqueued_ns: int = 0
    batches: list[BatchRecord] = field(default_factory=list)


class _Request:
    __slots__ = ("future", "results", "token_counts", "remaining", "deadline", "seq", "enqueued_at",
                 "enqueued_ns", "scheduled_at", "scheduled", "inference_s", "batches")

    def __init__(self, future: asyncio.Future, size: int, deadline: float | None, seq: int):
        self.future = future
        self.results: list[Any] = [None] * size
        self.token_counts = [0] * size
        self.remaining = size
        self.deadline = deadline
        self.seq = seq
        self.enqueued_at = time.monotonic()
        self.enqueued_ns = time.time_ns()
        self.scheduled_at: float | None = None
        self.scheduled = 0
        self.inference_s = 0.0
        self.batches: list[BatchRecord] = []

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)

    def outcome(self) -> BatchOutcome:
        return BatchOutcome(
            results=self.results,
            token_counts=self.token_counts,
            queue_ms=((self.scheduled_at or self.enqueued_at) - self.enqueued_at) * 1000,
            inference_ms=self.inference_s * 1000,
            enqueued_ns=self.enqueued_ns,
            batches=self.batches,
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
    tokens: int
    batch_id: int
    started: float  # perf_counter
    started_ns: int  # wall clock


class DynamicBatcher:
    """One per loaded model: a bounded queue in front of one device thread."""

    def __init__(self, adapter: ModelAdapter, config: BatchingConfig, metrics: BatcherMetrics | None = None):
        self.adapter = adapter
        self.config = config
        self.metrics = metrics or BatcherMetrics("unnamed")
        self._pending: list[_Item] = []
        self._in_flight = 0
        self._seq = itertools.count()
        self._batch_ids = itertools.count(1)
        self._accepting = False
        self._tasks: list[asyncio.Task] = []
        self._device_pool = ThreadPoolExecutor(1, thread_name_prefix="device")

    async def start(self) -> None:
        self._arrived = asyncio.Event()
        self._tasks = [asyncio.create_task(self._run_loop())]
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
        self._device_pool.shutdown(wait=False, cancel_futures=True)

    async def _run_loop(self) -> None:
        while True:
            await self._wait_for_items()
            running = self._launch()
            while running is not None:
                batch, work = running
                try:
                    outcome = await work
                except Exception:
                    log.exception("a batch of %d inputs failed", len(batch.items))
                    outcome = None
                # The next batch starts before this one's callers are answered, so the device never
                # waits for the event loop to send replies.
                self._drop_dead_items()
                running = self._launch() if self._pending else None
                if outcome is None:
                    self._fail_batch(batch.items)
                else:
                    self._deliver(batch, *outcome)
                self._in_flight -= 1

    def _launch(self) -> tuple[_Batch, asyncio.Future]:
        """Take the next batch and start tokenizing and running it on the device thread."""
        items, tokens = self._take_batch()
        payloads = [item.payload for item in items]
        batch = _Batch(items, tokens, next(self._batch_ids), time.perf_counter(), time.time_ns())
        return batch, asyncio.get_running_loop().run_in_executor(self._device_pool, self._run_model, payloads)

    def _run_model(self, payloads: list[Any]) -> tuple[Prepared, list[Any]]:
        prepared = self.adapter.preprocess(payloads)
        return prepared, self.adapter.postprocess(prepared, self.adapter.forward(prepared))

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

    def _take_batch(self) -> tuple[list[_Item], int]:
        """Remove and return the next batch (queue not empty), anchored on the least-served request, and its
        cost in tokens."""
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
        cost = self._cost(longest, total, count)
        self.metrics.batch_size.observe(len(items))
        self.metrics.batch_tokens.observe(cost)
        return items, cost

    def _cost(self, longest: int, total: int, count: int) -> int:
        """Tokens a batch costs the model: summed when the adapter packs inputs, else padded."""
        return total if self.adapter.packs_sequences else longest * count

    def _deliver(self, batch: _Batch, prepared: Prepared, results: list[Any]) -> None:
        elapsed = time.perf_counter() - batch.started
        ended_ns = time.time_ns()
        self.metrics.inference_seconds.observe(elapsed)
        inputs: dict[int, int] = {}
        for item in batch.items:
            inputs[id(item.request)] = inputs.get(id(item.request), 0) + 1
        for item, result, tokens in zip(batch.items, results, prepared.token_counts, strict=True):
            request = item.request
            if request.future.done():
                continue
            if id(request) in inputs:
                request.inference_s += elapsed
                request.batches.append(BatchRecord(batch.batch_id, batch.started_ns, ended_ns, len(batch.items),
                                                   batch.tokens, inputs.pop(id(request))))
            request.results[item.index] = result
            request.token_counts[item.index] = tokens
            request.remaining -= 1
            if request.remaining == 0:
                request.future.set_result(request.outcome())

    def _fail_batch(self, items: list[_Item]) -> None:
        for item in items:
            item.request.fail(WorkerError("internal error while running the model"))
