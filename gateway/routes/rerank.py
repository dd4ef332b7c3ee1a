"""POST /v1/rerank, Cohere/Jina style."""

from fastapi import APIRouter, Request
from pydantic import Field

from gateway.contract import LIMIT_KEY, UINT32_MAX, RequestBody, enforce_texts, json_int, text_type
from gateway.dependencies import ModelRequest, model_pool, request_timeout
from gateway.errors import MODEL_ROUTE_ERRORS
from gateway.responses import JSONResponse
from torchgate.v1 import reranking_pb2

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
    client = model_pool(request, "reranking", body.model)
    documents = [doc if isinstance(doc, str) else doc.text for doc in body.documents]
    enforce_texts(client.limits, [body.query], "query", client.name)
    enforce_texts(client.limits, documents, "documents", client.name)
    reply = await client.call(
        "Rerank",
        reranking_pb2.RerankRequest(query=body.query, documents=documents, top_n=body.top_n or 0,
                                    return_documents=body.return_documents, raw_scores=body.raw_scores,
                                    model=body.model or ""),
        request_timeout(request, client, body.timeout),
    )
    return JSONResponse({
        "model": reply.model,
        "results": [
            {"index": r.index, "relevance_score": r.score, **({"document": {"text": r.document}}
                                                              if body.return_documents else {})}
            for r in reply.results
        ],
        "usage": {"total_tokens": reply.usage.total_tokens},
    })
