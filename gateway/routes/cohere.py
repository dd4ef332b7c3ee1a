"""Cohere v2: POST /v2/embed and POST /v2/rerank, so `cohere.ClientV2` works unchanged."""

import uuid
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import Field

from gateway import pipeline
from gateway.contract import LIMIT_KEY, UINT32_MAX, ModelRequest, json_int, text_type, texts_type
from gateway.errors import MODEL_ROUTE_ERRORS
from gateway.quantize import EMBEDDING_TYPES, by_type
from gateway.responses import JSONResponse
from gateway.tasks.embed import EMBED, EmbedCall
from gateway.tasks.rerank import RERANK, RerankCall

router = APIRouter(responses=MODEL_ROUTE_ERRORS)

API_VERSION = {"version": "2"}


class CohereEmbedRequest(ModelRequest):
    texts: texts_type("embedding") = Field(description="The texts to embed.")
    input_type: str = Field("", max_length=64, description="search_query, search_document, classification, "
                            "clustering, ...: the model's prompt of that name when it has one (search_query and "
                            "search_document fall back to query and document), else the texts as they are.")
    embedding_types: list[Literal[EMBEDDING_TYPES]] = Field(
        ["float"], min_length=1, max_length=len(EMBEDDING_TYPES),
        description="int8/uint8: round(x*127) and round((x+1)*127.5); binary/ubinary: sign bits packed 8 per "
                    "byte (binary = ubinary - 128); base64: float32 little-endian bytes.")
    truncate: Literal["NONE", "END"] = Field("END", description="END cuts long texts at the end; NONE makes them "
                                             "a 400 (START is not supported).")
    output_dimension: json_int(1, UINT32_MAX) | None = Field(
        None, json_schema_extra={LIMIT_KEY: "embedding.dimension"}, description="Keep only the first N dimensions.")


class CohereRerankRequest(ModelRequest):
    query: text_type("reranking") = Field(description="The search query.")
    documents: list[text_type("reranking")] = Field(
        min_length=1, json_schema_extra={LIMIT_KEY: "reranking.max_items"}, description="The texts to score.")
    top_n: json_int(1, UINT32_MAX) | None = Field(None, description="Return only the best N; all by default.")
    max_tokens_per_doc: json_int(1, UINT32_MAX) | None = Field(
        None, description="Cut each document to this many tokens first; longer documents are scored over "
                          "overlapping windows either way.")


@router.post("/v2/embed", response_class=JSONResponse)
async def cohere_embed(body: CohereEmbedRequest, request: Request):
    embedded = await pipeline.run(request, EMBED, EmbedCall(
        inputs=body.texts, model=body.model, timeout=body.timeout, truncate=body.truncate == "END",
        dimensions=body.output_dimension, input_type=body.input_type, field="texts"))
    return JSONResponse({
        "id": str(uuid.uuid4()),
        "response_type": "embeddings_by_type",
        "embeddings": {kind: by_type(embedded.vectors, kind) for kind in dict.fromkeys(body.embedding_types)},
        "texts": body.texts,
        "meta": {"api_version": API_VERSION, "billed_units": {"input_tokens": embedded.tokens}},
    }, headers=embedded.cache.headers())


@router.post("/v2/rerank", response_class=JSONResponse)
async def cohere_rerank(body: CohereRerankRequest, request: Request):
    ranked = await pipeline.run(request, RERANK, RerankCall(
        query=body.query, documents=body.documents, model=body.model, timeout=body.timeout, top_n=body.top_n,
        max_tokens_per_doc=body.max_tokens_per_doc))
    return JSONResponse({
        "id": str(uuid.uuid4()),
        "results": [{"index": index, "relevance_score": score} for index, score in ranked.results],
        "meta": {"api_version": API_VERSION, "billed_units": {"search_units": 1}},
    }, headers=ranked.cache.headers())
