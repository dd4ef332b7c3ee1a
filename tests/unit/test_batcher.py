import asyncio
import threading
import time

import numpy as np
import pytest

from services.runtime.batcher import BatchingConfig, BatchRecord, DynamicBatcher, busy_ns
from services.runtime.errors import DeadlineExpired, Overloaded, Unavailable, WorkerError
from tests.fakes import FAIL_TEXT, FakeAdapter, vector_for


async def started(adapter, **limits) -> DynamicBatcher:
    batcher = DynamicBatcher(adapter, BatchingConfig(**{"max_wait_ms": 5, **limits}))
    await batcher.start()
    return batcher


async def test_concurrent_single_requests_share_forward_passes_and_get_their_own_results():
    adapter = FakeAdapter()
    batcher = await started(adapter, max_batch_size=8)
    texts = [f"text number {i}" for i in range(32)]
    outcomes = await asyncio.gather(*(batcher.submit([text]) for text in texts))
    assert len(adapter.forwarded) < len(texts)
    for text, outcome in zip(texts, outcomes, strict=True):
        np.testing.assert_array_equal(outcome.results[0], vector_for(text, adapter.dimension))
        assert outcome.token_counts == [len(text.split()) + 2]
    await batcher.close(1)


async def test_a_multi_item_request_gets_results_in_input_order():
    adapter = FakeAdapter()
    batcher = await started(adapter, max_batch_size=4)
    texts = [("word " * n).strip() for n in (9, 1, 30, 4, 17, 2, 11)]
    outcome = await batcher.submit(texts)
    for text, result in zip(texts, outcome.results, strict=True):
        np.testing.assert_array_equal(result, vector_for(text, adapter.dimension))
    await batcher.close(1)


async def test_batches_respect_size_and_padded_token_limits():
    adapter = FakeAdapter()
    batcher = await started(adapter, max_batch_size=5, max_batch_tokens=60)
    texts = [("w " * n).strip() for n in range(1, 40)]
    await asyncio.gather(*(batcher.submit([text]) for text in texts))
    for batch in adapter.forwarded:
        assert len(batch) <= 5
        padded = max(adapter.estimate_tokens(t) for t in batch) * len(batch)
        assert padded <= 60 or len(batch) == 1
    assert sorted(t for batch in adapter.forwarded for t in batch) == sorted(texts)
    await batcher.close(1)


async def test_a_cancelled_request_is_never_tokenized_or_forwarded():
    adapter = FakeAdapter()
    batcher = await started(adapter, max_batch_size=1)
    adapter.gate.clear()
    first = asyncio.create_task(batcher.submit(["occupies the device"]))
    second = asyncio.create_task(batcher.submit(["is tokenized while the device is busy"]))
    doomed = asyncio.create_task(batcher.submit(["cancelled while queued"]))
    await asyncio.sleep(0.1)
    doomed.cancel()
    await asyncio.sleep(0.05)
    adapter.gate.set()
    await asyncio.gather(first, second)
    assert all("cancelled while queued" not in batch for batch in adapter.preprocessed)
    assert all("cancelled while queued" not in batch for batch in adapter.forwarded)
    await batcher.close(1)


async def test_an_expired_request_fails_with_deadline_exceeded_and_is_never_forwarded():
    adapter = FakeAdapter()
    batcher = await started(adapter, max_batch_size=1)
    adapter.gate.clear()
    blocker = asyncio.create_task(batcher.submit(["occupies the device"]))
    queued = asyncio.create_task(batcher.submit(["second in line"]))
    await asyncio.sleep(0.05)
    expired = asyncio.create_task(batcher.submit(["too late"], deadline=time.monotonic() + 0.05))
    await asyncio.sleep(0.2)
    adapter.gate.set()
    with pytest.raises(DeadlineExpired):
        await expired
    await asyncio.gather(blocker, queued)
    assert all("too late" not in batch for batch in adapter.forwarded)
    await batcher.close(1)


async def test_a_full_queue_answers_overloaded_at_once():
    adapter = FakeAdapter()
    batcher = await started(adapter, max_batch_size=1, max_queue_items=4)
    adapter.gate.clear()
    held = [asyncio.create_task(batcher.submit([f"t{i}"])) for i in range(4)]
    await asyncio.sleep(0.05)
    with pytest.raises(Overloaded, match="queue is full"):
        await batcher.submit(["one", "two", "three", "four"])
    adapter.gate.set()
    await asyncio.gather(*held)
    await batcher.close(1)


