"""Stages of the task pipeline that the door table (test_every_door.py) does not pin: a name several models
answer to, the upstream stage without the cache (deadlines, merged calls split per caller, what the cache
header says), and a task's own limits check before anything is sent."""

import asyncio

import pytest
from prometheus_client import REGISTRY

from services.classifier.servicer import ClassifierServicer
from services.classifier.settings import ClassifierSettings
from services.embedding.servicer import EmbeddingServicer
from services.embedding.settings import EmbeddingSettings
from tests.fakes import FakeAdapter, FakeIntentAdapter
from tests.unit.gateway.conftest import gateway_client, unused_address
from tests.workers import serving

WORKER = {"port": 0, "metrics_port": 0, "grace_period_s": 1}


@pytest.fixture
async def two_embedders_of_one_short_name():
    async with serving(EmbeddingServicer(FakeAdapter(model_id="org-a/shared"), EmbeddingSettings(**WORKER))) as a, \
            serving(EmbeddingServicer(FakeAdapter(model_id="org-b/shared"), EmbeddingSettings(**WORKER))) as b:
        yield f"127.0.0.1:{a.port};127.0.0.1:{b.port}"


async def test_a_short_name_two_models_answer_to_is_a_400_naming_both_and_full_ids_still_route(
        two_embedders_of_one_short_name):
    async with gateway_client(two_embedders_of_one_short_name) as client:
        ambiguous = await client.post("/v1/embeddings", json={"input": "x", "model": "shared"})
        full = [await client.post("/v1/embeddings", json={"input": "x", "model": name})
                for name in ("org-a/shared", "org-b/shared")]
    error = ambiguous.json()["error"]
    assert ambiguous.status_code == 400 and error["type"] == "invalid_request_error"
    assert error["message"] == ("model 'shared' names several models: 'org-a/shared', 'org-b/shared'; "
                                "use the full id"), "one task: no word of several tasks"
    assert [reply.json()["model"] for reply in full] == ["org-a/shared", "org-b/shared"]


def classifier_calls() -> float:
    return REGISTRY.get_sample_value("torchgate_gateway_upstream_calls_total",
                                     {"upstream": "classifier", "code": "OK"}) or 0.0


async def test_without_the_cache_deadlines_reach_the_worker_and_merged_calls_split_per_caller(
        fake_classifier_worker, fake_reranking_worker, fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}",
                              reranking=f"127.0.0.1:{fake_reranking_worker.port}",
                              classifier=f"127.0.0.1:{fake_classifier_worker.port}", cache=False) as client:
        texts = [["hello there friend"], ["bye", "hello you ?"]]
        alone = [await client.post("/v1/classify", json={"texts": batch}) for batch in texts]
        before = classifier_calls()
        together = await asyncio.gather(*(client.post("/v1/classify", json={"texts": batch}) for batch in texts))
        assert classifier_calls() - before == 1, "the two requests travelled as one call"
        for single, merged in zip(alone, together, strict=True):
            assert merged.json() == single.json() and merged.headers["X-Torchgate-Cache"] == \
                f"hits=0 misses={len(single.json()['results'])}"
        for worker, path, body in ((fake_classifier_worker, "/v1/classify", {"texts": ["held"]}),
                                   (fake_reranking_worker, "/v1/rerank", {"query": "q", "documents": ["held"]}),
                                   (fake_embedding_worker, "/tokenize", {"inputs": ["held"]})):
            worker.servicer.adapter.gate.clear()
            try:
                async with asyncio.timeout(5):
                    late = await client.post(path, json={**body, "timeout": 0.3})
            finally:
                worker.servicer.adapter.gate.set()
            if path == "/tokenize":  # tokenization does not wait for the device: it answers within the deadline
                assert late.status_code == 200
            else:
                assert late.status_code == 504 and late.json()["error"]["type"] == "timeout", (path, late.text)


async def test_tokenize_refuses_what_the_worker_published_it_does_not_take_before_sending_it(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        too_many = await client.post("/tokenize", json={"inputs": [f"text {i}" for i in range(17)]})
        plain = await client.post("/tokenize", json={"inputs": ["two words"], "add_special_tokens": False})
    assert too_many.status_code == 422 and too_many.json()["error"]["message"] == \
        "inputs has 17 items; at most 16 per request: split the request"
    assert too_many.json()["error"]["upstream"] == "embedding"
    assert plain.json() == [[{"id": 3, "text": "two", "special": False, "start": 0, "stop": 3},
                             {"id": 5, "text": "words", "special": False, "start": 4, "stop": 9}]]


async def test_a_classifier_pool_that_is_down_is_a_503_on_every_door():
    async with serving(ClassifierServicer(FakeIntentAdapter(), ClassifierSettings(**WORKER))) as worker:
        address = f"127.0.0.1:{worker.port}"
    async with gateway_client(unused_address(), classifier=address) as client:
        replies = [await client.post("/v1/classify", json={"texts": ["hi"]}),
                   await client.post("/api/v1/intents/classify", json={"text": "hi"})]
    assert [reply.status_code for reply in replies] == [503, 503]
    assert all(reply.headers["Retry-After"] for reply in replies)
