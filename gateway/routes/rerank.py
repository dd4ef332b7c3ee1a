"""POST /v1/rerank, Cohere/Jina style."""

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from gateway.dependencies import ModelRequest, request_timeout, upstream
from gateway.responses import JSONResponse
from torchgate.v1 import reranking_pb2

router = APIRouter()


class Document(BaseModel):
    text: str


class RerankRequest(ModelRequest):
    query: str = Field(description="The search query.")
    documents: list[str | Document] = Field(description="Texts, or objects with a `text` field, to score.")
    top_n: int | None = Field(None, ge=1, description="Return only the best N; all by default.")
    return_documents: bool = Field(False, description="Echo each document in its result.")
    raw_scores: bool = Field(False, description="Logits instead of the model's activation.")


@router.post("/v1/rerank", response_class=JSONResponse)
async def rerank(body: RerankRequest, request: Request):
    client = upstream(request, "reranking")
    documents = [doc if isinstance(doc, str) else doc.text for doc in body.documents]
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
