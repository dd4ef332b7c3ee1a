"""Whether a tenant's limits let a request in: token buckets for requests and for inputs, concurrent requests, a
daily token quota. With Redis (TORCHGATE_GATEWAY_LIMITS_URL, else CACHE_URL) the buckets and quotas are shared
by every gateway process and replica through one Lua script (atomic, on Redis' clock); without it, or while it
is down with LIMITS_FAIL_OPEN (the default), each process keeps its own buckets.
"""

import datetime
import math
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

from gateway.errors import ApiError
from gateway.metrics import TENANT_QUOTA_USED, TENANT_REFUSALS
from gateway.redis_client import SharedRedis
from gateway.tenants.identity import Tenant

# Atomically takes `cost` from every bucket (KEYS[i], ARGV rate, burst, cost per key) or from none, on Redis' clock.
# Returns {allowed, remaining_1, wait_1, remaining_2, wait_2, ...} with the waits in milliseconds.
TAKE_SCRIPT = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local levels = {}
local allowed = 1
for i = 1, #KEYS do
  local rate, burst, cost = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i])
  local state = redis.call('HMGET', KEYS[i], 'level', 'at')
  local level = tonumber(state[1]) or burst
  local at = tonumber(state[2]) or t
  level = math.min(burst, level + math.max(0, t - at) * rate)
  levels[i] = level
  if level < cost then allowed = 0 end
