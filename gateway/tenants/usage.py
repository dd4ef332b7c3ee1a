"""What each tenant used: every finished request counted in Prometheus, in this process's totals, and in Redis'
totals when shared (written after the answer, never on its path); `GET /v1/usage` reads them back."""

import asyncio
from collections.abc import Awaitable

from gateway.metrics import TENANT_INPUTS, TENANT_REQUESTS, TENANT_TOKENS
from gateway.tenants.identity import Tenant
from gateway.tenants.limits import Limiter

USAGE_FIELDS = ("requests", "inputs", "tokens", "refused")
MAX_PENDING_USAGE_WRITES = 256


class UsageLedger:
    """Per-tenant totals; the daily token quota is spent here too (its counter belongs to the limiter)."""

    def __init__(self, limiter: Limiter):
        self.limiter = limiter
        self._totals: dict[str, dict[str, int]] = {}
        self.writes: set[asyncio.Task] = set()

    def record(self, tenant: Tenant, route: str, model: str, inputs: int, tokens: int, status: int) -> None:
        """Count a finished request: Prometheus, this process's totals, and Redis' totals when shared."""
        TENANT_REQUESTS.labels(tenant.name, route, model, str(status)).inc()
        if inputs:
            TENANT_INPUTS.labels(tenant.name, route, model).inc(inputs)
        if tokens:
            TENANT_TOKENS.labels(tenant.name, route, model).inc(tokens)
        counts = {"requests": 1, "inputs": inputs if status < 400 else 0, "tokens": tokens,
                  "refused": int(status == 429)}
        totals = self._totals.setdefault(tenant.name, dict.fromkeys(USAGE_FIELDS, 0))
        for name, count in counts.items():
            totals[name] += count
        redis = self.limiter.redis
        if redis is not None and len(self.writes) < MAX_PENDING_USAGE_WRITES:
            async def add(client):
                async with client.pipeline(transaction=False) as pipe:
                    for name, count in counts.items():
                        if count:
                            pipe.hincrby(f"tgu:{tenant.name}", name, count)
                    await pipe.execute()

            self._in_background(redis.run("usage", add))
        spending = self.limiter.spend_tokens(tenant, tokens)
        if spending is not None:
            self._in_background(spending)

    def _in_background(self, write: Awaitable[None]) -> None:
        task = asyncio.ensure_future(write)
        self.writes.add(task)
        task.add_done_callback(self.writes.discard)

    async def usage(self, tenant: Tenant) -> dict:
        """The tenant's totals (every gateway's through Redis, else this process's) and its limits."""
        totals = self._totals.get(tenant.name, dict.fromkeys(USAGE_FIELDS, 0))
        scope = "process"
        if self.limiter.redis is not None:
            shared = await self.limiter.redis.run("usage", lambda client: client.hgetall(f"tgu:{tenant.name}"))
            if shared is not None:
                totals = {name: int(shared.get(name.encode(), 0)) for name in USAGE_FIELDS}
                scope = "all gateways"
        limits = tenant.spec.model_dump(exclude={"keys_sha256"}, exclude_none=True)
        used_today = await self.limiter.tokens_today(tenant.name) if tenant.spec.daily_tokens else None
        return {"tenant": tenant.name, "counted_by": scope, **totals, "limits": limits,
                **({"tokens_today": used_today} if used_today is not None else {})}
