"""The model registry: per task one or more pools, each one model behind one gRPC target (its replicas).

A pool learns its model id and limits from its worker's Info (gateway/upstream/); a request's `model` picks the
pool, on every protocol by one rule: a served id (or the configured model a fallback stands in for) in full
first; else a short name (the last path part of an id; derived ids such as `few-shot:…` have none) that exactly
one pool answers to; several are a 400 naming them; none for the task's first pool. Breaker, bulkhead,
deadlines and readiness belong to each pool's Upstream, so one model's failure never touches another's traffic.
"""

from collections.abc import Iterable

from gateway.contract import clip
from gateway.errors import ApiError
from gateway.rollout import PIN_SEPARATOR
from gateway.upstream import Upstream

POOL_SEPARATOR = ";"


def pool_targets(addresses: str) -> list[str]:
    """The pools of one task: `;` separates pools, each a replica list or target (`a:1,b:1;dns:///bge:50052`)."""
    pools = [pool.strip() for pool in addresses.split(POOL_SEPARATOR) if pool.strip()]
    if not pools:
        raise ValueError("an upstream needs at least one address")
    return pools


def pool_name(task: str, index: int) -> str:
    """`embedding`, then `embedding-2`, ...: the pool's name in errors, metrics, logs and /health/ready."""
    return task if index == 0 else f"{task}-{index + 1}"


def answering(pools: Iterable[tuple[str, Upstream]], name: str) -> list[tuple[str, Upstream]]:
    """The (task, pool) pairs that answer to `name`: those serving it in full, else those it is a short name of."""
    known = [(task, pool) for task, pool in pools if pool.limits is not None]
    exact = [(task, pool) for task, pool in known if name in (pool.limits.model_id, pool.limits.stands_in_for)]
    return exact or [(task, pool) for task, pool in known if name in pool.limits.names()]


def ambiguous(name: str, candidates: list[tuple[str, Upstream]]) -> ApiError:
    tasks = sorted({task for task, _ in candidates})
    across = f" of several tasks ({', '.join(tasks)})" if len(tasks) > 1 else ""
    return ApiError(400, "invalid_request_error", f"model {clip(name)!r} names several models{across}: "
                    f"{', '.join(repr(pool.limits.model_id) for _, pool in candidates)}; use the full id")


class ModelPools:
    """The pools serving one task, in configuration order; the first is the default."""

    def __init__(self, task: str, pools: list[Upstream]):
        self.task = task
        self.pools = pools

    def route(self, requested: str | None) -> Upstream:
        """The pool serving `requested`; 404 naming the served models when none does."""
        if not requested:
            return self.pools[0]
        candidates = answering(((self.task, pool) for pool in self.pools), requested)
        if len(candidates) == 1:
            return candidates[0][1]
        if candidates:
            raise ambiguous(requested, candidates)
        served = [pool.limits.model_id for pool in self.pools if pool.limits is not None]
        unknown = len(self.pools) - len(served)
        if unknown == 0:
            raise ApiError(404, "model_not_found",
                           f"model {clip(requested)!r} is not served; served: {', '.join(map(repr, served))}",
                           self.task)
        if len(self.pools) == 1:
            return self.pools[0]  # its own call tells what is wrong (usually: the worker is down)
        raise ApiError(503, "upstream_unavailable",
                       f"model {clip(requested)!r} is not among the models known now ({', '.join(served) or 'none'});"
                       f" {unknown} {self.task} pool(s) have not answered yet: retry shortly", self.task, 1)


def task_of(registry: dict[str, ModelPools], aliases: dict, name: str) -> str:
    """The task of the model a protocol without a task in its path names (TorchServe, KServe, Open Inference):
    a served name, or an alias's first version's (`alias@version` pins one)."""
    base = name.partition(PIN_SEPARATOR)[0]
    wanted = aliases[base].versions[0].model if base in aliases else name
    candidates = answering(((task, pool) for task, pools in registry.items() for pool in pools.pools), wanted)
    if len(candidates) > 1:
        raise ambiguous(name, candidates)
    if not candidates:
        served = [pool.limits.model_id for pools in registry.values() for pool in pools.pools if pool.limits]
        raise ApiError(404, "model_not_found", f"model {clip(name)!r} is not served; served: "
                       f"{', '.join(map(repr, served + list(aliases)))}")
    return candidates[0][0]
