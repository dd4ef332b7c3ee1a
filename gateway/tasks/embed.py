"""Embedding: texts or token-id lists in, one vector each out (the cache keeps each input's full float32 vector
and its tokens; `dimensions` and normalization are applied to what comes out of it)."""

import struct
from array import array
from dataclasses import dataclass, replace

import numpy as np

from gateway.cache import CacheOutcome, Computed, Scope
from gateway.contract import enforce_texts
from gateway.errors import ApiError
from gateway.merging import Mergeable
from gateway.rollout import vectors_agreement
from gateway.tasks import Answer, Task, TaskCall
from gateway.upstream import Upstream
from torchgate.v1 import common_pb2, embedding_pb2
from torchgate.vectors import shape_vectors

TOKENS = struct.Struct("<I")


@dataclass(frozen=True, kw_only=True)
class EmbedCall(TaskCall):
    inputs: list  # texts, or token-id lists
    truncate: bool = True
    dimensions: int | None = None
    prompt_name: str = ""
    input_type: str = ""
    field: str = "input"  # the body's name for the inputs, in errors

    @property
    def token_ids(self) -> bool:
        return bool(self.inputs) and isinstance(self.inputs[0], list)


@dataclass(frozen=True, kw_only=True)
class Embedded(Answer):
    """Vectors in request order."""

    vectors: np.ndarray


def _reply_part(reply: embedding_pb2.EmbedResponse, start: int, stop: int) -> embedding_pb2.EmbedResponse:
    """The reply to inputs start:stop of a merged call."""
    row_bytes = reply.dimension * 4
    input_tokens = reply.input_tokens[start:stop]
    tokens = sum(input_tokens)
    return embedding_pb2.EmbedResponse(
        embeddings=reply.embeddings[start * row_bytes:stop * row_bytes], dimension=reply.dimension,
        count=stop - start, model=reply.model, usage=common_pb2.Usage(prompt_tokens=tokens, total_tokens=tokens),
        timing=reply.timing, input_tokens=input_tokens, fingerprint=reply.fingerprint)


MERGE_TEXTS = Mergeable("texts", _reply_part)
MERGE_TOKEN_IDS = Mergeable("token_ids", _reply_part)


class Embed(Task[EmbedCall, Embedded]):
    name = "embedding"
    upstream = "embedding"

    def inputs(self, call: EmbedCall) -> int:
        return len(call.inputs)

    def check(self, call: EmbedCall, pool: Upstream) -> None:
        limits = pool.limits
        if call.token_ids:
            if limits and len(call.inputs) > limits.max_items:
                raise ApiError(422, "invalid_request_error", f"{call.field} has {len(call.inputs)} items; at most "
                               f"{limits.max_items} per request: split the request", pool.name)
        else:
            enforce_texts(limits, call.inputs, call.field, pool.name)
        if limits and call.dimensions and call.dimensions > limits.dimension:
            raise ApiError(422, "invalid_request_error", f"dimensions is {call.dimensions} but the model has "
                           f"{limits.dimension}: ask for fewer", pool.name)

    @staticmethod
    async def _call(pool: Upstream, call: EmbedCall, model: str | None, subset: list, shaped: bool,
                    timeout: float) -> embedding_pb2.EmbedResponse:
        """The worker's vectors: as asked when `shaped`, else raw and whole (the cache's canonical form)."""
        token_ids = call.token_ids
        return await pool.call("Embed", embedding_pb2.EmbedRequest(
            texts=[] if token_ids else subset,
            token_ids=[embedding_pb2.TokenIds(ids=ids) for ids in subset] if token_ids else [],
            normalize=shaped, truncate=call.truncate, dimensions=(call.dimensions or 0) if shaped else 0,
            model=model or "", prompt_name=call.prompt_name, input_type=call.input_type), timeout,
            merge=MERGE_TOKEN_IDS if token_ids else MERGE_TEXTS)

    async def compute(self, pool: Upstream, call: EmbedCall, model: str | None, timeout: float) -> Embedded:
        reply = await self._call(pool, call, model, call.inputs, True, timeout)
        return Embedded(vectors=np.frombuffer(reply.embeddings, dtype="<f4").reshape(reply.count, reply.dimension),
                        model=reply.model, tokens=reply.usage.prompt_tokens, cache=CacheOutcome(0, len(call.inputs)))

    def cache_options(self, call: EmbedCall) -> tuple:
        return call.token_ids, call.truncate, call.prompt_name, call.input_type

    def cache_items(self, call: EmbedCall) -> list[bytes]:
        if call.token_ids:
            return [array("I", ids).tobytes() for ids in call.inputs]
        return [text.encode() for text in call.inputs]

    async def compute_items(self, pool: Upstream, call: EmbedCall, model: str | None, indices: list[int],
                            timeout: float) -> Computed:
        reply = await self._call(pool, call, model, [call.inputs[i] for i in indices], False, timeout)
        row = reply.dimension * 4
        return Computed([TOKENS.pack(tokens) + reply.embeddings[i * row:(i + 1) * row]
                         for i, tokens in enumerate(reply.input_tokens)], reply.fingerprint)

    def valid(self, pool: Upstream):
        size = TOKENS.size + 4 * pool.limits.dimension
        return lambda value: len(value) == size

    def assemble(self, call: EmbedCall, values: list[bytes], outcome: CacheOutcome, scope: Scope,
                 pool: Upstream) -> Embedded:
        if any(len(value) != len(values[0]) for value in values):
            pool.model_changed()
            raise ApiError(503, "upstream_unavailable", "the model changed while the request ran: retry", pool.name,
                           1)
        raw = np.frombuffer(b"".join(value[TOKENS.size:] for value in values), dtype="<f4").reshape(len(values), -1)
        return Embedded(vectors=shape_vectors(raw, call.dimensions or raw.shape[1], normalize=True),
                        model=scope.model_id, tokens=sum(TOKENS.unpack_from(value)[0] for value in values),
                        cache=outcome)

    def shadow_call(self, call: EmbedCall) -> EmbedCall:
        return replace(call, dimensions=None)

    def agreement(self, primary: Embedded, shadow: Embedded) -> float | None:
        return vectors_agreement(primary.vectors, shadow.vectors)


EMBED = Embed()
