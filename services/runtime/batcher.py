"""Dynamic batching: many concurrent requests, few forward passes, little padding.

Requests are split into items (one text or pair each) that wait in one queue, in front of
`streams` device threads that each run one batch at a time. A batch is anchored on the request owed
service longest (round robin: one that got a batch rejoins the queue at the back, so a big request
cannot starve small ones); packed batches then take whole requests in that order (packing pads
nothing, whatever the lengths), padded ones the queued items closest to the anchor in estimated
length; both up to `max_batch_size` items and `max_batch_tokens` tokens. A batch is tokenized and run
on its stream's thread, and the stream's next batch starts before the finished batch's callers are
answered on the event loop, so replies never hold the device up.

With several streams a free stream waits, while another is busy, until its share of the work in the
worker (queued, running and just-answered inputs, divided by the streams) is queued: two streams then
alternate batches of half the load each instead of one taking all and the other the stragglers, and
callers in a closed loop stay in two groups instead of splitting into three smaller ones (one of them
always queued). It waits at most half a batch's time, so a lone request never sits behind a long batch
while a stream is free.

Background requests (a batch job's lines, `submit(background=True)`) are served after every interactive
one, never in the same batch, and fill at most half the queue, so they cannot make an interactive request
wait for room. While interactive requests keep arriving (one within `YIELD_S`), a background batch takes at
most `background_batch_size` inputs and rests between batches as long as each ran: the device, which cannot be
taken back from a batch in flight, is never held long from the next interactive request, and with several device
streams one stays free for it. On an idle worker background batches are full size and take every stream.

Measured on 2 CPU cores with 32 concurrent single-text callers: preparing the next batch on a
tokenizer thread during the forward pass cut the average batch from 19 to 11 inputs and throughput
by 8%, while tokenizing (Rust fast tokenizers) costs about 1% of a batch's time; so batches form when
the device frees up and are tokenized on the device thread.
"""

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from services.runtime.adapter import ModelAdapter, Prepared
from services.runtime.errors import DeadlineExpired, Overloaded, Unavailable, WorkerError
from services.runtime.metrics import BatcherMetrics

log = logging.getLogger(__name__)

# An interactive request this recent keeps background batches small.
YIELD_S = 0.5


@dataclass(frozen=True)
class BatchingConfig:
    """Batching limits; see ModelWorkerSettings for what each one means and its measured default."""

    max_batch_size: int = 64
    max_batch_tokens: int = 4096
    max_wait_ms: float = 0.0
    max_queue_items: int = 4096
    streams: int = 1  # batches run at once (services.runtime.device.device_streams)
    background_batch_size: int = 4


@dataclass(frozen=True)
class BatchRecord:
    """One forward pass that served (part of) a request, on the wall clock in nanoseconds (for trace spans)."""

    batch_id: int
    started_ns: int
    ended_ns: int
    size: int  # inputs in the batch, all requests together
    tokens: int  # what the batch cost the model: summed tokens when packed, else padded
    inputs: int  # this request's inputs in it


