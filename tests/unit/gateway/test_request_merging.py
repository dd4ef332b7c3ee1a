"""Concurrent requests with the same options travel as one upstream call; each caller keeps its own answer,
error, deadline and disconnect."""

import asyncio
import logging

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.merging import CallMerger, Mergeable
from tests.unit.gateway.conftest import gateway_client, unused_address
from tests.unit.gateway.test_embeddings_api import normalized
from torchgate.telemetry import request_id
from torchgate.v1 import embedding_pb2


async def upstream_calls(client, code: str) -> float:
    """The gateway's gRPC calls that ended with `code`, over every upstream."""
    text = (await client.get("/metrics")).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "torchgate_gateway_upstream_calls_total" and sample.labels["code"] == code)


def tokens(texts: list[str]) -> int:
    """What the fake adapter counts: words plus two special tokens."""
    return sum(len(text.split()) + 2 for text in texts)


INPUTS = [["alpha"], ["beta gamma", "delta"], ["epsilon zeta eta"], ["theta", "iota", "kappa lambda"],
          ["mu"], ["nu xi", "omicron"]]


@pytest.mark.parametrize(("merge_requests", "expected_calls"), [(8, 1), (2, len(INPUTS) // 2), (1, len(INPUTS))])
async def test_concurrent_requests_share_one_call_and_each_gets_its_own_vectors(fake_embedding_worker,
                                                                                 merge_requests, expected_calls):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", merge_requests=merge_requests) as client:
        before = await upstream_calls(client, "OK")
        replies = await asyncio.gather(*(client.post("/v1/embeddings", json={"input": texts}) for texts in INPUTS))
        calls = await upstream_calls(client, "OK") - before
    assert calls == expected_calls
    for texts, reply in zip(INPUTS, replies, strict=True):
        assert reply.status_code == 200
        body = reply.json()
        assert [item["index"] for item in body["data"]] == list(range(len(texts)))
        for item, text in zip(body["data"], texts, strict=True):
            np.testing.assert_allclose(item["embedding"], normalized(text), rtol=1e-6)
        assert body["usage"] == {"prompt_tokens": tokens(texts), "total_tokens": tokens(texts)}


async def test_only_requests_asking_the_same_merge_and_never_past_the_workers_item_limit(fake_embedding_worker):
    """The fake worker takes 16 items per request: five requests of 4 texts need two calls, and the request
    asking for 3 dimensions a third (without the cache, which asks every worker for whole vectors)."""
    batches = [[f"word{request} {i}" for i in range(4)] for request in range(5)]
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", cache=False) as client:
        before = await upstream_calls(client, "OK")
        replies = await asyncio.gather(
            *(client.post("/v1/embeddings", json={"input": texts}) for texts in batches),
            client.post("/v1/embeddings", json={"input": ["short one"], "dimensions": 3}))
        calls = await upstream_calls(client, "OK") - before
    assert calls == 3
    for texts, reply in zip(batches, replies, strict=False):
        for item, text in zip(reply.json()["data"], texts, strict=True):
            np.testing.assert_allclose(item["embedding"], normalized(text), rtol=1e-6)
    np.testing.assert_allclose(replies[-1].json()["data"][0]["embedding"], normalized("short one", 3), rtol=1e-6)


async def test_one_clients_invalid_input_fails_that_client_alone(fake_embedding_worker):
    """Only the worker counts tokens: the merged call is refused, and each request is then sent on its own."""
    inputs = [["fine"], ["word " * 80], ["also fine", "and this"]]
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        fine, overlong, also_fine = await asyncio.gather(
            *(client.post("/v1/embeddings", json={"input": texts, "truncate": False}) for texts in inputs))
    assert overlong.status_code == 400
    assert "[0] has 82 tokens" in overlong.json()["error"]["message"]
    assert fine.status_code == 200 and also_fine.status_code == 200
    np.testing.assert_allclose(fine.json()["data"][0]["embedding"], normalized("fine"), rtol=1e-6)
    np.testing.assert_allclose(also_fine.json()["data"][1]["embedding"], normalized("and this"), rtol=1e-6)


async def test_a_merged_call_lives_until_its_last_caller_leaves(fake_embedding_worker):
    adapter = fake_embedding_worker.servicer.adapter
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        adapter.gate.clear()
        try:
            blocker = asyncio.create_task(client.post("/v1/embeddings", json={"input": "holds the device"}))
            while not adapter.preprocessed:  # noqa: ASYNC110 - the device thread appends it
                await asyncio.sleep(0.01)
            # The three merge into one call queued behind the blocker; two of them leave.
            leaving = [asyncio.create_task(client.post("/v1/embeddings", json={"input": text}))
                       for text in ("gone one", "gone two")]
            staying = asyncio.create_task(client.post("/v1/embeddings", json={"input": "stays"}))
            await asyncio.sleep(0.2)
            cancelled_before = await upstream_calls(client, "CLIENT_CANCELLED")
            for task in leaving:
                task.cancel()
            await asyncio.gather(*leaving, return_exceptions=True)
            assert await upstream_calls(client, "CLIENT_CANCELLED") == cancelled_before
            # A second merged call whose callers all leave is cancelled, and its texts never reach the model.
            abandoned = [asyncio.create_task(client.post("/v1/embeddings", json={"input": text}))
                         for text in ("abandoned one", "abandoned two")]
            await asyncio.sleep(0.2)
            for task in abandoned:
                task.cancel()
            await asyncio.gather(*abandoned, return_exceptions=True)
            assert await upstream_calls(client, "CLIENT_CANCELLED") == cancelled_before + 1
        finally:
            adapter.gate.set()
        await blocker
        stays = await staying
    np.testing.assert_allclose(stays.json()["data"][0]["embedding"], normalized("stays"), rtol=1e-6)
    forwarded = [text for batch in adapter.forwarded for text in batch]
    assert "stays" in forwarded and not {"abandoned one", "abandoned two"} & set(forwarded)


async def test_classifications_merge_and_split_alike(fake_classifier_worker):
    texts = ["hello there", "bye now", "is it raining?", "hello again"]
    async with gateway_client(unused_address(), classifier=f"127.0.0.1:{fake_classifier_worker.port}") as client:
        alone = [(await client.post("/v1/classify", json={"text": text})).json() for text in texts]
        before = await upstream_calls(client, "OK")
        together = await asyncio.gather(*(client.post("/v1/classify", json={"text": text},
                                                      headers={"Cache-Control": "no-cache"}) for text in texts))
        calls = await upstream_calls(client, "OK") - before
    assert calls == 1
    assert [reply.json() for reply in together] == alone
    assert {reply.headers["X-Torchgate-Cache"] for reply in together} == {"hits=0 misses=1"}


class RequestIds(logging.Handler):
    """The request id each worker access line was written under."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.ids: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("rpc /torchgate.v1.EmbeddingService/Embed"):
            self.ids.append(request_id.get())


async def test_the_worker_names_every_request_of_a_merged_call(fake_embedding_worker):
    access = logging.getLogger("torchgate.access")
    handler, level = RequestIds(), access.level
    access.addHandler(handler)
    access.setLevel(logging.DEBUG)
    try:
        async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
            await asyncio.gather(*(client.post("/v1/embeddings", json={"input": f"text {name}"},
                                               headers={"X-Request-ID": name}) for name in ("first", "second")))
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    assert handler.ids == ["first,second"]


async def test_a_request_that_sets_other_inputs_too_travels_alone():
    """Only the merged field may differ; a request with another repeated field set is never merged."""
    sent = []

    async def send(method, request, timeout, request_ids):
        sent.append(list(request.texts))
        return request

    merger = CallMerger(send, max_requests=8)
    by_texts = Mergeable("texts", lambda reply, start, stop: list(reply.texts[start:stop]))
    both = embedding_pb2.EmbedRequest(texts=["a"], token_ids=[embedding_pb2.TokenIds(ids=[1])])
    replies = await asyncio.gather(*(merger.call("Embed", request, 1.0, by_texts, "id", 16) for request in (
        both, embedding_pb2.EmbedRequest(texts=["b"]), embedding_pb2.EmbedRequest(texts=["c"]))))
    assert sorted(sent) == [["a"], ["b", "c"]]
    assert replies[0] is both and replies[1:] == [["b"], ["c"]]
