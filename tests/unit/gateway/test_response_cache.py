"""The response cache: per-input hits, options that must not collide, answers identical to the worker's,
concurrent misses computed once, the memory bound, and Redis shared, poisoned, killed and password-protected."""

import asyncio
import os
import resource
import subprocess
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.cache import MAX_ENTRY_SHARE, MemoryTier
from services.embedding.servicer import EmbeddingServicer
from services.embedding.settings import EmbeddingSettings
from tests.fakes import FAIL_TEXT, FakeAdapter
from tests.network import released_port
from tests.redis_server import redis_server
from tests.unit.gateway.conftest import gateway_client, unused_address
from tests.unit.gateway.test_embeddings_api import normalized
from tests.workers import serving, started

NO_CACHE = {"Cache-Control": "no-cache"}
ROOT = Path(__file__).resolve().parents[3]


def cache_header(reply) -> tuple[int, int]:
    hits, misses = (int(part.split("=")[1]) for part in reply.headers["X-Torchgate-Cache"].split())
    return hits, misses


def forwarded(worker) -> list[str]:
    """Every text (or pair) the worker's model was given."""
    return [item for batch in worker.servicer.adapter.forwarded for item in batch]


def metric(text: str, name: str, **labels) -> float:
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


async def test_a_batch_sends_only_its_new_inputs_and_answers_all_in_order(fake_embedding_worker):
    labels = {"task": "embedding", "model": "test/fake-model"}
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        earlier = (await client.get("/metrics")).text
        first = await client.post("/v1/embeddings", json={"input": ["alpha", "beta gamma"]})
        before = len(forwarded(fake_embedding_worker))
        second = await client.post("/v1/embeddings", json={"input": ["beta gamma", "delta", "alpha", "alpha"]})
        sent = forwarded(fake_embedding_worker)[before:]
        metrics = (await client.get("/metrics")).text
    assert cache_header(first) == (0, 2)
    assert cache_header(second) == (3, 1) and sent == ["delta"]
    body = second.json()
    for item, text in zip(body["data"], ["beta gamma", "delta", "alpha", "alpha"], strict=True):
        np.testing.assert_allclose(item["embedding"], normalized(text), rtol=1e-6)
    # Every input's tokens count, cached or not (words + 2 in the fake model).
    assert body["usage"]["prompt_tokens"] == 4 + 3 + 3 + 3
    for name, count in (("torchgate_gateway_cache_hits_total", 3), ("torchgate_gateway_cache_misses_total", 3)):
        assert metric(metrics, name, **labels) - metric(earlier, name, **labels) == count
    assert metric(metrics, "torchgate_gateway_cache_bytes", **labels) > metric(earlier, "torchgate_gateway_cache_bytes",
                                                                               **labels)


async def test_cached_answers_equal_the_workers_in_every_format(fake_embedding_worker, fake_reranking_worker,
                                                                fake_classifier_worker):
    """Each request three times: without the cache, as a miss, as a hit; the bodies must be identical."""
    texts = ["hello there", "bye now", "is it raining?"]
    requests = [
        ("/v1/embeddings", {"input": texts}), ("/v1/embeddings", {"input": texts, "dimensions": 3}),
        ("/v1/embeddings", {"input": texts, "encoding_format": "base64", "dimensions": 5}),
        ("/v1/embeddings", {"input": [[1, 2, 3], [4, 5]]}),
        ("/v2/embed", {"texts": texts, "embedding_types": ["float", "int8", "uint8", "binary", "ubinary", "base64"],
                       "output_dimension": 8}),
        ("/v1/rerank", {"query": "is it there", "documents": texts, "top_n": 2, "return_documents": True}),
        ("/v1/rerank", {"query": "is it there", "documents": texts, "raw_scores": True}),
        ("/v2/rerank", {"query": "is it there", "documents": texts}),
        ("/v1/classify", {"texts": texts, "top_k": 2}), ("/api/v1/intents/classify/batch", {"texts": texts}),
    ]
    addresses = dict(reranking=f"127.0.0.1:{fake_reranking_worker.port}",
                     classifier=f"127.0.0.1:{fake_classifier_worker.port}")
    uncached = []
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", cache=False, **addresses) as client:
        for path, body in requests:
            uncached.append((await client.post(path, json=body)).json())
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", **addresses) as client:
        for (path, body), expected in zip(requests, uncached, strict=True):
            miss, hit = await client.post(path, json=body), await client.post(path, json=body)
            assert miss.status_code == hit.status_code == 200, (path, miss.text)
            assert cache_header(hit)[1] == 0, (path, hit.headers)
            for reply in (miss, hit):
                reply_body, expected_body = reply.json(), dict(expected)
                if path.startswith("/v2/"):  # Cohere's response id is fresh every time
                    reply_body.pop("id"), expected_body.pop("id")
                assert reply_body == expected_body, path


