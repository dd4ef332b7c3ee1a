"""Fault injection with real processes on loopback: kill, stall, overload, drain, lose a replica."""

import asyncio
import signal
import time
from collections import Counter

import httpx
import pytest

from tests.e2e.processes import closed_loop, p99_ms, report, start_gateway, start_worker, wait_serving

DEADLINE_S = 4.0
RESET_S = 2.0


@pytest.fixture
def services(tmp_path):
    started = []

    def keep(started_service):
        """Stop it at teardown; takes a Service or start_worker's (Service, port)."""
        started.append(started_service[0] if isinstance(started_service, tuple) else started_service)
        return started_service

    yield keep, tmp_path
    for service in reversed(started):
        service.stop()


async def wait_for_200(url: str, timeout: float) -> float:
    """Seconds until an embedding request succeeds again."""
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=DEADLINE_S + 2) as client:
        while time.monotonic() - started < timeout:
            reply = await client.post("/v1/embeddings", json={"input": "are you back?"},
                                      headers={"X-Request-Timeout": "2"})
            if reply.status_code == 200:
                return time.monotonic() - started
            await asyncio.sleep(0.1)
    pytest.fail(f"no 200 within {timeout}s")


def breaker(url: str) -> str:
    return httpx.get(f"{url}/health/ready", timeout=5).json()["upstreams"]["embedding"]["breaker"]


async def test_kill_9_under_32_callers_answers_everyone_opens_the_breaker_and_recovers(services):
    keep, logs = services
    worker, port = keep(start_worker(logs))
    wait_serving(port)
    _, url = start_gateway([port], logs, breaker_reset_s=str(RESET_S))
    keep(_)
    load = asyncio.create_task(closed_loop(url, 32, 6, DEADLINE_S))
    await asyncio.sleep(2)
    worker.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    answers = await load
    statuses = Counter(a.status for a in answers)
    assert set(statuses) <= {200, 503, 504}, statuses
    assert statuses[0] == 0, "a request hung"
    assert max(a.elapsed for a in answers) <= DEADLINE_S + 1
    assert breaker(url) in ("open", "half-open")
    fast_fails = [a for a in answers if a.status == 503 and a.started > killed_at + 0.5]
    assert fast_fails and all(a.retry_after for a in fast_fails)
    assert p99_ms(fast_fails) < 1000, "answers while the breaker is open must be immediate"

    keep(start_worker(logs, port))
    restarted_at = time.monotonic()
    wait_serving(port)
    recovered = await wait_for_200(url, 60)
    assert breaker(url) == "closed"
    report("kill -9", sent=len(answers), answered=len(answers) - statuses[0], hung=statuses[0],
           ok=statuses[200], unavailable=statuses[503], timeout=statuses[504],
           fast_fail_p99_ms=round(p99_ms(fast_fails), 1),
           recover_after_restart_s=round(time.monotonic() - restarted_at, 2),
           recover_after_serving_s=round(recovered, 2))


async def test_a_stalled_worker_gives_504_within_the_deadline_opens_the_breaker_and_recovers(services):
    keep, logs = services
    worker, port = keep(start_worker(logs))
    wait_serving(port)
    gateway, url = start_gateway([port], logs, breaker_reset_s=str(RESET_S))
    keep(gateway)
    await wait_for_200(url, 30)
    worker.signal(signal.SIGSTOP)
    answers = await closed_loop(url, 8, 4, 1.0)
    statuses = Counter(a.status for a in answers)
    assert statuses[0] == 0 and set(statuses) <= {503, 504}, statuses
    assert statuses[504] >= 5, ("the first calls wait out their deadline", statuses)
    assert max(a.elapsed for a in answers) <= 1.0 + 1
    assert breaker(url) in ("open", "half-open")
    worker.signal(signal.SIGCONT)
    recovered = await wait_for_200(url, 30)
    report("SIGSTOP", sent=len(answers), hung=statuses[0], timeout=statuses[504], unavailable=statuses[503],
           recover_after_sigcont_s=round(recovered, 2))


async def test_an_overloaded_worker_answers_429_and_keeps_serving(services):
    keep, logs = services
    _, port = keep(start_worker(logs, max_queue_items="8", max_batch_size="4"))
    wait_serving(port)
    gateway, url = start_gateway([port], logs)
    keep(gateway)
    answers = await closed_loop(url, 48, 4, 10.0, texts=["overload " * 20] * 4)
    statuses = Counter(a.status for a in answers)
    assert statuses[0] == 0 and set(statuses) <= {200, 429}, statuses
    assert statuses[429] > 0 and statuses[200] > 0
    assert all(a.retry_after for a in answers if a.status == 429)
    assert breaker(url) == "closed", "overload must not open the breaker"
    report("overload", sent=len(answers), ok=statuses[200], overloaded=statuses[429])


async def test_sigterm_drains_in_flight_work_while_the_other_replica_takes_new_requests(services):
    keep, logs = services
    (draining, first), (_, second) = keep(start_worker(logs)), keep(start_worker(logs))
    ports = [first, second]
    wait_serving(*ports)
    gateway, url = start_gateway(ports, logs)
    keep(gateway)
    load = asyncio.create_task(closed_loop(url, 16, 6, DEADLINE_S))
    await asyncio.sleep(2)
    draining.signal(signal.SIGTERM)
    exit_code = await asyncio.to_thread(draining.wait, 15)
    answers = await load
    statuses = Counter(a.status for a in answers)
    assert exit_code == 0
    assert statuses[0] == 0 and set(statuses) <= {200, 503}, statuses
    assert statuses[200] > 0
    report("SIGTERM drain", sent=len(answers), ok=statuses[200], unavailable=statuses[503], exit_code=exit_code)


async def test_losing_one_of_two_replicas_costs_at_most_the_in_flight_requests(services):
    keep, logs = services
    (victim, first), (_, second) = keep(start_worker(logs)), keep(start_worker(logs))
    ports = [first, second]
    wait_serving(*ports)
    gateway, url = start_gateway(ports, logs)
    keep(gateway)
    concurrency = 16
    load = asyncio.create_task(closed_loop(url, concurrency, 6, DEADLINE_S))
    await asyncio.sleep(2)
    victim.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    answers = await load
    failures = [a for a in answers if a.status != 200]
    assert len(failures) <= concurrency, Counter(a.status for a in failures)
    assert all(a.status == 200 for a in answers if a.started > killed_at + 1)
    report("lose a replica", sent=len(answers), failed=len(failures),
           ok_after_kill=sum(1 for a in answers if a.started > killed_at and a.status == 200))
