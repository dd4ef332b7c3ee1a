"""Hostile and careless clients against the real mesh: every one gets a clear 4xx, nobody else pays for it."""

import asyncio
import json
import socket
import time
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.conftest import running_mesh
from tests.e2e.processes import start_gateway
from tests.network import refusing_port, released_port, worker_channel
from torchgate.v1 import (
    classifier_pb2,
    classifier_pb2_grpc,
    embedding_pb2,
    embedding_pb2_grpc,
    gpu_pb2,
    gpu_pb2_grpc,
    reranking_pb2,
    reranking_pb2_grpc,
)

LONE = "a\ud800"
HUGE_NAME = "m" * 20_000
CLIENT_STATUSES = {400, 401, 404, 405, 413, 415, 422, 431}
CLIENT_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE,
                grpc.StatusCode.RESOURCE_EXHAUSTED}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    scrape_port = released_port()
    with running_mesh(tmp_path_factory.mktemp("hostile") / "run",
                      TORCHGATE_RERANKING_METRICS_PORT=str(scrape_port)) as running:
        running.ports["reranking_metrics"] = scrape_port
        yield running


def json_body(value) -> bytes:
    """JSON as a client library would send it, lone surrogates escaped as \\udxxx."""
    return json.dumps(value).encode()


# (method, path, body, extra headers); every one must get a 4xx with a message.
REST_CASES = [
    ("POST", "/v1/embeddings", {"input": LONE}, {}),
    ("POST", "/v1/embeddings", {"input": ["fine", LONE]}, {}),
    ("POST", "/v1/embeddings", {"input": "x", "model": HUGE_NAME}, {}),
    ("POST", "/v1/embeddings", {"input": "x", "model": LONE}, {}),
    ("POST", "/v1/embeddings", {"input": "x", "model": "text-embedding-3-large"}, {}),
    ("POST", "/v1/embeddings", {"input": "x", "dimensions": 2**32}, {}),
    ("POST", "/v1/embeddings", {"input": "x", "dimensions": 2**64}, {}),
    ("POST", "/v1/embeddings", {"input": "x", "dimensions": 0}, {}),
    ("POST", "/v1/embeddings", {"input": "x", "dimensions": 385}, {}),
    ("POST", "/v1/embeddings", {"input": "x", "dimensions": "wide"}, {}),
    ("POST", "/v1/embeddings", {"input": []}, {}),
    ("POST", "/v1/embeddings", {"input": ""}, {}),
    ("POST", "/v1/embeddings", {"input": " \t\n"}, {}),
    ("POST", "/v1/embeddings", {"input": None}, {}),
    ("POST", "/v1/embeddings", {"input": {"text": "x"}}, {}),
    ("POST", "/v1/embeddings", {"input": ["x"] * 300}, {}),
    ("POST", "/v1/embeddings", {"input": "x" * 20_000}, {}),
    ("POST", "/v1/embeddings", {"input": "word " * 400, "truncate": False}, {}),
    ("POST", "/v1/embeddings", {"input": "x", "encoding_format": "hex"}, {}),
    ("POST", "/v1/embeddings", {"input": "x", "timeout": 0}, {}),
    ("POST", "/v1/embeddings", {"input": "x", "timeout": 0.0001}, {}),
    ("POST", "/v1/embeddings", {"input": "x", "timeout": -1}, {}),
    ("POST", "/v1/embeddings", {"input": "x", "timeout": 1e9}, {}),
    ("POST", "/v1/embeddings", {"input": "x"}, {"X-Request-Timeout": "nan"}),
    ("POST", "/v1/embeddings", {"input": "x"}, {"X-Request-Timeout": "-5"}),
    ("POST", "/v1/embeddings", b'{"input": "x"', {}),
    ("POST", "/v1/embeddings", b"[1, 2, 3]", {}),
    ("POST", "/v1/embeddings", b"\xff\xfe\x00garbage", {}),
    ("POST", "/v1/embeddings", b"input=x", {"Content-Type": "application/x-www-form-urlencoded"}),
    ("POST", "/v1/embeddings", {"input": "x"}, {"X-Padding": "p" * 20_000}),
    ("POST", "/v1/rerank", {"query": LONE, "documents": ["d"]}, {}),
    ("POST", "/v1/rerank", {"query": "q", "documents": ["d", LONE]}, {}),
    ("POST", "/v1/rerank", {"query": "q", "documents": [{"text": LONE}]}, {}),
    ("POST", "/v1/rerank", {"query": "q", "documents": []}, {}),
    ("POST", "/v1/rerank", {"query": "", "documents": ["d"]}, {}),
    ("POST", "/v1/rerank", {"query": "q", "documents": ["d"], "top_n": 2**32}, {}),
    ("POST", "/v1/rerank", {"query": "q", "documents": ["d"], "top_n": 0}, {}),
    ("POST", "/v1/rerank", {"query": "q", "documents": ["d"] * 1001}, {}),
    ("POST", "/v1/rerank", {"query": "q", "documents": [{"text": 5}]}, {}),
    ("POST", "/v1/rerank", {"query": "q", "documents": ["d"], "model": HUGE_NAME}, {}),
    ("POST", "/v1/classify", {}, {}),
    ("POST", "/v1/classify", {"text": "a", "texts": ["b"]}, {}),
    ("POST", "/v1/classify", {"text": None}, {}),
    ("POST", "/v1/classify", {"text": LONE}, {}),
    ("POST", "/v1/classify", {"texts": ["ok", LONE]}, {}),
    ("POST", "/v1/classify", {"texts": ["ok"] * 101}, {}),
    ("POST", "/v1/classify", {"text": "ok", "top_k": 1000}, {}),
    ("POST", "/v1/classify", {"text": "." * 9000}, {}),
    ("POST", "/v1/classify", {"text": "ok", "labels": ["a", LONE]}, {}),
    ("POST", "/v1/classify", {"text": "ok", "labels": [{"name": "a", "examples": [" "]}, "b"]}, {}),
    ("POST", "/v1/classify", {"text": "ok", "labels": [f"l{i}" for i in range(300)]}, {}),
    ("POST", "/v1/classify", {"text": "ok", "labels": ["a", "b"], "hypothesis_template": "{0}"}, {}),
    ("POST", "/v1/zero-shot", {"inputs": "ok", "parameters": {"candidate_labels": []}}, {}),
    ("POST", "/v1/zero-shot", {"inputs": ["ok"] * 50, "parameters": {"candidate_labels": [f"l{i}" for i in range(90)]}},
     {}),
    ("POST", "/hf-inference/models/nobody", {"inputs": "ok", "parameters": {"candidate_labels": ["a"]}}, {}),
    ("POST", "/api/v1/intents/classify", {"text": ""}, {}),
    ("POST", "/api/v1/intents/classify/batch", {"texts": ["hi"] * 101}, {}),
    ("POST", "/api/v1/intents/classify/batch", {"texts": []}, {}),
    ("GET", "/v1/gpu/devices/4294967296", None, {}),
    ("GET", "/v1/gpu/devices/-1", None, {}),
    ("GET", "/v1/gpu/devices/first", None, {}),
    ("GET", "/v1/gpu/devices/4294967295", None, {}),
    ("GET", "/v1/nothing-here", None, {}),
    ("DELETE", "/v1/embeddings", None, {}),
    ("GET", "/v1/rerank", None, {}),
]


