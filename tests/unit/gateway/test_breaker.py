import asyncio

from tests.fakes import FAIL_TEXT
from tests.unit.gateway.conftest import gateway_client, unused_address


async def test_async_failures_open_the_breaker_and_it_answers_at_once_with_retry_after():
    async with gateway_client(unused_address(), breaker_fail_max=3, breaker_reset_s=30) as client:
        failures = [await client.post("/v1/embeddings", json={"input": "x"}) for _ in range(3)]
        blocked = await client.post("/v1/embeddings", json={"input": "x"})
        ready = await client.get("/health/ready")
    assert [reply.status_code for reply in failures] == [503, 503, 503]
    assert blocked.status_code == 503 and "circuit breaker is open" in blocked.json()["error"]["message"]
    assert blocked.json()["error"] | {"message": ""} == {"type": "upstream_unavailable", "upstream": "embedding",
                                                         "message": ""}
    assert 28 <= int(blocked.headers["Retry-After"]) <= 30
    assert ready.json()["upstreams"]["embedding"]["breaker"] == "open"


async def test_client_errors_never_open_the_breaker(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", breaker_fail_max=2) as client:
        for _ in range(3):
            assert (await client.post("/v1/embeddings", json={"input": ""})).status_code == 422
            overlong = {"input": "word " * 80, "truncate": False}
            assert (await client.post("/v1/embeddings", json=overlong)).status_code == 400
        assert (await client.post("/v1/embeddings", json={"input": "fine"})).status_code == 200
        upstream = client.app.state.upstreams["embedding"]
        assert upstream.breaker.current_state == "closed"


async def test_internal_errors_open_the_breaker_and_a_half_open_trial_closes_it(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", breaker_fail_max=2,
                              breaker_reset_s=0.3) as client:
        for _ in range(2):
            assert (await client.post("/v1/embeddings", json={"input": FAIL_TEXT})).status_code == 502
        upstream = client.app.state.upstreams["embedding"]
        assert upstream.breaker.current_state == "open"
        blocked = await client.post("/v1/embeddings", json={"input": "fine"})
        assert blocked.status_code == 503
        assert blocked.headers["Retry-After"] == "1", "under a second left: retry in 1 s, never 0"
        await asyncio.sleep(0.35)
        assert (await client.post("/v1/embeddings", json={"input": "fine"})).status_code == 200
        assert upstream.breaker.current_state == "closed"