end
local out = {allowed}
for i = 1, #KEYS do
  local rate, burst, cost = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i])
  local level = levels[i]
  if allowed == 1 then level = level - cost end
  redis.call('HSET', KEYS[i], 'level', tostring(level), 'at', tostring(t))
  redis.call('PEXPIRE', KEYS[i], math.ceil(burst / rate * 1000) + 1000)
  out[#out + 1] = math.floor(level)
  out[#out + 1] = math.ceil(math.max(0, cost - level) / rate * 1000)
end
return out
"""


@dataclass(frozen=True)
class Bucket:
    name: str  # "requests" or "inputs"
    rate: float
    burst: int
    cost: int


@dataclass
class _Level:
    level: float
    at: float


@dataclass
class LocalBuckets:
    """The same buckets as TAKE_SCRIPT, in this process."""

    levels: dict[str, _Level] = field(default_factory=dict)

    def take(self, tenant: str, buckets: list[Bucket]) -> tuple[bool, list[tuple[int, float]]]:
        now = time.monotonic()
        states = []
        for bucket in buckets:
            state = self.levels.setdefault(f"{tenant}:{bucket.name}", _Level(bucket.burst, now))
            state.level = min(bucket.burst, state.level + (now - state.at) * bucket.rate)
            state.at = now
            states.append(state)
        allowed = all(state.level >= bucket.cost for state, bucket in zip(states, buckets, strict=True))
        result = []
        for state, bucket in zip(states, buckets, strict=True):
            if allowed:
                state.level -= bucket.cost
            result.append((math.floor(state.level), max(0.0, bucket.cost - state.level) / bucket.rate))
        return allowed, result


@dataclass
class Admission:
    """A request let in: the RateLimit headers to answer with; release() when it is done."""

    limiter: "Limiter"
    tenant: str
    headers: dict[str, str]
    held: bool = True  # counted among the tenant's requests in flight

    def release(self) -> None:
        if self.held:
            self.limiter.leave(self.tenant)


def _policy_headers(buckets: list[Bucket], levels: list[tuple[int, float]]) -> dict[str, str]:
    """IETF RateLimit-Policy / RateLimit (draft-ietf-httpapi-ratelimit-headers): quota = burst, window = the
    time an empty bucket takes to refill; remaining and seconds until the next unit per bucket."""
    if not buckets:
        return {}
    policy = ", ".join(f'"{b.name}";q={b.burst};w={max(1, math.ceil(b.burst / b.rate))}' for b in buckets)
    state = ", ".join(f'"{b.name}";r={max(0, remaining)};t={math.ceil(wait)}'
                      for b, (remaining, wait) in zip(buckets, levels, strict=True))
    return {"RateLimit-Policy": policy, "RateLimit": state}


class Limiter:
    """Per-tenant token buckets, concurrency and daily token quota; shared through Redis when given."""

    def __init__(self, redis: SharedRedis | None, fail_open: bool):
        self.redis = redis
        self.fail_open = fail_open
        self.local = LocalBuckets()
        self._quota_used: dict[str, int] = {}
        # Requests in flight per tenant name in this process (by name: they outlive a reload of the file).
        self.in_flight: dict[str, int] = {}

    def leave(self, tenant: str) -> None:
        self.in_flight[tenant] -= 1
        if not self.in_flight[tenant]:
            del self.in_flight[tenant]

    async def admit(self, tenant: Tenant, inputs: int, route: str, background: bool = False) -> Admission:
        """Let a request in or refuse it (429 saying which limit, 413 for more inputs than the tenant may send at
        once). A batch job's line (`background`) meets the per-request input limit and the daily token quota only:
        its rate and concurrency are the job runner's (gateway/jobs/), and it must not take them from the tenant's
        requests."""
        spec = tenant.spec
        inputs_burst = spec.inputs_burst or max(1, math.ceil(spec.inputs_per_second or 0))
        if spec.inputs_per_second and inputs > inputs_burst:
            raise ApiError(413, "request_too_large", f"the request has {inputs} inputs; this tenant may send at "
                                                     f"most {inputs_burst} at once: split the request")
        if background:
            await self._check_quota(tenant, route)
            return Admission(self, tenant.name, {}, held=False)
        buckets = []
        if spec.requests_per_second:
            buckets.append(Bucket("requests", spec.requests_per_second,
                                  spec.burst or max(1, math.ceil(spec.requests_per_second)), 1))
        if spec.inputs_per_second and inputs:
            buckets.append(Bucket("inputs", spec.inputs_per_second, inputs_burst, inputs))
        held = self.in_flight.get(tenant.name, 0)
        if spec.max_concurrency and held >= spec.max_concurrency:
            raise self._refused(tenant, route, "concurrency", 1, {},
                                f"tenant {tenant.name!r} has {held} requests in flight, its limit")
        self.in_flight[tenant.name] = held + 1  # held while the checks below wait on Redis
        try:
            await self._check_quota(tenant, route)
            headers = {}
            if buckets:
                allowed, levels = await self._take(tenant.name, buckets)
                headers = _policy_headers(buckets, levels)
                if not allowed:
                    waits = [wait for _, wait in levels]
                    limit = buckets[waits.index(max(waits))].name
                    raise self._refused(tenant, route, limit, max(waits), headers,
                                        f"tenant {tenant.name!r} is over its {limit} rate")
        except BaseException:
            self.leave(tenant.name)
            raise
        return Admission(self, tenant.name, headers)

    async def _check_quota(self, tenant: Tenant, route: str) -> None:
        daily = tenant.spec.daily_tokens
        if not daily:
            return
        used = await self.tokens_today(tenant.name)
        TENANT_QUOTA_USED.labels(tenant.name).set(min(used / daily, 1.0))
        if used >= daily:
            raise self._refused(tenant, route, "daily_tokens", _seconds_to_midnight(), {},
                                f"tenant {tenant.name!r} used its {daily} tokens for today (UTC)")

    @staticmethod
    def _refused(tenant: Tenant, route: str, limit: str, retry_after: float, headers: dict[str, str],
                 message: str) -> ApiError:
        TENANT_REFUSALS.labels(tenant.name, route, limit).inc()
        return ApiError(429, "rate_limited", f"{message}; retry after Retry-After seconds", None,
                        max(retry_after, 0.001), headers)

    async def _take(self, tenant: str, buckets: list[Bucket]) -> tuple[bool, list[tuple[int, float]]]:
        if self.redis is not None:
            keys = [f"tgl:{tenant}:{bucket.name}" for bucket in buckets]
            args = [value for bucket in buckets for value in (bucket.rate, bucket.burst, bucket.cost)]
            reply = await self.redis.run("limits", lambda client: client.eval(TAKE_SCRIPT, len(keys), *keys, *args))
            if reply is not None:
                return bool(reply[0]), [(int(reply[1 + 2 * i]), int(reply[2 + 2 * i]) / 1000)
                                        for i in range(len(buckets))]
            if not self.fail_open:
                raise ApiError(503, "limits_unavailable", "rate limits cannot be checked right now; retry shortly",
                               None, 1)
        return self.local.take(tenant, buckets)

    async def tokens_today(self, tenant: str) -> int:
        key = f"tgq:{tenant}:{datetime.datetime.now(datetime.UTC).date().isoformat()}"
        if self.redis is not None:
            used = await self.redis.run("limits", lambda client: client.get(key))
            if used is not None or self.fail_open is False:
                return int(used or 0)
        return self._quota_used.get(key, 0)

    def spend_tokens(self, tenant: Tenant, tokens: int) -> Awaitable[None] | None:
        """Count a finished request's tokens against its tenant's daily quota: here at once, and in Redis by
        the returned awaitable when shared."""
        if not tenant.spec.daily_tokens or tokens <= 0:
            return None
        key = f"tgq:{tenant.name}:{datetime.datetime.now(datetime.UTC).date().isoformat()}"
        self._quota_used[key] = self._quota_used.get(key, 0) + tokens
        if self.redis is None:
            return None

        async def spend(client):
            async with client.pipeline(transaction=False) as pipe:
                pipe.incrby(key, tokens)
                pipe.expire(key, 2 * 86400)
                await pipe.execute()

        return self.redis.run("limits", spend)


def _seconds_to_midnight() -> float:
    now = datetime.datetime.now(datetime.UTC)
    tomorrow = (now + datetime.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()