async def test_options_that_change_results_never_share_entries(fake_embedding_worker, fake_reranking_worker,
                                                                fake_classifier_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}",
                              reranking=f"127.0.0.1:{fake_reranking_worker.port}",
                              classifier=f"127.0.0.1:{fake_classifier_worker.port}") as client:
        async def misses(path, body) -> int:
            reply = await client.post(path, json=body)
            assert reply.status_code == 200, reply.text
            return cache_header(reply)[1]

        embeds = [{"input": ["12 13"]}, {"input": ["12 13"], "truncate": False}, {"input": [[12, 13]]},
                  {"input": [[12, 13]], "truncate": False}]
        assert [await misses("/v1/embeddings", body) for body in embeds] == [1, 1, 1, 1]
        cohere = [{"texts": ["12 13"], "input_type": kind} for kind in ("search_query", "search_document")]
        assert [await misses("/v2/embed", body) for body in cohere] == [1, 1]
        # Formats and dimensions derive from one entry.
        assert await misses("/v1/embeddings", {"input": ["12 13"], "dimensions": 2, "encoding_format": "base64"}) == 0
        reranks = [{"query": "a b", "documents": ["a", "b"]}, {"query": "a c", "documents": ["a", "b"]},
                   {"query": "a b", "documents": ["a", "b"], "max_tokens_per_doc": 3}]
        assert [await misses("/v2/rerank", body) for body in reranks] == [2, 2, 2]
        assert await misses("/v1/rerank", {"query": "a b", "documents": ["b", "a"], "raw_scores": True}) == 0
        classifies = [{"texts": ["hello"]}, {"texts": ["hello"], "top_k": 1},
                      {"texts": ["hello"], "force_intent": True}]
        assert [await misses("/v1/classify", body) for body in classifies] == [1, 1, 1]


async def test_concurrent_identical_misses_compute_once_and_no_cache_neither_reads_nor_waits(fake_embedding_worker):
    adapter = fake_embedding_worker.servicer.adapter
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        computing = client.app.state.cache._computing
        adapter.gate.clear()
        try:
            first = asyncio.create_task(client.post("/v1/embeddings", json={"input": ["same text"]}))
            await until(lambda: len(computing) == 1)
            followers = [asyncio.create_task(client.post("/v1/embeddings", json={"input": ["same text", "other"]}))
                         for _ in range(4)]
            await until(lambda: len(computing) == 2)
            await asyncio.sleep(0.2)  # the other three followers find both inputs being computed
        finally:
            adapter.gate.set()
        replies = [await first, *[await follower for follower in followers]]
        assert forwarded(fake_embedding_worker).count("same text") == 1
        assert forwarded(fake_embedding_worker).count("other") == 1
        assert cache_header(replies[0]) == (0, 1)
        assert sorted(cache_header(reply) for reply in replies[1:]) == [(1, 1), (2, 0), (2, 0), (2, 0)]
        refreshed = await client.post("/v1/embeddings", json={"input": ["same text"]}, headers=NO_CACHE)
        assert cache_header(refreshed) == (0, 1) and forwarded(fake_embedding_worker).count("same text") == 2
    for reply in replies:
        np.testing.assert_allclose(reply.json()["data"][0]["embedding"], normalized("same text"), rtol=1e-6)


