"""The gateway follows its upstream's gRPC health: NOT_SERVING replicas get no calls, SERVING ends an open
breaker's wait, and a flapping upstream still backs off."""

import asyncio
import time

from grpc_health.v1 import health_pb2

from tests.fakes import FAIL_TEXT
from tests.unit.gateway.conftest import gateway_client

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
RESET_S = 30


async def set_health(worker, status) -> None:
    await worker.health.set(worker.service_name, status)


async def until_state(upstream, state: str, timeout: float) -> float:
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while upstream.breaker.current_state != state:  # noqa: ASYNC110 - polls state the health task sets
            await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_a_not_serving_replica_gets_no_calls_and_serving_again_closes_the_breaker_long_before_reset(
        fake_embedding_worker):
    adapter = fake_embedding_worker.servicer.adapter
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", breaker_fail_max=2,
                              breaker_reset_s=RESET_S) as client:
        upstream = client.app.state.upstreams["embedding"]
        assert (await client.post("/v1/embeddings", json={"input": "warm"})).status_code == 200
        await set_health(fake_embedding_worker, NOT_SERVING)
        async with asyncio.timeout(5):
            while (await client.post("/v1/embeddings", json={"input": "racing the news"})).status_code != 503:
                pass  # calls sent before the channel heard NOT_SERVING may still be served
        forwarded = len(adapter.forwarded)
        async with asyncio.timeout(5):
            while upstream.breaker.current_state != "open":
                reply = await client.post("/v1/embeddings", json={"input": "draining"})
                assert reply.status_code == 503
        assert len(adapter.forwarded) == forwarded, "a NOT_SERVING replica got a call"

        await set_health(fake_embedding_worker, SERVING)
        await until_state(upstream, "half-open", 2)
        assert (await client.post("/v1/embeddings", json={"input": "back"})).status_code == 200
    assert upstream.breaker.current_state == "closed"


async def test_early_trials_of_a_flapping_upstream_back_off(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", breaker_fail_max=1,
                              breaker_reset_s=RESET_S) as client:
        upstream = client.app.state.upstreams["embedding"]
        waits = []
        for _ in range(3):
            assert (await client.post("/v1/embeddings", json={"input": FAIL_TEXT})).status_code == 502
            assert upstream.breaker.current_state == "open"
            await set_health(fake_embedding_worker, NOT_SERVING)
            await until_serving_is(upstream, False)
            await set_health(fake_embedding_worker, SERVING)
            waits.append(await until_state(upstream, "half-open", 6))
    assert waits[0] < 0.5, "the first SERVING after opening tries at once"
    assert 0.8 < waits[1] < 1.6 and 1.8 < waits[2] < 2.6, f"each failed early trial doubles the wait: {waits}"


async def test_a_breaker_opened_while_health_says_serving_waits_out_its_reset(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", breaker_fail_max=1,
                              breaker_reset_s=RESET_S) as client:
        upstream = client.app.state.upstreams["embedding"]
        await until_serving_is(upstream, True)
        assert (await client.post("/v1/embeddings", json={"input": FAIL_TEXT})).status_code == 502
        await asyncio.sleep(0.5)
        assert upstream.breaker.current_state == "open", "no new health news: no early trial"


async def until_serving_is(upstream, serving: bool) -> None:
    async with asyncio.timeout(5):
        while upstream.serving is not serving:  # noqa: ASYNC110 - polls state the health task sets
            await asyncio.sleep(0.01)