async def test_a_failing_forward_pass_fails_only_the_requests_in_its_batch():
    adapter = FakeAdapter()
    batcher = await started(adapter, max_batch_size=1)
    results = await asyncio.gather(
        batcher.submit(["fine before"]), batcher.submit([FAIL_TEXT]), batcher.submit(["fine after"]),
        return_exceptions=True,
    )
    assert isinstance(results[1], WorkerError) and "internal error" in str(results[1])
    assert not isinstance(results[0], BaseException) and not isinstance(results[2], BaseException)
    await batcher.close(1)


async def test_a_big_request_does_not_starve_a_small_one():
    adapter = FakeAdapter()
    batcher = await started(adapter, max_batch_size=4)
    adapter.gate.clear()
    big = asyncio.create_task(batcher.submit([f"big {i}" for i in range(64)]))
    await asyncio.sleep(0.05)
    small = asyncio.create_task(batcher.submit(["small"]))
    adapter.gate.set()
    await small
    assert not big.done()
    await big
    await batcher.close(1)


async def test_close_drains_queued_work_then_refuses_new_requests():
    adapter = FakeAdapter()
    batcher = await started(adapter, max_batch_size=2)
    pending = [asyncio.create_task(batcher.submit([f"t{i}"])) for i in range(10)]
    await asyncio.sleep(0)
    await asyncio.wait_for(batcher.close(5), 6)
    assert all(task.done() and not task.exception() for task in pending)
    with pytest.raises(Unavailable):
        await batcher.submit(["after close"])


class PackingFakeAdapter(FakeAdapter):
    packs_sequences = True


async def held_batches(adapter, texts: list[str], **limits) -> list[list[str]]:
    """The batches formed when `texts` all wait behind a busy device, as single-text requests."""
    batcher = await started(adapter, **limits)
    adapter.gate.clear()
    blocker = asyncio.create_task(batcher.submit(["occupies the device"]))
    await asyncio.sleep(0.05)
    queued = [asyncio.create_task(batcher.submit([text])) for text in texts]
    await asyncio.sleep(0.05)
    adapter.gate.set()
    await asyncio.wait_for(asyncio.gather(blocker, *queued), 5)
    await batcher.close(1)
    return [batch for batch in adapter.forwarded if batch != ["occupies the device"]]


async def test_an_item_waits_up_to_max_wait_for_company():
    adapter = FakeAdapter()
    batcher = await started(adapter, max_batch_size=8, max_wait_ms=400)
    first = asyncio.create_task(batcher.submit(["early"]))
    await asyncio.sleep(0.1)
    second = asyncio.create_task(batcher.submit(["late"]))
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert adapter.forwarded == [["early", "late"]]
    await batcher.close(1)


async def test_without_max_wait_an_item_runs_as_soon_as_the_device_is_free():
    adapter = FakeAdapter()
    batcher = await started(adapter, max_batch_size=8, max_wait_ms=0)
    await batcher.submit(["early"])
    await batcher.submit(["late"])
    assert adapter.forwarded == [["early"], ["late"]]
    await batcher.close(1)


async def test_a_full_batch_does_not_wait_for_max_wait():
    adapter = FakeAdapter()
    batcher = await started(adapter, max_batch_size=2, max_wait_ms=60_000)
    await asyncio.wait_for(asyncio.gather(batcher.submit(["one"]), batcher.submit(["two"])), 5)
    assert adapter.forwarded == [["one", "two"]]
    await batcher.close(1)


async def test_packed_batches_are_budgeted_by_summed_not_padded_tokens():
    texts = [("w " * n).strip() for n in (2, 3, 5, 8, 13, 21, 30, 30, 4, 6, 9, 14)]
    budget = 64
    packed = await held_batches(PackingFakeAdapter(), texts, max_batch_size=64, max_batch_tokens=budget)
    estimate = PackingFakeAdapter().estimate_tokens
    assert sorted(t for batch in packed for t in batch) == sorted(texts)
    for batch in packed:
        assert sum(map(estimate, batch)) <= budget or len(batch) == 1
    assert any(max(map(estimate, batch)) * len(batch) > budget for batch in packed), "padding is not charged"
    padded = await held_batches(FakeAdapter(), texts, max_batch_size=64, max_batch_tokens=budget)
    assert all(max(map(estimate, batch)) * len(batch) <= budget or len(batch) == 1 for batch in padded)
    assert len(padded) > len(packed)


