"""The model registry: per task one or more pools, each one model behind one gRPC target (its replicas).

A pool learns its model id and limits from its worker's Info (gateway/upstream.py); a request's `model` picks
the pool: the full id or its last path part, none for the task's first pool. Breaker, bulkhead, deadlines and
readiness belong to each pool's Upstream, so one model's failure never touches another's traffic.
"""

from gateway.contract import clip
from gateway.errors import ApiError
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


class ModelPools:
    """The pools serving one task, in configuration order; the first is the default."""

    def __init__(self, task: str, pools: list[Upstream]):
        self.task = task
        self.pools = pools

    def route(self, requested: str | None) -> Upstream:
        """The pool serving `requested`; 404 naming the served models when none does."""
        if not requested:
            return self.pools[0]
        for pool in self.pools:
            if pool.limits is not None and requested in pool.limits.names():
                return pool
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