def test_every_hostile_request_gets_a_clear_4xx_and_the_mesh_stays_ready(mesh):
    answers = []
    with httpx.Client(base_url=mesh.url, timeout=30) as client:
        for method, path, body, headers in REST_CASES:
            content = body if isinstance(body, bytes) else None if body is None else json_body(body)
            sent_headers = {"Content-Type": "application/json", **headers} if content is not None else headers
            reply = client.request(method, path, content=content, headers=sent_headers)
            answers.append((method, path, reply))
        wrong = [(m, p, r.status_code, r.text[:200]) for m, p, r in answers if r.status_code not in CLIENT_STATUSES]
        assert not wrong, wrong
        for method, path, reply in answers:
            error = reply.json()["error"]
            assert error["message"] and len(reply.content) < 2048, (method, path, reply.text[:200])
            assert "Traceback" not in reply.text and HUGE_NAME not in reply.text
        not_allowed = [reply for method, _, reply in answers if method == "DELETE"]
        assert not_allowed[0].status_code == 405 and "POST" in not_allowed[0].headers["Allow"]
        announced = announce_huge_body(mesh.ports["gateway"])
        assert announced.startswith(b"HTTP/1.1 413"), announced[:200]
        ready = client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert {u["breaker"] for u in ready.json()["upstreams"].values()} == {"closed"}