async def until(condition, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polls state the gateway's tasks set
            await asyncio.sleep(0.01)


async def test_a_request_that_failed_leaves_nothing_behind(fake_embedding_worker):
    """A miss whose call fails is not cached; whoever waited on it computes it itself."""
    adapter = fake_embedding_worker.servicer.adapter
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        computing = client.app.state.cache._computing
        adapter.gate.clear()
        try:
            doomed = asyncio.create_task(client.post("/v1/embeddings", json={"input": ["wait for me"]}))
            await until(lambda: len(computing) == 1)
            waiting = asyncio.create_task(client.post("/v1/embeddings", json={"input": ["wait for me"]}))
            await asyncio.sleep(0.2)
            doomed.cancel()
            await asyncio.gather(doomed, return_exceptions=True)
        finally:
            adapter.gate.set()
        reply = await waiting
    assert reply.status_code == 200 and cache_header(reply) == (0, 1)
    np.testing.assert_allclose(reply.json()["data"][0]["embedding"], normalized("wait for me"), rtol=1e-6)


async def test_waiters_get_the_owners_upstream_failure_at_once_and_compute_nothing_again(fake_embedding_worker):
    """The owner of a fill fails for the upstream's reasons (the worker's device failed): its waiters get the same
    502 the moment it does, without a second call, however long their own deadline."""
    adapter = fake_embedding_worker.servicer.adapter
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", breaker_fail_max=100) as client:
        computing = client.app.state.cache._computing
        adapter.gate.clear()
        try:
            owner = asyncio.create_task(client.post("/v1/embeddings", json={"input": [FAIL_TEXT]}))
            await until(lambda: len(computing) == 1)
            waiters = [asyncio.create_task(client.post("/v1/embeddings", json={"input": [FAIL_TEXT], "timeout": 60}))
                       for _ in range(3)]
            await asyncio.sleep(0.2)
        finally:
            adapter.gate.set()
        async with asyncio.timeout(5):
            replies = [await owner, *[await waiter for waiter in waiters]]
    assert [reply.status_code for reply in replies] == [502] * 4
    assert {reply.json()["error"]["type"] for reply in replies} == {"upstream_error"}
    assert forwarded(fake_embedding_worker).count(FAIL_TEXT) == 1, "the waiters sent nothing of their own"


def test_the_memory_tier_keeps_its_bound_and_refuses_entries_too_large_for_it():
    tier = MemoryTier(64 * 1024)
    for index in range(1000):
        tier.put(index.to_bytes(32, "little"), os.urandom(100), ("embedding", "m"))
        assert tier.bytes <= tier.max_bytes
    assert tier.get((999).to_bytes(32, "little")) is not None and tier.get((0).to_bytes(32, "little")) is None
    kept = len(tier)
    tier.put(b"k" * 32, os.urandom(64 * 1024 // MAX_ENTRY_SHARE), ("embedding", "m"))
    assert tier.get(b"k" * 32) is None and len(tier) == kept


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


@pytest.fixture
async def wide_embedding_worker():
    """384-dimensional vectors and 1,000 texts per request: the shape of the real default model."""
    settings = EmbeddingSettings(port=0, metrics_port=0, max_items_per_request=1000, max_batch_size=1000,
                                 max_batch_tokens=100_000, max_queue_items=100_000, grace_period_s=1)
    async with serving(EmbeddingServicer(RecordlessAdapter(dimension=384), settings)) as worker:
        yield worker


class RecordlessAdapter(FakeAdapter):
    def forward(self, prepared):
        return np.stack([np.full(self.dimension, hash(text) % 1000, dtype=np.float32) + 1
                         for text in prepared.features])


async def test_200_000_unique_texts_stay_within_the_memory_bound(wide_embedding_worker):
    bound = 16 * 1024 * 1024
    async with gateway_client(f"127.0.0.1:{wide_embedding_worker.port}", cache_bytes=bound) as client:
        async def embed(start: int) -> None:
            reply = await client.post("/v1/embeddings", json={"encoding_format": "base64", "input": [
                f"unique text number {start + offset}" for offset in range(1000)]})
            assert reply.status_code == 200

        for start in range(0, 20_000, 1000):  # the bound reached: what follows may only replace entries
            await embed(start)
        baseline = rss_bytes()
        for start in range(20_000, 200_000, 1000):
            await embed(start)
        grown = rss_bytes() - baseline
        cache = client.app.state.cache
        assert cache.memory.bytes <= bound
        # Unbounded, 180,000 more 384-d entries would take ~320 MB.
        assert grown < 48 * 1024 * 1024, f"RSS grew {grown / 2**20:.0f} MiB"


async def test_gateways_share_results_through_redis_and_ignore_poisoned_values(fake_embedding_worker):
    address = f"127.0.0.1:{fake_embedding_worker.port}"
    texts = [f"shared {index}" for index in range(10)]
    with redis_server() as server:
        async with gateway_client(address, cache_url=server.url) as first:
            assert cache_header(await first.post("/v1/embeddings", json={"input": texts})) == (0, 10)
            await first.app.state.cache.close()  # its Redis writes are done
        sent = len(forwarded(fake_embedding_worker))
        async with gateway_client(address, cache_url=server.url) as second:
            earlier = (await second.get("/metrics")).text
            reply = await second.post("/v1/embeddings", json={"input": texts})
            metrics = (await second.get("/metrics")).text
        assert cache_header(reply) == (10, 0) and len(forwarded(fake_embedding_worker)) == sent
        redis_hits = [metric(text, "torchgate_gateway_cache_hits_total", tier="redis") for text in (earlier, metrics)]
        assert redis_hits[1] - redis_hits[0] == 10
        store = server.client()
        names = sorted(store.keys("tgc1:*"))
        assert len(names) == 10
        store.set(names[0], store.get(names[0])[:-3])  # truncated
        store.set(names[1], b"\x00" * len(store.get(names[1])))  # poisoned: wrong checksum
        store.set(names[2], store.get(names[3]))  # another input's value
        async with gateway_client(address, cache_url=server.url) as third:
            reply = await third.post("/v1/embeddings", json={"input": texts})
        assert cache_header(reply) == (7, 3)
        for item, text in zip(reply.json()["data"], texts, strict=True):
            np.testing.assert_allclose(item["embedding"], normalized(text), rtol=1e-6)


async def test_redis_killed_under_load_fails_no_request_and_is_found_again(fake_embedding_worker):
    with redis_server(password="s3cret pass") as server:
        async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", cache_url=server.url,
                                  cache_bytes=1) as client:  # too small to keep anything: every hit is Redis'
            async def load(round_: int) -> list[int]:
                replies = await asyncio.gather(*(client.post("/v1/embeddings", json={"input": [
                    f"text {round_ % 5} {index}"]}) for index in range(8)))
                return [reply.status_code for reply in replies]

            errors_before = metric((await client.get("/metrics")).text, "torchgate_gateway_redis_errors_total")
            statuses = []
            for round_ in range(10):
                statuses += await load(round_)
            await asyncio.gather(*client.app.state.cache._writes)  # the writes run after the answers
            assert len(server.client().keys("tgc1:*")) == 40
            server.kill()
            for round_ in range(30):
                statuses += await load(round_)
            assert set(statuses) == {200}
            metrics = (await client.get("/metrics")).text
            assert metric(metrics, "torchgate_gateway_redis_errors_total") > errors_before
            server.start()
            await asyncio.sleep(2.5)  # the breaker's reset time
            for round_ in range(10):
                statuses += await load(100 + round_)
            await client.app.state.cache.close()
            assert set(statuses) == {200} and server.client().keys("tgc1:*")


@pytest.fixture
def dev_certs(tmp_path) -> Path:
    """The development CA and server certificate of scripts/certs.sh (SAN 127.0.0.1)."""
    subprocess.run(["bash", str(ROOT / "scripts/certs.sh"), str(tmp_path)], check=True, capture_output=True)
    return tmp_path


async def test_a_tls_redis_with_a_password_is_shared(fake_embedding_worker, dev_certs):
    address = f"127.0.0.1:{fake_embedding_worker.port}"
    with redis_server(password="p4ss", certs=dev_certs) as server:
        async with gateway_client(address, cache_url=server.url) as first:
            await first.post("/v1/embeddings", json={"input": ["over tls"]})
            await first.app.state.cache.close()
        async with gateway_client(address, cache_url=server.url) as second:
            reply = await second.post("/v1/embeddings", json={"input": ["over tls"]})
    assert server.url.startswith("rediss://") and cache_header(reply) == (1, 0)


async def test_a_changed_model_never_answers_from_the_old_ones_entries():
    port = released_port()

    def worker(adapter):
        return EmbeddingServicer(adapter, EmbeddingSettings(port=port, metrics_port=0, grace_period_s=0))

    old = await started(worker(FakeAdapter()))
    try:
        async with gateway_client(f"127.0.0.1:{port}") as client:
            assert cache_header(await client.post("/v1/embeddings", json={"input": ["stable text"]})) == (0, 1)
            await old.stop(0)
            old = await started(worker(Salted()))
            headers = []
            for _ in range(200):  # every answer is the new model's, and it is soon cached under its fingerprint
                reply = await client.post("/v1/embeddings", json={"input": ["stable text"]})
                if reply.status_code == 200:
                    np.testing.assert_allclose(reply.json()["data"][0]["embedding"],
                                               normalized("salted stable text"), rtol=1e-6)
                    headers.append(cache_header(reply))
                    if headers[-1] == (1, 0):
                        break
                await asyncio.sleep(0.05)
            assert headers[-1] == (1, 0) and headers[0] == (0, 1)
    finally:
        await old.stop(0)


class Salted(FakeAdapter):
    """Another model: other vectors, another dtype (so another fingerprint)."""

    def load(self):
        described = super().load()
        described.dtype = "bfloat16"
        return described

    def forward(self, prepared):
        prepared.features = ["salted " + text for text in prepared.features]
        return super().forward(prepared)


async def test_the_cache_can_be_switched_off(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", cache=False) as client:
        replies = [await client.post("/v1/embeddings", json={"input": ["again"]}) for _ in range(2)]
    assert [cache_header(reply) for reply in replies] == [(0, 1), (0, 1)]
    assert forwarded(fake_embedding_worker).count("again") == 2


async def test_classifications_and_rerank_scores_are_cached_per_input(fake_reranking_worker, fake_classifier_worker):
    async with gateway_client(unused_address(), reranking=f"127.0.0.1:{fake_reranking_worker.port}",
                              classifier=f"127.0.0.1:{fake_classifier_worker.port}") as client:
        await client.post("/v1/classify", json={"texts": ["hello you", "bye you"]})
        reply = await client.post("/v1/classify", json={"texts": ["bye you", "what?", "hello you"]})
        assert cache_header(reply) == (2, 1)
        assert [result["intent"] for result in reply.json()["results"]] == ["farewell", "question", "greeting"]
        await client.post("/v1/rerank", json={"query": "red car", "documents": ["a red car", "blue"]})
        reply = await client.post("/v1/rerank", json={"query": "red car", "documents": ["blue", "red", "a red car"]})
        assert cache_header(reply) == (2, 1)
        assert [result["index"] for result in reply.json()["results"]] == [2, 1, 0]