async def test_queued_items_are_grouped_with_others_of_similar_length():
    short, long = "short text", ("long " * 40).strip()
    texts = [short if i % 2 else long for i in range(16)]
    batches = await held_batches(FakeAdapter(max_tokens=64), texts, max_batch_size=8, max_batch_tokens=10_000)
    assert sorted(len(batch) for batch in batches) == [8, 8]
    assert all(len(set(batch)) == 1 for batch in batches), batches


async def test_each_outcome_reports_its_queue_wait_and_inference_time():
    adapter = FakeAdapter()
    batcher = await started(adapter, max_batch_size=1)
    adapter.gate.clear()
    began = time.monotonic()
    blocker = asyncio.create_task(batcher.submit(["occupies the device"]))
    await asyncio.sleep(0.05)
    queued = asyncio.create_task(batcher.submit(["waits its turn"]))
    await asyncio.sleep(0.2)
    adapter.gate.set()
    first, second = await asyncio.gather(blocker, queued)
    elapsed_ms = (time.monotonic() - began) * 1000
    assert first.queue_ms < 50 and second.queue_ms >= 150, (first.queue_ms, second.queue_ms)
    assert first.inference_ms >= 150, "the first batch held the device while the gate was closed"
    assert 0 < second.inference_ms < first.inference_ms
    assert second.queue_ms + second.inference_ms <= elapsed_ms
    await batcher.close(1)


class RendezvousAdapter(FakeAdapter):
    """A forward pass that completes only when `parties` passes are running at the same time."""

    def __init__(self, parties: int):
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=5)

    def forward(self, prepared):
        self.barrier.wait()
        return super().forward(prepared)


async def test_two_device_streams_run_two_batches_at_once():
    adapter = RendezvousAdapter(parties=2)
    batcher = await started(adapter, streams=2, max_wait_ms=0)
    first = asyncio.create_task(batcher.submit(["first request"]))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(batcher.submit(["second request"]))
    outcomes = await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert [len(outcome.results) for outcome in outcomes] == [1, 1]
    await batcher.close(1)


async def test_with_two_streams_a_burst_is_split_into_equal_shares():
    adapter = FakeAdapter()
    batcher = await started(adapter, streams=2, max_batch_size=64, max_wait_ms=50)
    texts = [f"caller {i}" for i in range(32)]
    await asyncio.wait_for(asyncio.gather(*(batcher.submit([text]) for text in texts)), 5)
    assert sorted(len(batch) for batch in adapter.forwarded) == [16, 16]
    assert sorted(text for batch in adapter.forwarded for text in batch) == sorted(texts)
    await batcher.close(1)


class HoldingAdapter(FakeAdapter):
    """A forward pass waits while any of its texts is held."""

    def __init__(self, held: set[str]):
        super().__init__()
        self.held = set(held)
        self.changed = threading.Condition()

    def release(self, texts) -> None:
        with self.changed:
            self.held -= set(texts)
            self.changed.notify_all()

    def forward(self, prepared):
        with self.changed:
            self.changed.wait_for(lambda: not self.held & set(prepared.features), timeout=5)
        return super().forward(prepared)


HELD = [f"held {i}" for i in range(8)]


async def one_stream_freed(after: float) -> tuple[HoldingAdapter, DynamicBatcher, asyncio.Task]:
    """Two streams, each running half of a held request of 8; then one stream's half finishes `after` s in."""
    adapter = HoldingAdapter(held=set(HELD))
    batcher = await started(adapter, streams=2, max_batch_size=64, max_wait_ms=0)
    running = asyncio.create_task(batcher.submit(HELD))
    await asyncio.sleep(after)
    assert sorted(map(len, adapter.preprocessed)) == [4, 4]
    adapter.release(adapter.preprocessed[1])
    await asyncio.sleep(0.05)
    return adapter, batcher, running


