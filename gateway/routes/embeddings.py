"""POST /v1/embeddings (OpenAI-compatible) and POST /tokenize (TEI-compatible)."""

import base64
from typing import Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import Field

from gateway import pipeline
from gateway.contract import (
    LIMIT_KEY,
    UINT32_MAX,
    ModelRequest,
    Name,
    json_int,
    one_or_many_texts,
    texts_or_token_ids,
)
from gateway.errors import MODEL_ROUTE_ERRORS
from gateway.responses import JSONResponse
from gateway.tasks.embed import EMBED, EmbedCall
from gateway.tasks.tokenize import TOKENIZE, TokenizeCall

router = APIRouter(responses=MODEL_ROUTE_ERRORS)


class EmbeddingsRequest(ModelRequest):
    input: texts_or_token_ids("embedding") = Field(
        description="A text, a list of texts, or the model's own token ids (a list of ints, or a list of such "
                    "lists; used as they are: see /tokenize).")
    encoding_format: Literal["float", "base64"] = Field("float", description="base64: little-endian float32.")
    dimensions: json_int(1, UINT32_MAX) | None = Field(None, json_schema_extra={LIMIT_KEY: "embedding.dimension"},
                                   description="Keep only the first N dimensions (then re-normalize).")
    user: Name | None = Field(None, description="The end user: keeps them on one version of a model alias "
                                                 "(routing file); never logged.")
    truncate: bool = Field(True, description="Cut texts longer than the model's limit; false makes them a 400.")
    prompt_name: Name | None = Field(None, json_schema_extra={LIMIT_KEY: "embedding.prompt_names"},
                                     description="Prefix every text with this prompt of the model (/v1/models "
                                                 "lists them); unknown names are a 400.")


class TokenizeRequest(ModelRequest):
    inputs: one_or_many_texts("embedding") = Field(description="A text or a list of texts.")
    add_special_tokens: bool = Field(True, description="Add the model's special tokens ([CLS], [SEP], ...).")


@router.post("/v1/embeddings", response_class=JSONResponse)
async def create_embeddings(body: EmbeddingsRequest, request: Request):
    embedded = await pipeline.run(request, EMBED, EmbedCall(
        inputs=body.input, model=body.model, user=body.user, timeout=body.timeout, truncate=body.truncate,
        dimensions=body.dimensions, prompt_name=body.prompt_name or ""))
    return JSONResponse({
        "object": "list",
        "data": _vectors(embedded.vectors, body.encoding_format),
        "model": embedded.model,
        "usage": {"prompt_tokens": embedded.tokens, "total_tokens": embedded.tokens},
    }, headers=embedded.cache.headers())


def _vectors(vectors: np.ndarray, encoding_format: str) -> list[dict]:
    """One OpenAI embedding object per row."""
    if encoding_format == "base64":
        return [{"object": "embedding", "index": i, "embedding": base64.b64encode(row.tobytes()).decode("ascii")}
                for i, row in enumerate(vectors)]
    return [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(vectors)]


@router.post("/tokenize", response_class=JSONResponse)
async def tokenize(body: TokenizeRequest, request: Request):
    """Each input's tokens as TEI returns them: [[{id, text, special, start, stop}, ...], ...]."""
    tokenized = await pipeline.run(request, TOKENIZE, TokenizeCall(
        texts=body.inputs, model=body.model, timeout=body.timeout, add_special_tokens=body.add_special_tokens))
    return JSONResponse([[{"id": t.id, "text": t.text, "special": t.special, "start": t.start, "stop": t.stop}
                          for t in result.tokens] for result in tokenized.results])
