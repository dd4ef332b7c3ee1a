"""POST /v1/rerank, Cohere/Jina style; `rank`, the one way the routes score documents."""

import struct
from dataclasses import dataclass

from fastapi import APIRouter, Request
from pydantic import Field

from gateway.cache import CacheOutcome, Computed
from gateway.contract import LIMIT_KEY, UINT32_MAX, RequestBody, enforce_texts, json_int, text_type
from gateway.dependencies import ModelRequest, account, mirror, model_pool, request_timeout, response_cache
from gateway.errors import MODEL_ROUTE_ERRORS
from gateway.responses import JSONResponse
from gateway.upstream import Upstream
from torchgate.v1 import reranking_pb2

router = APIRouter(responses=MODEL_ROUTE_ERRORS)

RerankText = text_type("reranking")
# A cached (query, document) pair: tokens the model saw, activated score, raw score (as float32, as on the wire).
PAIR = struct.Struct("<Iff")


class Document(RequestBody):
    text: RerankText


class RerankRequest(ModelRequest):
    query: RerankText = Field(description="The search query.")
    documents: list[RerankText | Document] = Field(
        min_length=1, json_schema_extra={LIMIT_KEY: "reranking.max_items"},
        description="Texts, or objects with a `text` field, to score.")
    top_n: json_int(1, UINT32_MAX) | None = Field(None, description="Return only the best N; all by default.")
    return_documents: bool = Field(False, description="Echo each document in its result.")
    raw_scores: bool = Field(False, description="Logits instead of the model's activation.")


@dataclass(frozen=True)
class Ranked:
    """(document index, score) best first, the model that scored, the tokens it saw, what the cache answered."""

    results: list[tuple[int, float]]
    model: str
    tokens: int
    cache: CacheOutcome


async def rank(request: Request, client: Upstream, query: str, documents: list[str], *, model: str | None,
               top_n: int | None, raw_scores: bool = False, max_tokens_per_doc: int | None = None,
               timeout: float | None = None) -> Ranked:
    """Score every document against the query through the response cache and `client`; the best `top_n`.
    Mirrored to the alias's shadow when the request was chosen for it (agreement: the same best document)."""
    ranked = await _rank(request, client, query, documents, model=model, top_n=top_n, raw_scores=raw_scores,
                         max_tokens_per_doc=max_tokens_per_doc, timeout=timeout)
    mirror(request, "reranking", lambda pool, name: _rank(
        request, pool, query, documents, model=name, top_n=1, max_tokens_per_doc=max_tokens_per_doc,
        timeout=timeout), lambda shadow: float(shadow.results[0][0] == ranked.results[0][0]))
    return ranked


async def _rank(request: Request, client: Upstream, query: str, documents: list[str], *, model: str | None,
                top_n: int | None, raw_scores: bool = False, max_tokens_per_doc: int | None = None,
                timeout: float | None = None) -> Ranked:
    enforce_texts(client.limits, [query], "query", client.name)
    enforce_texts(client.limits, documents, "documents", client.name)
    deadline = request_timeout(request, client, timeout)

    def rerank_request(subset: list[str], **options) -> reranking_pb2.RerankRequest:
        return reranking_pb2.RerankRequest(query=query, documents=subset, model=model or "",
                                           max_tokens_per_doc=max_tokens_per_doc or 0, **options)

    cache = response_cache(request, client, "reranking", (query, max_tokens_per_doc or 0))
    if cache is None:
        reply = await client.call("Rerank", rerank_request(documents, top_n=top_n or 0, raw_scores=raw_scores),
                                  deadline)
        return Ranked([(r.index, r.score) for r in reply.results], reply.model, reply.usage.total_tokens,
                      CacheOutcome(0, len(documents)))

    async def compute(indices: list[int], timeout: float) -> Computed:
        reply = await client.call("Rerank", rerank_request([documents[i] for i in indices]), timeout)
        if reply.fingerprint != cache.scope.fingerprint:
            client.model_changed()
        values = [b""] * len(indices)
        for result in reply.results:
            values[result.index] = PAIR.pack(reply.input_tokens[result.index], result.score, result.raw_score)
        return Computed(values, reply.fingerprint)

    values, outcome = await cache.resolve([document.encode() for document in documents], compute, deadline,
                                          valid=lambda value: len(value) == PAIR.size)
    pairs = [PAIR.unpack(value) for value in values]
    # As the worker orders them: by the activated score, best first, ties in document order.
    order = sorted(range(len(pairs)), key=lambda index: pairs[index][1], reverse=True)[: top_n or len(pairs)]
    return Ranked([(index, pairs[index][2 if raw_scores else 1]) for index in order], cache.scope.model_id,
                  sum(tokens for tokens, _, _ in pairs), outcome)


@router.post("/v1/rerank", response_class=JSONResponse)
async def rerank(body: RerankRequest, request: Request):
    client, model = model_pool(request, "reranking", body.model)
    documents = [doc if isinstance(doc, str) else doc.text for doc in body.documents]
    ranked = await rank(request, client, body.query, documents, model=model, top_n=body.top_n,
                        raw_scores=body.raw_scores, timeout=body.timeout)
    account(request, ranked.model, ranked.tokens)
    return JSONResponse({
        "model": ranked.model,
        "results": [
            {"index": index, "relevance_score": score, **({"document": {"text": documents[index]}}
                                                          if body.return_documents else {})}
            for index, score in ranked.results
        ],
        "usage": {"total_tokens": ranked.tokens},
    }, headers=ranked.cache.headers())
