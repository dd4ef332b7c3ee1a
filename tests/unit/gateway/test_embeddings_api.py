import base64

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import FAIL_TEXT, vector_for
from tests.unit.gateway.conftest import gateway_client, unused_address


def normalized(text: str, dimension: int = 8) -> np.ndarray:
    vector = vector_for(text, 8)[:dimension]
    return vector / np.linalg.norm(vector)


async def test_float_and_base64_encodings_carry_the_same_normalized_vectors(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        as_float = await client.post("/v1/embeddings", json={"input": ["alpha", "beta gamma"]})
        as_base64 = await client.post("/v1/embeddings", json={"input": ["alpha", "beta gamma"],
                                                               "encoding_format": "base64"})
    assert as_float.status_code == 200 and as_base64.status_code == 200
    body = as_float.json()
    assert body["object"] == "list" and body["model"] == "test/fake-model"
    assert body["usage"] == {"prompt_tokens": 3 + 4, "total_tokens": 3 + 4}
    for index, (item, text) in enumerate(zip(body["data"], ["alpha", "beta gamma"], strict=True)):
        assert item.keys() == {"object", "index", "embedding"}
        assert (item["object"], item["index"]) == ("embedding", index)
        np.testing.assert_allclose(item["embedding"], normalized(text), rtol=1e-6)
    for index, (item, text) in enumerate(zip(as_base64.json()["data"], ["alpha", "beta gamma"], strict=True)):
        assert item.keys() == {"object", "index", "embedding"}
        assert (item["object"], item["index"]) == ("embedding", index)
        decoded = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
        np.testing.assert_allclose(decoded, normalized(text), rtol=1e-6)


async def test_a_single_string_input_and_reduced_dimensions(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        reply = await client.post("/v1/embeddings", json={"input": "alpha", "dimensions": 3})
    [item] = reply.json()["data"]
    np.testing.assert_allclose(item["embedding"], normalized("alpha", 3), rtol=1e-6)


async def test_invalid_input_is_refused_at_the_edge_with_what_to_fix(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        blank = await client.post("/v1/embeddings", json={"input": ["fine", "  "]})
        too_many = await client.post("/v1/embeddings", json={"input": ["x"] * 17})
        too_wide = await client.post("/v1/embeddings", json={"input": "x", "dimensions": 9})
        wrong_model = await client.post("/v1/embeddings", json={"input": "x", "model": "gpt-4"})
        wrong_shape = await client.post("/v1/embeddings", json={"input": [1, "two"]})
        overlong = await client.post("/v1/embeddings", json={"input": "word " * 80, "truncate": False})
    assert blank.status_code == 422
    assert blank.json()["error"] == {"type": "invalid_request_error",
                                     "message": "input.1: must contain a non-whitespace character"}
    assert too_many.status_code == 422 and "at most 16" in too_many.json()["error"]["message"]
    assert too_wide.status_code == 422 and "has 8" in too_wide.json()["error"]["message"]
    assert wrong_model.status_code == 404 and "'test/fake-model'" in wrong_model.json()["error"]["message"]
    assert wrong_shape.status_code == 422 and wrong_shape.json()["error"]["type"] == "invalid_request_error"
    assert overlong.status_code == 400 and "has 82 tokens" in overlong.json()["error"]["message"]


async def test_a_failing_model_is_a_generic_502_without_internals(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        reply = await client.post("/v1/embeddings", json={"input": FAIL_TEXT})
    assert reply.status_code == 502
    assert "simulated" not in reply.text and "Traceback" not in reply.text


async def test_a_dead_upstream_is_a_fast_503_with_retry_after():
    async with gateway_client(unused_address()) as client:
        reply = await client.post("/v1/embeddings", json={"input": "x"})
        ready = await client.get("/health/ready")
    assert reply.status_code == 503 and reply.headers["Retry-After"] == "1"
    assert reply.json()["error"]["type"] == "upstream_unavailable"
    assert ready.status_code == 503 and ready.json()["upstreams"]["embedding"]["status"] == "UNREACHABLE"


def requests_counted(metrics_text: str, route: str, status: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if (sample.name == "torchgate_gateway_requests_total"
                    and sample.labels == {"route": route, "status": status}):
                return sample.value
    return 0.0


async def test_readiness_and_models_report_the_serving_worker(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        before = (await client.get("/metrics")).text
        for _ in range(3):
            await client.post("/v1/embeddings", json={"input": "counted"})
        await client.post("/v1/embeddings", json={"input": ""})
        ready = await client.get("/health/ready")
        models = await client.get("/v1/models")
        live = await client.get("/health/live")
        metrics = await client.get("/metrics")
    assert ready.status_code == 503, "the reranking upstream is down in this test"
    assert ready.json()["upstreams"]["reranking"]["status"] == "UNREACHABLE"
    assert ready.json()["upstreams"]["embedding"] | {"latency_ms": 0} == {
        "status": "SERVING", "breaker": "closed", "failures": 0, "in_flight": 0, "latency_ms": 0}
    [model] = models.json()["data"]
    assert model["id"] == "test/fake-model" and model["dimension"] == 8 and model["task"] == "embedding"
    assert live.status_code == 200
    counted = {status: requests_counted(metrics.text, "/v1/embeddings", status)
               - requests_counted(before, "/v1/embeddings", status) for status in ("200", "422")}
    assert counted == {"200": 3, "422": 1}


async def test_api_keys_guard_the_api_but_not_health(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", api_keys="k1,k2") as client:
        missing = await client.post("/v1/embeddings", json={"input": "x"})
        wrong = await client.post("/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer nope"})
        right = await client.post("/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer k2"})
        health = await client.get("/health/live")
    assert missing.status_code == 401 and wrong.status_code == 401
    assert right.status_code == 200 and health.status_code == 200


async def test_oversized_bodies_get_413(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", max_body_bytes=2048) as client:
        reply = await client.post("/v1/embeddings", json={"input": "x" * 4096})
    assert reply.status_code == 413 and reply.json()["error"]["type"] == "request_too_large"


async def test_a_bad_timeout_header_is_a_400(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        reply = await client.post("/v1/embeddings", json={"input": "x"}, headers={"X-Request-Timeout": "soon"})
    assert reply.status_code == 400 and "X-Request-Timeout" in reply.json()["error"]["message"]
