"""Intent classification: texts in, each text's intent, confidence, top intents and complexity out (the cache
keeps each text's tokens and its Classification message)."""

import struct
from dataclasses import dataclass

import numpy as np
from google.protobuf.message import DecodeError

from gateway.cache import CacheOutcome, Computed, Scope
from gateway.contract import enforce_texts
from gateway.merging import Mergeable
from gateway.tasks import Answer, Task, TaskCall
from gateway.upstream import Upstream
from torchgate.v1 import classifier_pb2, common_pb2

# A cached classification: the tokens the model saw, then the Classification message.
TOKENS = struct.Struct("<I")


@dataclass(frozen=True, kw_only=True)
class ClassifyCall(TaskCall):
    texts: list[str]
    field: str = "texts"  # the body's name for the texts, in errors
    top_k: int = 0
    force_intent: bool = False


@dataclass(frozen=True, kw_only=True)
class Classified(Answer):
    """One classification per text, in request order."""

    results: list[classifier_pb2.Classification]


def _reply_part(reply: classifier_pb2.ClassifyResponse, start: int, stop: int) -> classifier_pb2.ClassifyResponse:
    """The reply to texts start:stop of a merged call."""
    input_tokens = reply.input_tokens[start:stop]
    tokens = sum(input_tokens)
    return classifier_pb2.ClassifyResponse(
        results=reply.results[start:stop], model=reply.model,
        usage=common_pb2.Usage(prompt_tokens=tokens, total_tokens=tokens), timing=reply.timing,
        input_tokens=input_tokens, fingerprint=reply.fingerprint)


MERGE_TEXTS = Mergeable("texts", _reply_part)


def _is_classification(value: bytes) -> bool:
    try:
        classifier_pb2.Classification.FromString(value[TOKENS.size:])
    except DecodeError:
        return False
    return len(value) > TOKENS.size


class Classify(Task[ClassifyCall, Classified]):
    name = "classify"
    upstream = "classifier"

    def inputs(self, call: ClassifyCall) -> int:
        return len(call.texts)

    def check(self, call: ClassifyCall, pool: Upstream) -> None:
        enforce_texts(pool.limits, call.texts, call.field, pool.name)

    @staticmethod
    async def _call(pool: Upstream, call: ClassifyCall, model: str | None, texts: list[str],
                    timeout: float) -> classifier_pb2.ClassifyResponse:
        return await pool.call("Classify", classifier_pb2.ClassifyRequest(
            texts=texts, top_k=call.top_k, model=model or "", force_intent=call.force_intent), timeout,
            merge=MERGE_TEXTS)

    async def compute(self, pool: Upstream, call: ClassifyCall, model: str | None, timeout: float) -> Classified:
        reply = await self._call(pool, call, model, call.texts, timeout)
        return Classified(results=list(reply.results), model=reply.model, tokens=reply.usage.total_tokens,
                          cache=CacheOutcome(0, len(call.texts)))

    def cache_options(self, call: ClassifyCall) -> tuple:
        return call.top_k, call.force_intent

    def cache_items(self, call: ClassifyCall) -> list[bytes]:
        return [text.encode() for text in call.texts]

    async def compute_items(self, pool: Upstream, call: ClassifyCall, model: str | None, indices: list[int],
                            timeout: float) -> Computed:
        reply = await self._call(pool, call, model, [call.texts[i] for i in indices], timeout)
        return Computed([TOKENS.pack(tokens) + result.SerializeToString(deterministic=True)
                         for tokens, result in zip(reply.input_tokens, reply.results, strict=True)],
                        reply.fingerprint)

    def valid(self, pool: Upstream):
        return _is_classification

    def assemble(self, call: ClassifyCall, values: list[bytes], outcome: CacheOutcome, scope: Scope,
                 pool: Upstream) -> Classified:
        return Classified(results=[classifier_pb2.Classification.FromString(value[TOKENS.size:]) for value in values],
                          model=scope.model_id, tokens=sum(TOKENS.unpack_from(value)[0] for value in values),
                          cache=outcome)

    def agreement(self, primary: Classified, shadow: Classified) -> float | None:
        """The share of texts given the same intent."""
        return float(np.mean([a.intent == b.intent for a, b in zip(primary.results, shadow.results, strict=True)]))


CLASSIFY = Classify()
