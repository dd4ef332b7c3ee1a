"""Several models behind one gateway: one pool per model, routed by `model`, failing alone."""

import pytest

from gateway.registry import pool_name, pool_targets
from services.embedding.servicer import EmbeddingServicer
from services.embedding.settings import EmbeddingSettings
from tests.fakes import FakeAdapter
from tests.unit.gateway.conftest import gateway_client, serving

SMALL, LARGE = "org/small-embedder", "test/fake-model"


@pytest.fixture
async def second_embedding_worker():
    settings = EmbeddingSettings(port=0, metrics_port=0, grace_period_s=1)
    async with serving(EmbeddingServicer(FakeAdapter(dimension=32, model_id=SMALL), settings)) as worker:
        yield worker


def test_a_model_is_named_by_its_id_or_the_last_part_of_it_a_trailing_slash_aside():
    from gateway.contract import Limits

    assert Limits("/models/bge-small/", 1, 1, 1).names() == {"/models/bge-small/", "bge-small"}
    assert Limits("BAAI/bge-small-en", 1, 1, 1).names() == {"BAAI/bge-small-en", "bge-small-en"}
    fallback = Limits("fallback:cosine:org/minilm", 1, 1, 1, stands_in_for="cross-encoder/ms-marco")
    # A derived id is its embedder's name with a prefix: it answers in full only, never to the embedder's name.
    assert fallback.names() == {"fallback:cosine:org/minilm", "cross-encoder/ms-marco", "ms-marco"}


def test_pools_are_separated_by_semicolons_and_named_in_order():
    assert pool_targets("10.0.0.1:1,10.0.0.2:1; dns:///bge:50052 ;") == ["10.0.0.1:1,10.0.0.2:1", "dns:///bge:50052"]
    assert [pool_name("embedding", i) for i in range(3)] == ["embedding", "embedding-2", "embedding-3"]
    with pytest.raises(ValueError, match="at least one address"):
        pool_targets(" ; ")


async def test_requests_are_routed_by_model_and_one_pools_failure_stays_its_own(fake_embedding_worker,
                                                                              second_embedding_worker):
    addresses = f"127.0.0.1:{fake_embedding_worker.port};127.0.0.1:{second_embedding_worker.port}"
    async with gateway_client(addresses, breaker_fail_max=1) as client:

        async def served(model: str | None) -> tuple[str, int]:
            body = {"input": "route me"} | ({"model": model} if model else {})
            reply = await client.post("/v1/embeddings", json=body)
            assert reply.status_code == 200, reply.text
            return reply.json()["model"], len(reply.json()["data"][0]["embedding"])

        assert [await served(m) for m in (None, LARGE, SMALL, "small-embedder", "fake-model")] == [
            (LARGE, 8), (LARGE, 8), (SMALL, 32), (SMALL, 32), (LARGE, 8)]

        unknown = await client.post("/v1/embeddings", json={"input": "x", "model": "org/other"})
        assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "model_not_found"
        assert SMALL in unknown.json()["error"]["message"] and LARGE in unknown.json()["error"]["message"]

        listed = (await client.get("/v1/models")).json()["data"]
        embedders = {m["id"]: (m["dimension"], m["upstream"]) for m in listed if m["task"] == "embedding"}
        assert embedders == {LARGE: (8, "embedding"), SMALL: (32, "embedding-2")}

        await second_embedding_worker.stop(0)
        down = await client.post("/v1/embeddings", json={"input": "x", "model": SMALL})
        assert down.status_code == 503 and down.json()["error"]["upstream"] == "embedding-2"
        assert await served(LARGE) == (LARGE, 8), "the other model keeps serving"
        ready = (await client.get("/health/ready")).json()["upstreams"]
        assert ready["embedding"]["breaker"] == "closed" and ready["embedding-2"]["status"] != "SERVING"
