import pytest

from tests.fakes import overlap_score
from tests.unit.gateway.conftest import gateway_client, unused_address

DOCUMENTS = ["the cat sat", "a dog barked at the cat", {"text": "nothing in common"}]


async def test_rerank_sorts_by_score_and_honours_top_n_and_return_documents(fake_reranking_worker):
    async with gateway_client(unused_address(), reranking=f"127.0.0.1:{fake_reranking_worker.port}") as client:
        reply = await client.post("/v1/rerank", json={"query": "the cat", "documents": DOCUMENTS, "top_n": 2,
                                                      "return_documents": True})
        raw = await client.post("/v1/rerank", json={"query": "the cat", "documents": DOCUMENTS, "raw_scores": True})
    assert reply.status_code == 200
    body = reply.json()
    assert [r["index"] for r in body["results"]] == [0, 1]
    assert body["results"][0] == {"index": 0, "document": {"text": "the cat sat"},
                                  "relevance_score": pytest.approx(overlap_score("the cat", "the cat sat")[0])}
    assert body["model"] == "test/fake-model" and body["usage"]["total_tokens"] > 0
    assert [r["relevance_score"] for r in raw.json()["results"]] == [2.0, 2.0, 0.0]
    assert "document" not in raw.json()["results"][0]


async def test_rerank_input_errors_are_422s_and_a_dead_worker_is_a_503(fake_reranking_worker):
    async with gateway_client(unused_address(), reranking=f"127.0.0.1:{fake_reranking_worker.port}") as client:
        empty = await client.post("/v1/rerank", json={"query": "q", "documents": []})
        too_many = await client.post("/v1/rerank", json={"query": "q", "documents": ["d"] * 5})
        no_query = await client.post("/v1/rerank", json={"documents": ["d"]})
    assert empty.status_code == 422 and "documents" in empty.json()["error"]["message"]
    assert too_many.status_code == 422 and "documents has 5 items; at most 4" in too_many.json()["error"]["message"]
    assert no_query.status_code == 422
    async with gateway_client(unused_address()) as client:
        down = await client.post("/v1/rerank", json={"query": "q", "documents": ["d"]})
    assert down.status_code == 503 and down.json()["error"]["upstream"] == "reranking"
    assert down.headers["Retry-After"]
