"""Tenants at the edge: who is calling (an API key or a JWT), and whether their limits let the request in.

The tenants file (TORCHGATE_GATEWAY_TENANTS_FILE, YAML) names each tenant's keys by their sha256, its token
buckets (requests and inputs per second, with bursts), its concurrent requests, an optional daily token quota
and the models it may use; an optional `jwt` section says which tokens to trust and which claim names the
tenant. TORCHGATE_GATEWAY_API_KEYS alone still works: one tenant, `api-keys`, without limits.

Authentication reads headers only, before a byte of the body; limits are taken once the body's inputs are
counted, before any upstream call. With Redis (TORCHGATE_GATEWAY_LIMITS_URL, else CACHE_URL) the buckets and
quotas are shared by every gateway process and replica through one Lua script (atomic, on Redis' clock);
without it, or while it is down with LIMITS_FAIL_OPEN (the default), each process keeps its own buckets.
"""

import asyncio
import contextvars
import datetime
import hashlib
import hmac
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Literal

import jwt
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.errors import ApiError
from gateway.metrics import TENANT_INPUTS, TENANT_REFUSALS, TENANT_REQUESTS, TENANT_TOKENS
from gateway.redis_client import SharedRedis
from gateway.reloading import ConfigFile

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
API_KEYS_TENANT = "api-keys"
ANONYMOUS = "anonymous"
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
# Verified tokens kept until they expire, so a token is checked once, not per request.
VERIFIED_TOKENS = 10_000
# An unknown `kid` fetches the JWKS again at most this often (a stream of forged kids cannot hammer the issuer).
JWKS_REFETCH_S = 1.0
JWKS_REFRESH_S = 300.0
JWKS_FETCH_TIMEOUT_S = 2.0
MAX_PENDING_USAGE_WRITES = 256
# The tenant of the request being served in this context (the upstream's fair share of a pool reads it).
current_tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_tenant", default=None)
_JWT_SHAPE = re.compile(rb"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


class TenantSpec(BaseModel):
    """One tenant of the file."""

    model_config = ConfigDict(extra="forbid")

    keys_sha256: list[str] = Field(default_factory=list)
    requests_per_second: float | None = Field(None, gt=0)
    burst: int | None = Field(None, ge=1)
    inputs_per_second: float | None = Field(None, gt=0)
    inputs_burst: int | None = Field(None, ge=1)
    max_concurrency: int | None = Field(None, ge=1)
    daily_tokens: int | None = Field(None, ge=1)
    models: list[str] = Field(default_factory=lambda: ["*"])

    @field_validator("keys_sha256")
    @classmethod
    def hex_digests(cls, digests: list[str]) -> list[str]:
        for digest in digests:
            if not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
                raise ValueError("keys_sha256 holds hex sha256 digests of the keys (64 hex digits), never keys")
        return [digest.lower() for digest in digests]


class JwtSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jwks_file: str = ""
    jwks_url: str = ""
    issuer: str
    audience: str
    algorithms: list[Literal[ASYMMETRIC_ALGORITHMS]] = Field(min_length=1)
    tenant_claim: str = "tenant"
    leeway_s: float = Field(30.0, ge=0, le=300)

    @model_validator(mode="after")
    def one_key_source(self):
        if bool(self.jwks_file) == bool(self.jwks_url):
            raise ValueError("jwt needs exactly one of jwks_file or jwks_url")
        return self


class TenantsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenants: dict[str, TenantSpec] = Field(default_factory=dict)
    jwt: JwtSpec | None = None


@dataclass(frozen=True)
class Tenant:
    """A caller the gateway knows, with its limits."""

    name: str
    spec: TenantSpec

    def may_use(self, names: set[str]) -> bool:
        return "*" in self.spec.models or bool(names & set(self.spec.models))


UNLIMITED = TenantSpec()


class JwtVerifier:
    """Verifies JWTs against the issuer's keys (a JWKS file, or a URL fetched with pyjwt's JWKS client)."""

    def __init__(self, spec: JwtSpec):
        self.spec = spec
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._fetching: asyncio.Lock | None = None
        self._background: asyncio.Future | None = None
        if spec.jwks_file:
            with open(spec.jwks_file) as handle:
                self._keys = self._parse(json.load(handle))

    @staticmethod
    def _parse(document: dict) -> dict[str, jwt.PyJWK]:
        keys = jwt.PyJWKSet.from_dict(document).keys
        return {key.key_id or "": key for key in keys}

    async def _refresh(self, reason: str) -> None:
        """Fetch the JWKS again; on failure the keys already known stay in use."""
        if not self.spec.jwks_url:
            return
        self._fetching = self._fetching or asyncio.Lock()
        async with self._fetching:
            if reason == "unknown kid" and time.monotonic() - self._fetched_at < JWKS_REFETCH_S:
                return
            self._fetched_at = time.monotonic()
            try:
                client = jwt.PyJWKClient(self.spec.jwks_url, cache_jwk_set=False, timeout=JWKS_FETCH_TIMEOUT_S)
                self._keys = self._parse(await asyncio.to_thread(client.fetch_data))
            except (jwt.PyJWKClientError, jwt.PyJWKSetError, OSError, ValueError) as error:
                log.warning("JWKS fetch failed (%s): keeping %d known keys", type(error).__name__, len(self._keys))

    async def verify(self, token: str) -> tuple[dict, float]:
        """The token's claims and its expiry (epoch seconds); ApiError 401 naming the rule that failed."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise _unauthorized("the token is not a well-formed JWT") from None
        algorithm = header.get("alg")
        if algorithm not in self.spec.algorithms:
            raise _unauthorized(f"token algorithm {str(algorithm)[:16]!r} is not allowed; allowed: "
                                f"{', '.join(self.spec.algorithms)}")
        kid = header.get("kid") or ""
        if kid not in self._keys:
            await self._refresh("unknown kid")
        elif self.spec.jwks_url and time.monotonic() - self._fetched_at > JWKS_REFRESH_S:
            self._fetched_at = time.monotonic()  # one background refresh, off this request's path
            self._background = asyncio.ensure_future(self._refresh("periodic"))
        key = self._keys.get(kid)
        if key is None:
            raise _unauthorized("the token's key id (kid) is not among the issuer's keys")
        try:
            claims = jwt.decode(token, key, algorithms=[algorithm], audience=self.spec.audience,
                                issuer=self.spec.issuer, leeway=self.spec.leeway_s,
                                options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise _unauthorized("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise _unauthorized("the token is not valid yet (nbf/iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise _unauthorized(f"the token's audience is not {self.spec.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise _unauthorized(f"the token's issuer is not {self.spec.issuer!r}") from None
        except jwt.InvalidSignatureError:
            raise _unauthorized("the token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as error:
            raise _unauthorized(f"the token lacks the {error.claim!r} claim") from None
        except jwt.PyJWTError:
            raise _unauthorized("the token does not verify") from None
        return claims, float(claims["exp"])


def _unauthorized(reason: str) -> ApiError:
    return ApiError(401, "authentication_error", reason)


class Directory:
    """One loaded tenants file (or the API_KEYS list): authenticates a request's Authorization header."""

    def __init__(self, tenants: dict[str, TenantSpec], verifier: JwtVerifier | None, source: str):
        self.tenants = {name: Tenant(name, spec) for name, spec in tenants.items()}
        self.verifier = verifier
        self.source = source
        self._digests = [(bytes.fromhex(digest), tenant) for tenant in self.tenants.values()
                         for digest in tenant.spec.keys_sha256]
        self._verified: OrderedDict[bytes, tuple[Tenant, float]] = OrderedDict()

    @classmethod
    def from_file(cls, path: str) -> "Directory":
        with open(path) as handle:
            document = yaml.safe_load(handle) or {}
        parsed = TenantsFile.model_validate(document)
        return cls(parsed.tenants, JwtVerifier(parsed.jwt) if parsed.jwt else None, path)

    @classmethod
    def from_api_keys(cls, keys: list[str]) -> "Directory":
        digests = [hashlib.sha256(key.encode()).hexdigest() for key in keys]
        return cls({API_KEYS_TENANT: TenantSpec(keys_sha256=digests)}, None, "TORCHGATE_GATEWAY_API_KEYS")

    async def authenticate(self, headers: list[tuple[bytes, bytes]]) -> Tenant:
        values = [value for name, value in headers if name == b"authorization"]
        if not values:
            raise _unauthorized("missing credentials: send Authorization: Bearer <API key or JWT>")
        if len(values) > 1:
            raise _unauthorized("several Authorization headers: send exactly one")
        scheme, _, token = values[0].partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            raise _unauthorized("send Authorization: Bearer <API key or JWT>")
        if token != token.strip():
            raise _unauthorized("the credential has leading or trailing whitespace (a newline from a file?)")
        if self.verifier is not None and _JWT_SHAPE.match(token):
            return await self._tenant_of_jwt(token)
        digest = hashlib.sha256(token).digest()
        found = None
        for known, tenant in self._digests:  # every digest compared, in constant time each
            if hmac.compare_digest(digest, known):
                found = tenant
        if found is None:
            raise _unauthorized("invalid API key")
        return found

    async def _tenant_of_jwt(self, token: bytes) -> Tenant:
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        claims, expires = await self.verifier.verify(token.decode("ascii"))
        name = claims.get(self.verifier.spec.tenant_claim)
        tenant = self.tenants.get(name) if isinstance(name, str) else None
        tenant = tenant or self.tenants.get(DEFAULT_TENANT)
        if tenant is None:
            raise ApiError(403, "permission_denied", f"the token's {self.verifier.spec.tenant_claim!r} claim names "
                                                     "no tenant of this gateway")
        self._verified[token] = (tenant, expires + self.verifier.spec.leeway_s)
        while len(self._verified) > VERIFIED_TOKENS:
            self._verified.popitem(last=False)
        return tenant


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

    def release(self) -> None:
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

    async def admit(self, tenant: Tenant, inputs: int, route: str) -> Admission:
        spec = tenant.spec
        buckets = []
        if spec.requests_per_second:
            buckets.append(Bucket("requests", spec.requests_per_second,
                                  spec.burst or max(1, math.ceil(spec.requests_per_second)), 1))
        if spec.inputs_per_second and inputs:
            burst = spec.inputs_burst or max(1, math.ceil(spec.inputs_per_second))
            if inputs > burst:
                raise ApiError(413, "request_too_large", f"the request has {inputs} inputs; this tenant may send at "
                                                         f"most {burst} at once: split the request")
            buckets.append(Bucket("inputs", spec.inputs_per_second, burst, inputs))
        held = self.in_flight.get(tenant.name, 0)
        if spec.max_concurrency and held >= spec.max_concurrency:
            raise self._refused(tenant, route, "concurrency", 1, {},
                                f"tenant {tenant.name!r} has {held} requests in flight, its limit")
        self.in_flight[tenant.name] = held + 1  # held while the checks below wait on Redis
        try:
            if spec.daily_tokens:
                used = await self.tokens_today(tenant.name)
                if used >= spec.daily_tokens:
                    raise self._refused(tenant, route, "daily_tokens", _seconds_to_midnight(), {},
                                        f"tenant {tenant.name!r} used its {spec.daily_tokens} tokens for today (UTC)")
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


USAGE_FIELDS = ("requests", "inputs", "tokens", "refused")


class TenantGate:
    """The edge's one entry to tenants: authenticate, admit, account. `directory` is a Directory, or the
    tenants file's (gateway/reloading.py reloads it), or None when every caller is anonymous."""

    def __init__(self, directory: "Directory | ConfigFile[Directory] | None", limiter: Limiter):
        self._directory = directory
        self.limiter = limiter
        self.anonymous = Tenant(ANONYMOUS, UNLIMITED)
        self._usage: dict[str, dict[str, int]] = {}
        self._writes: set[asyncio.Task] = set()

    def record(self, tenant: Tenant, route: str, model: str, inputs: int, tokens: int, status: int) -> None:
        """Count a finished request: Prometheus, this process's totals, and Redis' totals when shared."""
        TENANT_REQUESTS.labels(tenant.name, route, model, str(status)).inc()
        if inputs:
            TENANT_INPUTS.labels(tenant.name, route, model).inc(inputs)
        if tokens:
            TENANT_TOKENS.labels(tenant.name, route, model).inc(tokens)
        counts = {"requests": 1, "inputs": inputs if status < 400 else 0, "tokens": tokens,
                  "refused": int(status == 429)}
        totals = self._usage.setdefault(tenant.name, dict.fromkeys(USAGE_FIELDS, 0))
        for name, count in counts.items():
            totals[name] += count
        redis = self.limiter.redis
        if redis is not None and len(self._writes) < MAX_PENDING_USAGE_WRITES:
            async def add(client):
                async with client.pipeline(transaction=False) as pipe:
                    for name, count in counts.items():
                        if count:
                            pipe.hincrby(f"tgu:{tenant.name}", name, count)
                    await pipe.execute()

            task = asyncio.ensure_future(redis.run("usage", add))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)
        spending = self.limiter.spend_tokens(tenant, tokens)
        if spending is not None:
            task = asyncio.ensure_future(spending)
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def usage(self, tenant: Tenant) -> dict:
        """The tenant's totals (every gateway's through Redis, else this process's) and its limits."""
        totals = self._usage.get(tenant.name, dict.fromkeys(USAGE_FIELDS, 0))
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

    @property
    def directory(self) -> Directory | None:
        return self._directory.value if isinstance(self._directory, ConfigFile) else self._directory

    @property
    def file(self) -> "ConfigFile[Directory] | None":
        return self._directory if isinstance(self._directory, ConfigFile) else None

    @property
    def required(self) -> bool:
        return self._directory is not None

    async def authenticate(self, headers) -> Tenant:
        directory = self.directory
        if directory is None:
            return self.anonymous
        return await directory.authenticate(headers)
