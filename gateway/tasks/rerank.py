"""Reranking: a query and documents in, each document's score out, best first (the cache keeps each (query,
document) pair's tokens, activated and raw score)."""

import struct
from dataclasses import dataclass, replace

from gateway.cache import CacheOutcome, Computed, Scope
from gateway.contract import enforce_texts
from gateway.tasks import Answer, Task, TaskCall
from gateway.upstream import Upstream
from torchgate.v1 import reranking_pb2

# A cached (query, document) pair: tokens the model saw, activated score, raw score (as float32, as on the wire).
PAIR = struct.Struct("<Iff")


@dataclass(frozen=True, kw_only=True)
class RerankCall(TaskCall):
    query: str
    documents: list[str]
    top_n: int | None = None
    raw_scores: bool = False
    max_tokens_per_doc: int | None = None


@dataclass(frozen=True, kw_only=True)
class Ranked(Answer):
    """(document index, score) best first."""

    results: list[tuple[int, float]]


class Rerank(Task[RerankCall, Ranked]):
    name = "rerank"
    upstream = "reranking"

    def inputs(self, call: RerankCall) -> int:
        return len(call.documents)

    def check(self, call: RerankCall, pool: Upstream) -> None:
        enforce_texts(pool.limits, [call.query], "query", pool.name)
        enforce_texts(pool.limits, call.documents, "documents", pool.name)

    @staticmethod
    def _request(call: RerankCall, model: str | None, documents: list[str], **options) -> reranking_pb2.RerankRequest:
        return reranking_pb2.RerankRequest(query=call.query, documents=documents, model=model or "",
                                           max_tokens_per_doc=call.max_tokens_per_doc or 0, **options)

    async def compute(self, pool: Upstream, call: RerankCall, model: str | None, timeout: float) -> Ranked:
        reply = await pool.call("Rerank", self._request(call, model, call.documents, top_n=call.top_n or 0,
                                                        raw_scores=call.raw_scores), timeout)
        return Ranked(results=[(r.index, r.score) for r in reply.results], model=reply.model,
                      tokens=reply.usage.total_tokens, cache=CacheOutcome(0, len(call.documents)))

    def cache_options(self, call: RerankCall) -> tuple:
        return call.query, call.max_tokens_per_doc or 0

    def cache_items(self, call: RerankCall) -> list[bytes]:
        return [document.encode() for document in call.documents]

    async def compute_items(self, pool: Upstream, call: RerankCall, model: str | None, indices: list[int],
                            timeout: float) -> Computed:
        reply = await pool.call("Rerank", self._request(call, model, [call.documents[i] for i in indices]), timeout)
        values = [b""] * len(indices)
        for result in reply.results:
            values[result.index] = PAIR.pack(reply.input_tokens[result.index], result.score, result.raw_score)
        return Computed(values, reply.fingerprint)

    def valid(self, pool: Upstream):
        return lambda value: len(value) == PAIR.size

    def assemble(self, call: RerankCall, values: list[bytes], outcome: CacheOutcome, scope: Scope,
                 pool: Upstream) -> Ranked:
        pairs = [PAIR.unpack(value) for value in values]
        # As the worker orders them: by the activated score, best first, ties in document order.
        order = sorted(range(len(pairs)), key=lambda index: pairs[index][1], reverse=True)[: call.top_n or len(pairs)]
        return Ranked(results=[(index, pairs[index][2 if call.raw_scores else 1]) for index in order],
                      model=scope.model_id, tokens=sum(tokens for tokens, _, _ in pairs), cache=outcome)

    def shadow_call(self, call: RerankCall) -> RerankCall:
        return replace(call, top_n=1, raw_scores=False)

    def agreement(self, primary: Ranked, shadow: Ranked) -> float | None:
        """1 when the shadow ranks the same document first."""
        return float(shadow.results[0][0] == primary.results[0][0])


RERANK = Rerank()