def announce_huge_body(port: int) -> bytes:
    """Headers announcing 64 MB, and no body at all: the answer must come from the headers alone."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 67108864\r\n\r\n")
        return sock.recv(4096)


def invalid_utf8_embed_request() -> bytes:
    """EmbedRequest{texts: [b"\\xff\\xfe"]} on the wire: field 1, length-delimited, not UTF-8."""
    return bytes([0x0A, 2, 0xFF, 0xFE])


async def test_direct_grpc_callers_get_client_codes_with_bounded_messages(mesh):
    ports = mesh.ports
    async with (worker_channel(ports["embedding"]) as embedding,
                worker_channel(ports["reranking"]) as reranking,
                worker_channel(ports["classifier"]) as classifier,
                worker_channel(ports["gpu"]) as gpu):
        embed = embedding_pb2_grpc.EmbeddingServiceStub(embedding).Embed
        rerank = reranking_pb2_grpc.RerankingServiceStub(reranking).Rerank
        classify = classifier_pb2_grpc.ClassifierServiceStub(classifier).Classify
        gpu_stub = gpu_pb2_grpc.GpuServiceStub(gpu)
        raw_embed = embedding.unary_unary("/torchgate.v1.EmbeddingService/Embed")
        calls = [
            embed(embedding_pb2.EmbedRequest(texts=[])),
            embed(embedding_pb2.EmbedRequest(texts=["ok", "   "])),
            embed(embedding_pb2.EmbedRequest(texts=["ok"], model=HUGE_NAME)),
            embed(embedding_pb2.EmbedRequest(texts=["ok"], dimensions=2**32 - 1)),
            embed(embedding_pb2.EmbedRequest(texts=["x"] * 257)),
            embed(embedding_pb2.EmbedRequest(texts=["x" * 16_385])),
            raw_embed(invalid_utf8_embed_request()),
            raw_embed(b"\xff" * 64),
            rerank(reranking_pb2.RerankRequest(query="q", documents=[])),
            rerank(reranking_pb2.RerankRequest(query="", documents=["d"])),
            classify(classifier_pb2.ClassifyRequest(texts=["ok"] * 101)),
            classify(classifier_pb2.ClassifyRequest(texts=["ok"], model=HUGE_NAME)),
            gpu_stub.GetDevice(gpu_pb2.GetDeviceRequest(index=2**32 - 1)),
            gpu_stub.Reserve(gpu_pb2.ReserveRequest(service="", memory_mb=1)),
            gpu_stub.GetStatus(gpu_pb2.GetStatusRequest(), metadata=(("x-pad", "p"),)),
        ]
        outcomes = []
        for call in calls[:-1]:
            try:
                await asyncio.wait_for(call, 30)
                outcomes.append(None)
            except grpc.aio.AioRpcError as error:
                outcomes.append(error)
        assert all(outcome is not None for outcome in outcomes), outcomes
        assert {outcome.code() for outcome in outcomes} <= CLIENT_CODES, [o.code() for o in outcomes]
        assert all(outcome.details() and len(outcome.details()) <= 1024 for outcome in outcomes)
        assert outcomes[6].code() == grpc.StatusCode.INVALID_ARGUMENT and "UTF-8" in outcomes[6].details()
        assert (await asyncio.wait_for(calls[-1], 30)).device_count >= 0


def metric(text: str, name: str) -> float:
    """Sum of a Prometheus metric's samples in a scrape."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


async def test_abandoned_requests_leave_no_work_behind(mesh):
    documents = [f"document number {i} about nothing in particular" for i in range(1000)]
    async with httpx.AsyncClient(base_url=mesh.url, timeout=0.5) as client:
        abandoned = [client.post("/v1/rerank", json={"query": "which document?", "documents": documents})
                     for _ in range(4)]
        results = await asyncio.gather(*abandoned, return_exceptions=True)
    assert all(isinstance(result, httpx.TimeoutException) for result in results), results
    scrape_url = f"http://127.0.0.1:{mesh.ports['reranking_metrics']}/metrics"
    give_up = time.monotonic() + 10
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            scrape = (await client.get(scrape_url)).text
            ready = (await client.get(f"{mesh.url}/health/ready")).json()
            queued = metric(scrape, "torchgate_batcher_queue_depth")
            serving = metric(scrape, 'torchgate_worker_requests_in_flight{method="/torchgate.v1.RerankingService')
            if queued == 0 and serving == 0 and ready["upstreams"]["reranking"]["in_flight"] == 0:
                break
            assert time.monotonic() < give_up, f"still queued {queued}, in flight {serving}: work for nobody"
            await asyncio.sleep(0.2)
    assert ready["upstreams"]["reranking"]["breaker"] == "closed"