def busy_ns(batches: list[BatchRecord]) -> int:
    """Wall time during which at least one of the batches ran (batches on several streams overlap)."""
    busy, covered_until = 0, 0
    for record in sorted(batches, key=lambda record: record.started_ns):
        start = max(record.started_ns, covered_until)
        if record.ended_ns > start:
            busy += record.ended_ns - start
            covered_until = record.ended_ns
    return busy


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
                 "enqueued_ns", "scheduled_at", "last_served", "batches", "background")

    def __init__(self, future: asyncio.Future, size: int, deadline: float | None, seq: int, background: bool):
        self.future = future
        self.background = background
        self.results: list[Any] = [None] * size
        self.token_counts = [0] * size
        self.remaining = size
        self.deadline = deadline
        self.seq = seq
        self.enqueued_at = time.monotonic()
        self.enqueued_ns = time.time_ns()
        self.scheduled_at: float | None = None
        # When the request last had inputs put in a batch (its arrival before that): requests are owed
        # service in this order, so one that got a batch rejoins the queue behind those that came meanwhile.
        self.last_served = self.enqueued_at
        self.batches: list[BatchRecord] = []

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)

    def outcome(self) -> BatchOutcome:
        return BatchOutcome(
            results=self.results,
            token_counts=self.token_counts,
            queue_ms=((self.scheduled_at or self.enqueued_at) - self.enqueued_at) * 1000,
            inference_ms=busy_ns(self.batches) / 1e6,
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
    background: bool
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
        self._in_flight_items = 0  # inputs in running batches (a batch holds at least one)
        # Inputs just answered whose callers may send again soon, until _returning_until (monotonic).
        self._returning = 0
        self._returning_until = 0.0
        self._batch_seconds: float | None = None  # moving average of a batch's time, once one finished
        self._seq = itertools.count()
        self._background_items = 0  # queued inputs of background requests
        self._background_batches = 0  # running batches of background requests
        self._background_rest_until = 0.0  # monotonic: background work rests until then while interactive arrives
        self._interactive_at = -YIELD_S  # monotonic arrival of the last interactive request
        self._batch_ids = itertools.count(1)
        self._accepting = False
        self._tasks: list[asyncio.Task] = []
        self._device_pool = ThreadPoolExecutor(config.streams, thread_name_prefix="device")
        # Tokenizers are not safe to call from two threads at once; tokenizing is ~1% of a batch.
        self._preprocess_lock = threading.Lock()

    async def start(self) -> None:
        self._arrived = asyncio.Event()
        self._tasks = [asyncio.create_task(self._run_stream()) for _ in range(self.config.streams)]
        self._accepting = True

    async def submit(self, items: list[Any], deadline: float | None = None, background: bool = False) -> BatchOutcome:
        """Queue the items and wait for their results; `deadline` is a time.monotonic() instant; `background`
        requests go after every interactive one."""
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
        if background and self._background_items + len(items) > self.config.max_queue_items // 2:
            self.metrics.rejected.inc()
            raise Overloaded(f"background work holds half the worker's queue ({self._background_items} inputs); "
                             "retry later")
        now = time.monotonic()
        if background:
            self._background_items += len(items)
        else:
            self._interactive_at = now
        request = _Request(asyncio.get_running_loop().create_future(), len(items), deadline, next(self._seq),
                           background)
        estimate = self.adapter.estimate_tokens
        self._pending.extend(_Item(request, i, payload, estimate(payload)) for i, payload in enumerate(items))
        self._returning = max(0, self._returning - len(items))
        self.metrics.queue_depth.set(len(self._pending))
        self._arrived.set()
        return await request.future

    async def close(self, timeout: float) -> None:
        """Stop accepting, let queued and running batches finish within `timeout`, then stop."""
        self._accepting = False
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        while (self._pending or self._in_flight_items) and loop.time() < give_up:  # noqa: ASYNC110 - once per process
            await asyncio.sleep(0.01)
        for item in self._pending:
            item.request.fail(Unavailable("the worker shut down before this request ran; retry"))
        self._pending.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._device_pool.shutdown(wait=False, cancel_futures=True)

    async def _run_stream(self) -> None:
        running = None
        free_since = 0.0
        while True:
            if running is None:
                await self._wait_for_share(free_since)
                running = self._launch()
            batch, work = running
            try:
                outcome = await work
            except Exception:
                log.exception("a batch of %d inputs failed", len(batch.items))
                outcome = None
            self._in_flight_items -= len(batch.items)
            self._background_batches -= batch.background
            free_since = time.monotonic()
            if batch.background:
                self._background_rest_until = free_since + (time.perf_counter() - batch.started)
            self._expect_return(len(batch.items))
            # The next batch starts before this one's callers are answered, so the device never
            # waits for the event loop to send replies.
            self._drop_dead_items()
            running = self._launch() if self._share_ready() else None
            if outcome is None:
                self._fail_batch(batch.items)
            else:
                self._deliver(batch, *outcome)
            # Fewer inputs in flight lowers the share other streams wait for.
            self._arrived.set()

    def _launch(self) -> tuple[_Batch, asyncio.Future]:
        """Take the next batch and start tokenizing and running it on the device thread."""
        items, tokens = self._take_batch(self._share())
        payloads = [item.payload for item in items]
        background = items[0].request.background
        self._background_batches += background
        batch = _Batch(items, tokens, background, next(self._batch_ids), time.perf_counter(), time.time_ns())
        return batch, asyncio.get_running_loop().run_in_executor(self._device_pool, self._run_model, payloads)

    def _run_model(self, payloads: list[Any]) -> tuple[Prepared, list[Any]]:
        with self._preprocess_lock:
            prepared = self.adapter.preprocess(payloads)
        return prepared, self.adapter.postprocess(prepared, self.adapter.forward(prepared))

    def _expect_return(self, answered: int) -> None:
        """Count just-answered inputs as work about to come back for half a batch's time: callers in a
        closed loop send their next request as soon as they have a reply, and a free stream that starts
        before they are back takes a small batch, which splits the callers into ever smaller groups."""
        if self._batch_seconds is None or self.config.streams == 1:
            return
        if time.monotonic() >= self._returning_until:
            self._returning = 0
        self._returning += answered
        self._returning_until = time.monotonic() + self._batch_seconds / 2

    def _share(self) -> int:
        """Inputs the next batch should take: the work in the worker, and the work about to come back,
        split evenly across the streams."""
        returning = self._returning if time.monotonic() < self._returning_until else 0
        in_worker = len(self._pending) + self._in_flight_items + returning
        return max(1, min(self.config.max_batch_size, -(-in_worker // self.config.streams)))

    def _share_ready(self) -> bool:
        return self._has_work() and len(self._pending) >= self._share()

    def _yielding_s(self) -> float:
        """How much longer background work must wait before its next batch (0: it may start one now). While
        interactive requests arrive, background batches run on all streams but one (a batch in flight cannot
        be taken back) and rest as long as their last one ran, so they take at most half the time of the
        cores they share with the interactive requests' event loops."""
        now = time.monotonic()
        window = YIELD_S - (now - self._interactive_at)
        if window <= 0:
            return 0.0
        if self.config.streams > 1 and self._background_batches >= self.config.streams - 1:
            return window
        return max(0.0, min(window, self._background_rest_until - now))

    def _has_work(self) -> bool:
        """Whether a queued input may start a batch now."""
        return len(self._pending) > self._background_items or (bool(self._pending) and not self._yielding_s())

    async def _wait_for_share(self, free_since: float) -> None:
        """Return when this stream should start a batch. While another stream is busy: once this stream's
        share of the work is queued, or after half a batch's time with work queued (a free stream never
        idles long behind queued work), counted from when this stream freed up, since inputs that queued
        while it ran waited for the device, not for it. With the device idle: once the queue fills a batch
        or the oldest input waited max_wait."""
        while True:
            self._drop_dead_items()
            yielding = self._yielding_s()
            if not self._pending or (yielding and len(self._pending) == self._background_items):
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), yielding if self._pending else None)
                continue
            oldest = self._pending[0].request.enqueued_at
            if self._in_flight_items:
                if self._share_ready():
                    return
                patience = self._batch_seconds / 2 if self._batch_seconds is not None else None
                waited = time.monotonic() - max(oldest, free_since)
            elif len(self._pending) >= self.config.max_batch_size:
                return
            else:
                patience = self.config.max_wait_ms / 1000
                waited = time.monotonic() - oldest
            if patience is not None and waited >= patience:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), None if patience is None else patience - waited)

    def _drop_dead_items(self) -> None:
        """Forget items of cancelled or failed requests and fail those whose deadline passed."""
        now = time.monotonic()
        for item in self._pending:
            request = item.request
            if request.deadline is not None and now >= request.deadline:
                request.fail(DeadlineExpired("the request's deadline passed while it waited in the queue"))
        if any(item.request.future.done() for item in self._pending):
            self._pending = [item for item in self._pending if not item.request.future.done()]
            self._background_items = sum(item.request.background for item in self._pending)
            self.metrics.queue_depth.set(len(self._pending))

    def _take_batch(self, limit: int) -> tuple[list[_Item], int]:
        """Remove and return the next batch of at most `limit` inputs (queue not empty), and its cost in tokens."""
        pending = self._pending
        anchor = min(range(len(pending)), key=lambda i: self._owed(pending[i]))
        background = pending[anchor].request.background
        if background and time.monotonic() - self._interactive_at < YIELD_S:
            limit = min(limit, self.config.background_batch_size)
        # One priority per batch: an interactive batch is not slowed by background inputs.
        candidates = [i for i, item in enumerate(pending) if item.request.background == background]
        chosen = (self._choose_packed(candidates, limit) if self.adapter.packs_sequences
                  else self._choose_padded(candidates, anchor, limit))
        items = [pending[i] for i in chosen]
        taken = set(chosen)
        self._pending = [item for i, item in enumerate(pending) if i not in taken]
        if background:
            self._background_items -= len(items)
        longest = max(item.tokens for item in items)
        total = sum(item.tokens for item in items)
        now = time.monotonic()
        for item in items:
            request = item.request
            if request.scheduled_at is None:
                request.scheduled_at = now
                self.metrics.queue_wait.observe(now - request.enqueued_at)
            request.last_served = now
        self._in_flight_items += len(items)
        self.metrics.queue_depth.set(len(self._pending))
        cost = self._cost(longest, total, len(items))
        self.metrics.batch_size.observe(len(items))
        self.metrics.batch_tokens.observe(cost)
        return items, cost

    @staticmethod
    def _owed(item: _Item) -> tuple[bool, float, int]:
        """Service order: interactive before background, then the request that waited longest since it last
        had a batch (round robin, so a big request cannot starve small ones nor a stream of new requests the
        rest of a big one)."""
        return item.request.background, item.request.last_served, item.request.seq

    def _choose_packed(self, candidates: list[int], limit: int) -> list[int]:
        """Whole requests in the order they are owed service: packing costs no padding whatever the
        lengths, and a request kept in one batch is answered one batch sooner."""
        pending = self._pending
        order = sorted(candidates, key=lambda i: self._owed(pending[i]))
        chosen, total = [order[0]], pending[order[0]].tokens
        for i in order[1:limit]:
            if total + pending[i].tokens > self.config.max_batch_tokens:
                break
            chosen.append(i)
            total += pending[i].tokens
        return chosen

    def _choose_padded(self, candidates: list[int], anchor: int, limit: int) -> list[int]:
        """The next input of the request owed service most (`anchor`) and the candidates closest to it in
        length (least padding)."""
        pending = self._pending
        order = sorted(candidates, key=lambda i: pending[i].tokens)
        low = high = order.index(anchor)
        anchor_tokens = longest = total = pending[anchor].tokens
        count = 1
        while count < limit:
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
        return order[low : high + 1]

    def _cost(self, longest: int, total: int, count: int) -> int:
        """Tokens a batch costs the model: summed when the adapter packs inputs, else padded."""
        return total if self.adapter.packs_sequences else longest * count

    def _deliver(self, batch: _Batch, prepared: Prepared, results: list[Any]) -> None:
        elapsed = time.perf_counter() - batch.started
        ended_ns = time.time_ns()
        self.metrics.inference_seconds.observe(elapsed)
        self._batch_seconds = elapsed if self._batch_seconds is None else 0.8 * self._batch_seconds + 0.2 * elapsed
        inputs: dict[int, int] = {}
        for item in batch.items:
            inputs[id(item.request)] = inputs.get(id(item.request), 0) + 1
        for item, result, tokens in zip(batch.items, results, prepared.token_counts, strict=True):
            request = item.request
            if request.future.done():
                continue
            if id(request) in inputs:
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
