"""POST /v1/rerank, Cohere/Jina style."""

from fastapi import APIRouter, Request
from pydantic import Field

from gateway import pipeline
from gateway.contract import LIMIT_KEY, UINT32_MAX, ModelRequest, RequestBody, json_int, text_type
from gateway.errors import MODEL_ROUTE_ERRORS
from gateway.responses import JSONResponse
from gateway.tasks.rerank import RERANK, RerankCall

router = APIRouter(responses=MODEL_ROUTE_ERRORS)

RerankText = text_type("reranking")


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


@router.post("/v1/rerank", response_class=JSONResponse)
async def rerank(body: RerankRequest, request: Request):
    documents = [doc if isinstance(doc, str) else doc.text for doc in body.documents]
    ranked = await pipeline.run(request, RERANK, RerankCall(
        query=body.query, documents=documents, model=body.model, timeout=body.timeout, top_n=body.top_n,
        raw_scores=body.raw_scores))
    return JSONResponse({
        "model": ranked.model,
        "results": [
            {"index": index, "relevance_score": score, **({"document": {"text": documents[index]}}
                                                          if body.return_documents else {})}
            for index, score in ranked.results
        ],
        "usage": {"total_tokens": ranked.tokens},
    }, headers=ranked.cache.headers())