async def test_absurdly_small_deadlines_never_open_a_breaker(mesh):
    async with httpx.AsyncClient(base_url=mesh.url, timeout=30) as client:
        replies = await asyncio.gather(*(
            client.post("/v1/embeddings", json={"input": f"text {i} " * 200, "timeout": 0.01}) for i in range(30)),
            *(client.post("/v1/rerank", json={"query": "q", "documents": ["d"] * 50},
                          headers={"X-Request-Timeout": "0.01"}) for _ in range(30)))
        ready = await client.get("/health/ready")
    assert {reply.status_code for reply in replies} <= {200, 504}
    assert 504 in {reply.status_code for reply in replies}
    assert ready.status_code == 200
    assert {u["breaker"] for u in ready.json()["upstreams"].values()} == {"closed"}
    assert {u["failures"] for u in ready.json()["upstreams"].values()} == {0}


async def test_pathological_classify_texts_never_stall_the_classifiers_health(mesh):
    # Distinct texts, past the response cache: every one of them reaches the classifier.
    texts = ["." * 8189 + f"{index:02d}x" for index in range(100)]
    latencies = []
    async with (httpx.AsyncClient(base_url=mesh.url, timeout=120) as client,
                worker_channel(mesh.ports["classifier"]) as channel):
        health = health_pb2_grpc.HealthStub(channel)
        load = asyncio.gather(*(client.post("/v1/classify", json={"texts": texts},
                                            headers={"Cache-Control": "no-cache"}) for _ in range(3)))
        while not load.done():
            started = time.perf_counter()
            reply = await health.Check(health_pb2.HealthCheckRequest(service="torchgate.v1.ClassifierService"),
                                       timeout=5)
            latencies.append(time.perf_counter() - started)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            await asyncio.sleep(0.05)
        replies = await load
    assert [reply.status_code for reply in replies] == [200, 200, 200]
    assert len(latencies) >= 3 and max(latencies) < 0.25, latencies


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_30_mb_chunked_body_is_a_413_and_memory_stays_bounded(mesh):
    gateway = mesh.pid("gateway")
    before = rss_mb(gateway)
    chunk = b'{"input": ["' + b"x" * (1024 * 1024)

    def body():
        yield chunk
        for _ in range(29):
            yield b"x" * (1024 * 1024)
        yield b'"]}'

    with httpx.Client(base_url=mesh.url, timeout=30) as client:
        try:
            reply = client.post("/v1/embeddings", content=body(), headers={"Content-Type": "application/json"})
            status = reply.status_code
        except httpx.WriteError:
            status = 413  # the gateway answered 413 and closed while the client was still sending
        after = rss_mb(gateway)
        assert client.get("/health/live").status_code == 200
    assert status == 413
    assert after - before < 60, f"gateway RSS grew {after - before:.0f} MB"


def test_api_keys_are_checked_before_the_body_is_read(tmp_path):
    gateway, url = start_gateway([refusing_port()], tmp_path, env={"TORCHGATE_GATEWAY_API_KEYS": "secret"})
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            before = rss_mb(gateway.process.pid)
            try:
                status = client.post("/v1/embeddings", content=b'{"input": "' + b"x" * (7 * 1024 * 1024) + b'"}',
                                     headers={"Content-Type": "application/json"}).status_code
            except httpx.WriteError:
                status = 401  # answered before the upload finished, as intended
            grown = rss_mb(gateway.process.pid) - before
            allowed = client.post("/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer secret"})
    finally:
        gateway.stop()
    assert status == 401 and allowed.status_code == 503, "the key opens the door; no worker is behind it"
    assert grown < 7, f"an unauthenticated body was buffered ({grown:.1f} MB)"