async def test_a_free_stream_waits_for_its_share_while_the_other_is_busy():
    # After a ~200 ms batch, the free stream waits up to ~100 ms for its share.
    adapter, batcher, running = await one_stream_freed(after=0.2)
    arrivals = []
    for i in range(4):
        arrivals.append(asyncio.create_task(batcher.submit([f"arrives {i}"])))
        await asyncio.sleep(0.005)
    adapter.release(HELD)
    await asyncio.wait_for(asyncio.gather(running, *arrivals), 5)
    # 4 running and 4 arriving one by one: the free stream waited for its share of 4, not the first caller.
    assert [batch for batch in adapter.forwarded if batch[0].startswith("arrives")] == [
        [f"arrives {i}" for i in range(4)]]
    await batcher.close(1)


async def test_packed_batches_take_whole_requests_in_the_order_they_are_owed():
    adapter = PackingFakeAdapter()
    batcher = await started(adapter, max_batch_size=4, max_batch_tokens=10_000)
    adapter.gate.clear()
    blocker = asyncio.create_task(batcher.submit(["occupies the device"]))
    await asyncio.sleep(0.05)
    older = ["a long text " * 9, "short", "a middling text here"]
    newer = ["tiny", "x " * 30]
    requests = [asyncio.create_task(batcher.submit(older))]
    await asyncio.sleep(0.01)
    requests.append(asyncio.create_task(batcher.submit(newer)))
    await asyncio.sleep(0.05)
    adapter.gate.set()
    await asyncio.wait_for(asyncio.gather(blocker, *requests), 5)
    assert adapter.forwarded[1:] == [[*older, newer[0]], [newer[1]]]
    await batcher.close(1)


def test_a_requests_inference_time_counts_overlapping_batches_once():
    def record(start: int, end: int) -> BatchRecord:
        return BatchRecord(batch_id=start, started_ns=start, ended_ns=end, size=1, tokens=1, inputs=1)

    assert busy_ns([record(0, 10), record(20, 25)]) == 15
    assert busy_ns([record(5, 20), record(0, 10)]) == 20
    assert busy_ns([record(0, 30), record(5, 10)]) == 30
    assert busy_ns([]) == 0


async def test_a_lone_request_waits_at_most_half_a_batch_for_company_while_a_stream_is_free():
    adapter, batcher, running = await one_stream_freed(after=0.05)  # the other stream stays busy
    lone = await asyncio.wait_for(batcher.submit(["lone"]), 2)
    assert not running.done() and lone.queue_ms < 100
    adapter.release(HELD)
    await asyncio.wait_for(running, 5)
    await batcher.close(1)


class PackingHoldingAdapter(HoldingAdapter):
    packs_sequences = True


async def test_the_rest_of_a_partly_served_request_goes_before_requests_that_came_after_its_batch():
    adapter = PackingHoldingAdapter(held={"occupies the device", "part 0"})
    batcher = await started(adapter, max_batch_size=4, max_batch_tokens=10_000, max_wait_ms=0)
    blocker = asyncio.create_task(batcher.submit(["occupies the device"]))
    await asyncio.sleep(0.05)
    partial = asyncio.create_task(batcher.submit([f"part {i}" for i in range(6)]))
    await asyncio.sleep(0.05)
    adapter.release(["occupies the device"])  # the next batch takes part 0-3 and holds on part 0
    await asyncio.sleep(0.05)
    newer = [asyncio.create_task(batcher.submit([f"newer {i}"])) for i in range(4)]
    await asyncio.sleep(0.05)
    adapter.release(["part 0"])
    await asyncio.wait_for(asyncio.gather(blocker, partial, *newer), 5)
    assert adapter.forwarded[1] == [f"part {i}" for i in range(4)]
    assert adapter.forwarded[2] == ["part 4", "part 5", "newer 0", "newer 1"]
    await batcher.close(1)


