"""POST /v1/embeddings (OpenAI-compatible) and POST /tokenize (TEI-compatible)."""

import base64
from typing import Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import Field

from gateway.contract import (
    LIMIT_KEY,
    UINT32_MAX,
    Name,
    enforce_texts,
    json_int,
    one_or_many_texts,
    texts_or_token_ids,
)
from gateway.dependencies import ModelRequest, model_pool, request_timeout
from gateway.errors import MODEL_ROUTE_ERRORS, ApiError
from gateway.merging import Mergeable
from gateway.responses import JSONResponse
from gateway.upstream import Upstream
from torchgate.v1 import common_pb2, embedding_pb2

router = APIRouter(responses=MODEL_ROUTE_ERRORS)


class EmbeddingsRequest(ModelRequest):
    input: texts_or_token_ids("embedding") = Field(
        description="A text, a list of texts, or the model's own token ids (a list of ints, or a list of such "
                    "lists; used as they are: see /tokenize).")
    encoding_format: Literal["float", "base64"] = Field("float", description="base64: little-endian float32.")
    dimensions: json_int(1, UINT32_MAX) | None = Field(None, json_schema_extra={LIMIT_KEY: "embedding.dimension"},
                                   description="Keep only the first N dimensions (then re-normalize).")
    user: Name | None = Field(None, description="Accepted for OpenAI compatibility; unused.")
    truncate: bool = Field(True, description="Cut texts longer than the model's limit; false makes them a 400.")
    prompt_name: Name | None = Field(None, json_schema_extra={LIMIT_KEY: "embedding.prompt_names"},
                                     description="Prefix every text with this prompt of the model (/v1/models "
                                                 "lists them); unknown names are a 400.")


class TokenizeRequest(ModelRequest):
    inputs: one_or_many_texts("embedding") = Field(description="A text or a list of texts.")
    add_special_tokens: bool = Field(True, description="Add the model's special tokens ([CLS], [SEP], ...).")


def _embed_reply_part(reply: embedding_pb2.EmbedResponse, start: int, stop: int) -> embedding_pb2.EmbedResponse:
    """The reply to inputs start:stop of a merged call."""
    row_bytes = reply.dimension * 4
    input_tokens = reply.input_tokens[start:stop]
    tokens = sum(input_tokens)
    return embedding_pb2.EmbedResponse(
        embeddings=reply.embeddings[start * row_bytes:stop * row_bytes], dimension=reply.dimension,
        count=stop - start, model=reply.model, usage=common_pb2.Usage(prompt_tokens=tokens, total_tokens=tokens),
        timing=reply.timing, input_tokens=input_tokens)


MERGE_TEXTS = Mergeable("texts", _embed_reply_part)
MERGE_TOKEN_IDS = Mergeable("token_ids", _embed_reply_part)


async def embed(request: Request, client: Upstream, inputs: list, *, model: str | None, truncate: bool,
                dimensions: int | None, timeout: float | None, prompt_name: str = "", input_type: str = "",
                field: str = "input") -> tuple[embedding_pb2.EmbedResponse, np.ndarray]:
    """Embed texts or token-id lists (the body's `field`) through `client`; the reply and its vectors."""
    token_ids = bool(inputs) and isinstance(inputs[0], list)
    if token_ids:
        if client.limits and len(inputs) > client.limits.max_items:
            raise ApiError(422, "invalid_request_error", f"{field} has {len(inputs)} items; at most "
                           f"{client.limits.max_items} per request: split the request", client.name)
    else:
        enforce_texts(client.limits, inputs, field, client.name)
    if client.limits and dimensions and dimensions > client.limits.dimension:
        raise ApiError(422, "invalid_request_error",
                       f"dimensions is {dimensions} but the model has {client.limits.dimension}: ask for fewer",
                       client.name)
    reply = await client.call(
        "Embed",
        embedding_pb2.EmbedRequest(
            texts=[] if token_ids else inputs,
            token_ids=[embedding_pb2.TokenIds(ids=ids) for ids in inputs] if token_ids else [],
            normalize=True, truncate=truncate, dimensions=dimensions or 0, model=model or "",
            prompt_name=prompt_name, input_type=input_type),
        request_timeout(request, client, timeout),
        merge=MERGE_TOKEN_IDS if token_ids else MERGE_TEXTS,
    )
    return reply, np.frombuffer(reply.embeddings, dtype="<f4").reshape(reply.count, reply.dimension)


@router.post("/v1/embeddings", response_class=JSONResponse)
async def create_embeddings(body: EmbeddingsRequest, request: Request):
    client = model_pool(request, "embedding", body.model)
    reply, vectors = await embed(request, client, body.input, model=body.model, truncate=body.truncate,
                                 dimensions=body.dimensions, timeout=body.timeout, prompt_name=body.prompt_name or "")
    return JSONResponse({
        "object": "list",
        "data": _vectors(vectors, body.encoding_format),
        "model": reply.model,
        "usage": {"prompt_tokens": reply.usage.prompt_tokens, "total_tokens": reply.usage.total_tokens},
    })


def _vectors(vectors: np.ndarray, encoding_format: str) -> list[dict]:
    """One OpenAI embedding object per row."""
    if encoding_format == "base64":
        return [{"object": "embedding", "index": i, "embedding": base64.b64encode(row.tobytes()).decode("ascii")}
                for i, row in enumerate(vectors)]
    return [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(vectors)]


@router.post("/tokenize", response_class=JSONResponse)
async def tokenize(body: TokenizeRequest, request: Request):
    """Each input's tokens as TEI returns them: [[{id, text, special, start, stop}, ...], ...]."""
    client = model_pool(request, "embedding", body.model)
    enforce_texts(client.limits, body.inputs, "inputs", client.name)
    reply = await client.call(
        "Tokenize",
        embedding_pb2.TokenizeRequest(texts=body.inputs, add_special_tokens=body.add_special_tokens,
                                      model=body.model or ""),
        request_timeout(request, client, body.timeout),
    )
    return JSONResponse([[{"id": t.id, "text": t.text, "special": t.special, "start": t.start, "stop": t.stop}
                          for t in result.tokens] for result in reply.results])
