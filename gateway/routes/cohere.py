"""Cohere v2: POST /v2/embed and POST /v2/rerank, so `cohere.ClientV2` works unchanged."""

import uuid
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import Field

from gateway.contract import LIMIT_KEY, UINT32_MAX, json_int, text_type, texts_type
from gateway.dependencies import ModelRequest, account, model_pool
from gateway.errors import MODEL_ROUTE_ERRORS
from gateway.quantize import EMBEDDING_TYPES, by_type
from gateway.responses import JSONResponse
from gateway.routes.embeddings import embed
from gateway.routes.rerank import rank

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
    client, model = model_pool(request, "embedding", body.model)
    embedded = await embed(request, client, body.texts, model=model, truncate=body.truncate == "END",
                           dimensions=body.output_dimension, timeout=body.timeout, input_type=body.input_type,
                           field="texts")
    account(request, embedded.model, embedded.tokens)
    return JSONResponse({
        "id": str(uuid.uuid4()),
        "response_type": "embeddings_by_type",
        "embeddings": {kind: by_type(embedded.vectors, kind) for kind in dict.fromkeys(body.embedding_types)},
        "texts": body.texts,
        "meta": {"api_version": API_VERSION, "billed_units": {"input_tokens": embedded.tokens}},
    }, headers=embedded.cache.headers())


@router.post("/v2/rerank", response_class=JSONResponse)
async def cohere_rerank(body: CohereRerankRequest, request: Request):
    client, model = model_pool(request, "reranking", body.model)
    ranked = await rank(request, client, body.query, body.documents, model=model, top_n=body.top_n,
                        max_tokens_per_doc=body.max_tokens_per_doc, timeout=body.timeout)
    account(request, ranked.model, ranked.tokens)
    return JSONResponse({
        "id": str(uuid.uuid4()),
        "results": [{"index": index, "relevance_score": score} for index, score in ranked.results],
        "meta": {"api_version": API_VERSION, "billed_units": {"search_units": 1}},
    }, headers=ranked.cache.headers())
