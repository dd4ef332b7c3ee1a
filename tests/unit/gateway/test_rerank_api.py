import pytest

from tests.fakes import overlap_score
from tests.unit.gateway.conftest import gateway_client, unused_address

QUERY = "the black cat sat on the mat"
# Least relevant first, so a reply in input order cannot pass for a sorted one.
DOCUMENTS = ["nothing in common", {"text": "a cat"}, "the cat", "the black cat sat here"]


def text_of(document) -> str:
    return document if isinstance(document, str) else document["text"]


async def test_rerank_sorts_by_score_and_honours_top_n_and_return_documents(fake_reranking_worker):
    async with gateway_client(unused_address(), reranking=f"127.0.0.1:{fake_reranking_worker.port}") as client:
        reply = await client.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS, "top_n": 3,
                                                      "return_documents": True})
        raw = await client.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS, "raw_scores": True})
    assert reply.status_code == 200
    scores = [overlap_score(QUERY, text_of(document)) for document in DOCUMENTS]
    ranked = sorted(range(len(DOCUMENTS)), key=lambda i: -scores[i][1])
    assert len({raw for _, raw in scores}) == len(DOCUMENTS) and ranked != list(range(len(DOCUMENTS)))
    body = reply.json()
    assert body["results"] == [
        {"index": i, "document": {"text": text_of(DOCUMENTS[i])}, "relevance_score": pytest.approx(scores[i][0])}
        for i in ranked[:3]
    ]
    assert body["model"] == "test/fake-model" and body["usage"]["total_tokens"] > 0
    assert raw.json()["results"] == [{"index": i, "relevance_score": scores[i][1]} for i in ranked]


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
