"""POST /v1/embeddings (OpenAI-compatible) and POST /tokenize (TEI-compatible)."""

import base64
import struct
from array import array
from dataclasses import dataclass
from typing import Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import Field

from gateway.cache import CacheOutcome, Computed
from gateway.contract import (
    LIMIT_KEY,
    UINT32_MAX,
    Name,
    enforce_texts,
    json_int,
    one_or_many_texts,
    texts_or_token_ids,
)
from gateway.dependencies import ModelRequest, account, mirror, model_pool, request_timeout, response_cache
from gateway.errors import MODEL_ROUTE_ERRORS, ApiError
from gateway.merging import Mergeable
from gateway.responses import JSONResponse
from gateway.rollout import vectors_agreement
from gateway.upstream import Upstream
from torchgate.v1 import common_pb2, embedding_pb2
from torchgate.vectors import shape_vectors

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


def _embed_reply_part(reply: embedding_pb2.EmbedResponse, start: int, stop: int) -> embedding_pb2.EmbedResponse:
    """The reply to inputs start:stop of a merged call."""
    row_bytes = reply.dimension * 4
    input_tokens = reply.input_tokens[start:stop]
    tokens = sum(input_tokens)
    return embedding_pb2.EmbedResponse(
        embeddings=reply.embeddings[start * row_bytes:stop * row_bytes], dimension=reply.dimension,
        count=stop - start, model=reply.model, usage=common_pb2.Usage(prompt_tokens=tokens, total_tokens=tokens),
        timing=reply.timing, input_tokens=input_tokens, fingerprint=reply.fingerprint)


MERGE_TEXTS = Mergeable("texts", _embed_reply_part)
MERGE_TOKEN_IDS = Mergeable("token_ids", _embed_reply_part)


@dataclass(frozen=True)
class Embedded:
    """Vectors in request order, the model that made them, the tokens it saw, and what the cache answered."""

    vectors: np.ndarray
    model: str
    tokens: int
    cache: CacheOutcome


async def embed(request: Request, client: Upstream, inputs: list, *, model: str | None, truncate: bool,
                dimensions: int | None, timeout: float | None, prompt_name: str = "", input_type: str = "",
                field: str = "input") -> Embedded:
    """Embed texts or token-id lists (the body's `field`) through the response cache and `client`; mirrored
    to the alias's shadow when the request was chosen for it."""
    embedded = await _embed(request, client, inputs, model=model, truncate=truncate, dimensions=dimensions,
                            timeout=timeout, prompt_name=prompt_name, input_type=input_type, field=field)
    mirror(request, "embedding", lambda pool, name: _embed(
        request, pool, inputs, model=name, truncate=truncate, dimensions=None, timeout=timeout,
        prompt_name=prompt_name, input_type=input_type, field=field),
        lambda shadow: vectors_agreement(embedded.vectors, shadow.vectors))
    return embedded


async def _embed(request: Request, client: Upstream, inputs: list, *, model: str | None, truncate: bool,
                 dimensions: int | None, timeout: float | None, prompt_name: str, input_type: str,
                 field: str) -> Embedded:
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
    deadline = request_timeout(request, client, timeout)

    async def call(subset: list, shaped: bool, timeout: float = deadline) -> embedding_pb2.EmbedResponse:
        """The worker's vectors: as asked when `shaped`, else raw and whole (the cache's canonical form)."""
        return await client.call("Embed", embedding_pb2.EmbedRequest(
            texts=[] if token_ids else subset,
            token_ids=[embedding_pb2.TokenIds(ids=ids) for ids in subset] if token_ids else [],
            normalize=shaped, truncate=truncate, dimensions=(dimensions or 0) if shaped else 0, model=model or "",
            prompt_name=prompt_name, input_type=input_type), timeout,
            merge=MERGE_TOKEN_IDS if token_ids else MERGE_TEXTS)

    cache = response_cache(request, client, "embedding", (token_ids, truncate, prompt_name, input_type))
    if cache is None:
        reply = await call(inputs, shaped=True)
        return Embedded(np.frombuffer(reply.embeddings, dtype="<f4").reshape(reply.count, reply.dimension),
                        reply.model, reply.usage.prompt_tokens, CacheOutcome(0, len(inputs)))

    async def compute(indices: list[int], timeout: float) -> Computed:
        reply = await call([inputs[i] for i in indices], shaped=False, timeout=timeout)
        if reply.fingerprint != cache.scope.fingerprint:
            client.model_changed()
        row = reply.dimension * 4
        return Computed([struct.pack("<I", tokens) + reply.embeddings[i * row:(i + 1) * row]
                         for i, tokens in enumerate(reply.input_tokens)], reply.fingerprint)

    dimension = client.limits.dimension
    items = [array("I", ids).tobytes() for ids in inputs] if token_ids else [text.encode() for text in inputs]
    values, outcome = await cache.resolve(items, compute, deadline,
                                          valid=lambda value: len(value) == 4 + 4 * dimension)
    if any(len(value) != len(values[0]) for value in values):
        client.model_changed()
        raise ApiError(503, "upstream_unavailable", "the model changed while the request ran: retry", client.name, 1)
    raw = np.frombuffer(b"".join(value[4:] for value in values), dtype="<f4").reshape(len(values), -1)
    return Embedded(shape_vectors(raw, dimensions or raw.shape[1], normalize=True), cache.scope.model_id,
                    sum(struct.unpack_from("<I", value)[0] for value in values), outcome)


@router.post("/v1/embeddings", response_class=JSONResponse)
async def create_embeddings(body: EmbeddingsRequest, request: Request):
    client, model = model_pool(request, "embedding", body.model, body.user)
    embedded = await embed(request, client, body.input, model=model, truncate=body.truncate,
                           dimensions=body.dimensions, timeout=body.timeout, prompt_name=body.prompt_name or "")
    account(request, embedded.model, embedded.tokens)
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
    client, model = model_pool(request, "embedding", body.model)
    enforce_texts(client.limits, body.inputs, "inputs", client.name)
    reply = await client.call(
        "Tokenize",
        embedding_pb2.TokenizeRequest(texts=body.inputs, add_special_tokens=body.add_special_tokens,
                                      model=model or ""),
        request_timeout(request, client, body.timeout),
    )
    return JSONResponse([[{"id": t.id, "text": t.text, "special": t.special, "start": t.start, "stop": t.stop}
                          for t in result.tokens] for result in reply.results])
