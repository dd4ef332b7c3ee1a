"""The gateway's promises that a one-line change could silently break: each has a test that fails then."""

import asyncio
import json
import logging

import grpc
import pytest
from prometheus_client import REGISTRY

from gateway.errors import ApiError, error_from_grpc
from tests.unit.gateway.conftest import gateway_client, unused_address
from torchgate.telemetry import request_id
from torchgate.v1 import embedding_pb2


async def test_the_bulkhead_answers_429_beyond_max_concurrency(fake_embedding_worker):
    adapter = fake_embedding_worker.servicer.adapter
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", max_concurrency=2) as client:
        adapter.gate.clear()
        try:
            held = [asyncio.create_task(client.post("/v1/embeddings", json={"input": f"held {i}"})) for i in range(2)]
            upstream = client.app.state.upstreams["embedding"]
            async with asyncio.timeout(5):
                while upstream.in_flight < 2:  # noqa: ASYNC110 - waits for the held calls to be in flight
                    await asyncio.sleep(0.01)
            refused = await client.post("/v1/embeddings", json={"input": "one too many"})
        finally:
            adapter.gate.set()
        assert [reply.status_code for reply in await asyncio.gather(*held)] == [200, 200]
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["type"] == "overloaded"


async def test_a_half_open_breaker_lets_exactly_one_trial_through(fake_embedding_worker):
    adapter = fake_embedding_worker.servicer.adapter
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", breaker_fail_max=1,
                              breaker_reset_s=0.2) as client:
        upstream = client.app.state.upstreams["embedding"]
        upstream.breaker.open()
        await asyncio.sleep(0.25)
        adapter.gate.clear()
        forwarded_before = len(adapter.forwarded)
        try:
            trial = asyncio.create_task(client.post("/v1/embeddings", json={"input": "trial"}))
            async with asyncio.timeout(5):
                while upstream.in_flight < 1:  # noqa: ASYNC110 - waits for the trial to be in flight
                    await asyncio.sleep(0.01)
            others = await asyncio.gather(*(client.post("/v1/embeddings", json={"input": f"o {i}"})
                                            for i in range(5)))
        finally:
            adapter.gate.set()
        assert (await trial).status_code == 200
    assert [reply.status_code for reply in others] == [503] * 5
    assert len(adapter.forwarded) - forwarded_before == 1, "only the trial reached the worker"
    assert upstream.breaker.current_state == "closed"


@pytest.mark.parametrize(
    ("body_timeout", "header", "expected"),
    [(0.5, "7", 0.5), (None, "7", 7.0), (None, None, 11.0)],
)
async def test_the_deadline_is_the_bodys_then_the_headers_then_the_default(fake_embedding_worker, body_timeout,
                                                                            header, expected):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", timeout_s=11.0) as client:
        upstream = client.app.state.upstreams["embedding"]
        seen = []
        real_embed = upstream.stub.Embed

        async def recording_embed(request, timeout, **options):
            seen.append(timeout)
            return await real_embed(request, timeout=timeout, **options)

        upstream.stub.Embed = recording_embed
        body = {"input": "x"} | ({"timeout": body_timeout} if body_timeout else {})
        reply = await client.post("/v1/embeddings", json=body,
                                  headers={"X-Request-Timeout": header} if header else {})
    assert reply.status_code == 200 and seen == [expected]


@pytest.mark.parametrize(
    ("code", "status"),
    [(grpc.StatusCode.CANCELLED, 504), (grpc.StatusCode.OUT_OF_RANGE, 400),
     (grpc.StatusCode.FAILED_PRECONDITION, 400), (grpc.StatusCode.UNIMPLEMENTED, 502),
     (grpc.StatusCode.DATA_LOSS, 502), (grpc.StatusCode.PERMISSION_DENIED, 502)],
)
def test_the_remaining_grpc_codes_map_as_documented(code, status):
    assert error_from_grpc(code, "detail", "embedding").status == status


