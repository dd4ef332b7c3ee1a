"""The task registry: one declaration per task the gateway serves (embed, rerank, classify, tokenize, chunk,
convert).

A task says what its call carries (a frozen dataclass of the protocol-free request), how many inputs that is (what
a tenant's inputs bucket is charged), what the serving worker's published limits demand of it, how the worker
computes it (whole, or per input for the response cache: the cache's options and items, the canonical per-input
value, and how values assemble into the answer) and how a shadow model's answer is compared. A stage of the
pipeline (gateway/pipeline.py) that does not apply says so here: `cached = False`, `shadowed = False`.
Routes translate a protocol's body into a task's call and its answer back; nothing else (docs/architecture.md).
"""

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from gateway.cache import CacheOutcome, Computed, Scope
from gateway.upstream import Upstream


@dataclass(frozen=True, kw_only=True)
class TaskCall:
    """What every task's call carries besides its inputs: the model asked for (a served name, an alias, or None
    for the default), the end user (keeps them on one version of an alias) and the body's deadline."""

    model: str | None = None
    user: str | None = None
    timeout: float | None = None


@dataclass(frozen=True, kw_only=True)
class Answer:
    """What every task's answer carries: the model that computed it, the tokens it saw, what the cache answered."""

    model: str
    tokens: int
    cache: CacheOutcome


CallT = TypeVar("CallT", bound=TaskCall)
AnswerT = TypeVar("AnswerT", bound=Answer)


class Task(ABC, Generic[CallT, AnswerT]):
    """One task: its upstream (the registry's pools serving it) and how each stage of the pipeline treats it."""

    name: ClassVar[str]
    upstream: ClassVar[str]
    # False: the call names no model (a document's conversion); it runs on the upstream itself, no rollout.
    names_model: ClassVar[bool] = True
    cached: ClassVar[bool] = True
    shadowed: ClassVar[bool] = True

    @abstractmethod
    def inputs(self, call: CallT) -> int:
        """How many inputs the call carries: what the tenant's inputs bucket is charged."""

    @abstractmethod
    def check(self, call: CallT, pool: Upstream) -> None:
        """Refuse (422) what the pool's worker published it does not take, before anything is sent."""

    @abstractmethod
    async def compute(self, pool: Upstream, call: CallT, model: str | None, timeout: float) -> AnswerT:
        """The whole answer from the worker, the cache not involved."""

    def cache_options(self, call: CallT) -> tuple:
        """Everything besides the inputs that changes a per-input result (part of the cache key)."""
        raise NotImplementedError

    def cache_items(self, call: CallT) -> list[bytes]:
        """Each input as the cache keys it."""
        raise NotImplementedError

    async def compute_items(self, pool: Upstream, call: CallT, model: str | None, indices: list[int],
                            timeout: float) -> Computed:
        """The canonical per-input values of the inputs at `indices`, from the worker."""
        raise NotImplementedError

    def valid(self, pool: Upstream) -> Callable[[bytes], bool]:
        """Whether a value read from a shared cache tier is one this task wrote for this pool's model."""
        return bool

    def assemble(self, call: CallT, values: list[bytes], outcome: CacheOutcome, scope: Scope,
                 pool: Upstream) -> AnswerT:
        """The answer from every input's canonical value."""
        raise NotImplementedError

    def shadow_call(self, call: CallT) -> CallT:
        """What an alias's shadow model is asked (only what the agreement needs)."""
        return call

    def agreement(self, primary: AnswerT, shadow: AnswerT) -> float | None:
        """How far the shadow's answer agrees with the primary's, in [0, 1] (or correlation); None: no measure."""
        return None
