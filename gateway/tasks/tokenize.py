"""Tokenization by the embedding model: each text's tokens with their offsets. Not cached (the worker answers it
without running the model) and never shadowed; tokens are not charged (no model ran)."""

from dataclasses import dataclass

from gateway.cache import CacheOutcome
from gateway.contract import enforce_texts
from gateway.tasks import Answer, Task, TaskCall
from gateway.upstream import Upstream
from torchgate.v1 import embedding_pb2


@dataclass(frozen=True, kw_only=True)
class TokenizeCall(TaskCall):
    texts: list[str]
    add_special_tokens: bool = True


@dataclass(frozen=True, kw_only=True)
class Tokenized(Answer):
    results: list[embedding_pb2.Tokens]


class Tokenize(Task[TokenizeCall, Tokenized]):
    name = "tokenize"
    upstream = "embedding"
    cached = False
    shadowed = False

    def inputs(self, call: TokenizeCall) -> int:
        return len(call.texts)

    def check(self, call: TokenizeCall, pool: Upstream) -> None:
        enforce_texts(pool.limits, call.texts, "inputs", pool.name)

    async def compute(self, pool: Upstream, call: TokenizeCall, model: str | None, timeout: float) -> Tokenized:
        reply = await pool.call("Tokenize", embedding_pb2.TokenizeRequest(
            texts=call.texts, add_special_tokens=call.add_special_tokens, model=model or ""), timeout)
        return Tokenized(results=list(reply.results), model=reply.model, tokens=0,
                         cache=CacheOutcome(0, len(call.texts)))


TOKENIZE = Tokenize()