async def test_a_stalled_worker_with_client_deadlines_below_the_floor_never_opens_the_breaker(
        fake_embedding_worker):
    adapter = fake_embedding_worker.servicer.adapter
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", breaker_fail_max=2,
                              breaker_min_deadline_s=1.0) as client:
        adapter.gate.clear()
        try:
            short = [await client.post("/v1/embeddings", json={"input": f"s {i}", "timeout": 0.05})
                     for i in range(4)]
            upstream = client.app.state.upstreams["embedding"]
            assert upstream.breaker.current_state == "closed"
            long_enough = [await client.post("/v1/embeddings", json={"input": f"l {i}", "timeout": 1.0})
                           for i in range(2)]
        finally:
            adapter.gate.set()
    assert [reply.status_code for reply in short] == [504] * 4
    assert [reply.status_code for reply in long_enough] == [504, 504]
    assert upstream.breaker.current_state == "open", "deadlines of at least the floor do count"


async def test_a_dead_upstream_never_has_its_limits(fake_embedding_worker):
    async with gateway_client(unused_address()) as client:
        assert client.app.state.upstreams["embedding"].limits is None
        schema = (await client.get("/openapi.json")).json()
    embeddings = schema["components"]["schemas"]["EmbeddingsRequest"]["properties"]["input"]
    assert "maxItems" not in json.dumps(embeddings), "no number is published before the worker said it"


async def test_the_schema_publishes_the_workers_own_limits(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        schema = (await client.get("/openapi.json")).json()
    properties = schema["components"]["schemas"]["EmbeddingsRequest"]["properties"]
    as_texts = properties["input"]["oneOf"][0]["anyOf"]
    array = next(branch for branch in as_texts if branch["type"] == "array")
    assert array["maxItems"] == 16 and array["items"]["maxLength"] == 16384
    assert properties["dimensions"]["maximum"] == 8


async def test_every_response_carries_the_request_id_and_the_worker_logs_it(fake_embedding_worker):
    worker_lines = []

    class WorkerAccessLog(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("rpc "):
                worker_lines.append(request_id.get())

    access = logging.getLogger("torchgate.access")
    handler, level = WorkerAccessLog(), access.level
    access.addHandler(handler)
    access.setLevel(logging.DEBUG)
    try:
        async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", api_keys="k") as client:
            served = await client.post("/v1/embeddings", json={"input": "x"},
                                       headers={"X-Request-ID": "abc-1", "Authorization": "Bearer k"})
            refused = await client.post("/v1/embeddings", json={"input": "x"}, headers={"X-Request-ID": "abc-2"})
            probe = await client.get("/health/live")
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    assert served.status_code == 200 and served.headers["X-Request-ID"] == "abc-1"
    assert refused.status_code == 401 and refused.headers["X-Request-ID"] == "abc-2"
    assert len(probe.headers["X-Request-ID"]) == 32
    assert "abc-1" in worker_lines, worker_lines


async def test_a_request_the_worker_refuses_reaches_it_exactly_once(fake_embedding_worker):
    """gRPC's retry policy retries UNAVAILABLE only: a refusal is the client's to fix, not to resend."""
    refused = {"method": "/torchgate.v1.EmbeddingService/Embed", "code": "INVALID_ARGUMENT"}
    before = REGISTRY.get_sample_value("torchgate_worker_requests_total", refused) or 0
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        upstream = client.app.state.upstreams["embedding"]
        with pytest.raises(ApiError) as raised:
            await upstream.call("Embed", embedding_pb2.EmbedRequest(texts=[]))
    assert raised.value.status == 400

    def seen() -> float:
        return (REGISTRY.get_sample_value("torchgate_worker_requests_total", refused) or 0) - before

    # The worker counts a call as its handler returns, which may be just after the caller heard the status.
    async with asyncio.timeout(5):
        while seen() < 1:  # noqa: ASYNC110 - polls a counter the worker's interceptor sets
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    assert seen() == 1