async def test_a_free_stream_waits_for_the_callers_it_just_answered_to_come_back():
    # Closed-loop callers send again as soon as they are answered: a stream that started at once with
    # what queued meanwhile would split the callers into three ever smaller groups, one always queued.
    warm, queued, back = ["warm"], [f"queued {i}" for i in range(4)], [f"back {i}" for i in range(2)]
    adapter = HoldingAdapter(held={*warm, *HELD})
    batcher = await started(adapter, streams=2, max_batch_size=64, max_wait_ms=0)
    warming = asyncio.create_task(batcher.submit(warm))
    await asyncio.sleep(0.2)
    adapter.release(warm)
    await asyncio.wait_for(warming, 5)  # batches take ~200 ms: a free stream waits up to ~100 ms
    running = [asyncio.create_task(batcher.submit([text])) for text in HELD]
    await asyncio.sleep(0.05)
    waiting = [asyncio.create_task(batcher.submit([text])) for text in queued]
    await asyncio.sleep(0.15)  # queued for longer than a free stream's patience
    adapter.release(adapter.preprocessed[1])  # 4 answered, 4 running, 4 queued since long ago
    await asyncio.sleep(0.01)
    returning = [asyncio.create_task(batcher.submit([text])) for text in back]
    await asyncio.sleep(0.05)
    adapter.release(HELD)
    await asyncio.wait_for(asyncio.gather(*running, *waiting, *returning), 5)
    # Its share of 4 running + 4 queued + 4 answered is 6: it waited for two callers to come back.
    assert sorted(adapter.preprocessed[3]) == sorted([*queued, *back])
    await batcher.close(1)


async def test_interactive_requests_go_before_queued_background_work_and_never_share_its_batches():
    adapter = FakeAdapter()
    batcher = await started(adapter, max_batch_size=8)
    adapter.gate.clear()
    blocker = asyncio.create_task(batcher.submit(["occupies the device"]))
    await asyncio.sleep(0.05)
    background = [asyncio.create_task(batcher.submit([f"background {i}"], background=True)) for i in range(6)]
    await asyncio.sleep(0.01)
    interactive = asyncio.create_task(batcher.submit(["interactive"]))
    await asyncio.sleep(0.01)
    adapter.gate.set()
    await asyncio.gather(blocker, interactive, *background)
    assert adapter.forwarded[1] == ["interactive"]
    assert all(not any(text.startswith("background") for text in batch) or "interactive" not in batch
               for batch in adapter.forwarded)
    await batcher.close(1)


async def test_background_batches_stay_small_while_interactive_requests_arrive_and_fill_up_when_idle():
    adapter = FakeAdapter()
    batcher = await started(adapter, max_batch_size=16, background_batch_size=2)
    adapter.gate.clear()
    blocker = asyncio.create_task(batcher.submit(["interactive, occupying the device"]))
    await asyncio.sleep(0.05)
    first = asyncio.create_task(batcher.submit([f"a {i}" for i in range(8)], background=True))
    await asyncio.sleep(0.01)
    adapter.gate.set()
    await asyncio.gather(blocker, first)
    assert [len(batch) for batch in adapter.forwarded[1:]] == [2, 2, 2, 2]
    await asyncio.sleep(0.6)  # no interactive request for longer than the yield window
    adapter.forwarded.clear()
    await batcher.submit([f"b {i}" for i in range(8)], background=True)
    assert [len(batch) for batch in adapter.forwarded] == [8]
    await batcher.close(1)


async def test_background_work_fills_at_most_half_the_queue():
    adapter = FakeAdapter()
    batcher = await started(adapter, max_batch_size=1, max_queue_items=8)
    adapter.gate.clear()
    blocker = asyncio.create_task(batcher.submit(["occupies the device"]))
    await asyncio.sleep(0.05)
    held = asyncio.create_task(batcher.submit([f"b{i}" for i in range(4)], background=True))
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded, match="background work holds half"):
        await batcher.submit(["one more"], background=True)
    interactive = asyncio.create_task(batcher.submit(["i1", "i2", "i3", "i4"]))
    await asyncio.sleep(0.01)
    adapter.gate.set()
    await asyncio.gather(blocker, held, interactive)
    await batcher.close(1)


async def test_with_two_streams_background_work_leaves_one_free_while_interactive_requests_arrive():
    adapter = FakeAdapter()
    batcher = await started(adapter, max_batch_size=8, background_batch_size=1, streams=2)
    await batcher.submit(["interactive, a moment ago"])
    adapter.gate.clear()
    background = [asyncio.create_task(batcher.submit([f"b{i}"], background=True)) for i in range(4)]
    await asyncio.sleep(0.1)
    assert [batch for batch in adapter.preprocessed[1:]] == [["b0"]]  # one stream stays free
    interactive = asyncio.create_task(batcher.submit(["interactive"]))
    await asyncio.sleep(0.1)
    assert adapter.preprocessed[-1] == ["interactive"]
    adapter.gate.set()
    await asyncio.gather(interactive, *background)
    await batcher.close(1)
