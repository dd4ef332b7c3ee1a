"""POST /v1/embeddings, OpenAI-compatible."""

import base64
from typing import Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import Field

from gateway.contract import LIMIT_KEY, UINT32_MAX, Name, enforce_texts, json_int, one_or_many_texts
from gateway.dependencies import ModelRequest, model_pool, request_timeout
from gateway.errors import MODEL_ROUTE_ERRORS, ApiError
from gateway.responses import JSONResponse
from torchgate.v1 import embedding_pb2

router = APIRouter(responses=MODEL_ROUTE_ERRORS)


class EmbeddingsRequest(ModelRequest):
    input: one_or_many_texts("embedding") = Field(description="A text or a list of texts.")
    encoding_format: Literal["float", "base64"] = Field("float", description="base64: little-endian float32.")
    dimensions: json_int(1, UINT32_MAX) | None = Field(None, json_schema_extra={LIMIT_KEY: "embedding.dimension"},
                                   description="Keep only the first N dimensions (then re-normalize).")
    user: Name | None = Field(None, description="Accepted for OpenAI compatibility; unused.")
    truncate: bool = Field(True, description="Cut texts longer than the model's limit; false makes them a 400.")


@router.post("/v1/embeddings", response_class=JSONResponse)
async def create_embeddings(body: EmbeddingsRequest, request: Request):
    client = model_pool(request, "embedding", body.model)
    texts = body.input
    enforce_texts(client.limits, texts, "input", client.name)
    if client.limits and body.dimensions and body.dimensions > client.limits.dimension:
        raise ApiError(422, "invalid_request_error",
                       f"dimensions is {body.dimensions} but the model has {client.limits.dimension}: ask for fewer",
                       client.name)
    reply = await client.call(
        "Embed",
        embedding_pb2.EmbedRequest(texts=texts, normalize=True, truncate=body.truncate,
                                   dimensions=body.dimensions or 0, model=body.model or ""),
        request_timeout(request, client, body.timeout),
    )
    return JSONResponse({
        "object": "list",
        "data": _vectors(reply, body.encoding_format),
        "model": reply.model,
        "usage": {"prompt_tokens": reply.usage.prompt_tokens, "total_tokens": reply.usage.total_tokens},
    })


def _vectors(reply: embedding_pb2.EmbedResponse, encoding_format: str) -> list[dict]:
    """One OpenAI embedding object per row, straight from the packed float32 bytes."""
    if encoding_format == "base64":
        packed, row_bytes = memoryview(reply.embeddings), reply.dimension * 4
        return [
            {"object": "embedding", "index": i,
             "embedding": base64.b64encode(packed[i * row_bytes:(i + 1) * row_bytes]).decode("ascii")}
            for i in range(reply.count)
        ]
    matrix = np.frombuffer(reply.embeddings, dtype="<f4").reshape(reply.count, reply.dimension)
    return [{"object": "embedding", "index": i, "embedding": matrix[i]} for i in range(reply.count)]
