"""Request-scoped helpers shared by the routes: upstream lookup, deadline, the fields every model route takes."""

from dataclasses import dataclass

from fastapi import Request
from pydantic import Field

from gateway.cache import Compute, ResponseCache, Scope
from gateway.contract import Name, RequestBody
from gateway.errors import ApiError
from gateway.registry import ModelPools
from gateway.upstream import Upstream

TIMEOUT_HEADER = "X-Request-Timeout"
MAX_TIMEOUT_S = 600
# Below this a deadline cannot cover even the network hop; such requests are refused, not attempted.
MIN_TIMEOUT_S = 0.01


class ModelRequest(RequestBody):
    """Fields every model route accepts."""

    model: Name | None = Field(None, description="The served model id (or its last path part); empty for the default.")
    timeout: float | None = Field(None, ge=MIN_TIMEOUT_S, le=MAX_TIMEOUT_S,
                                  description="Deadline in seconds (else the X-Request-Timeout header).")


def upstream(request: Request, name: str) -> Upstream:
    """The named upstream client, or 503 when this gateway was started without it."""
    client = request.app.state.upstreams.get(name)
    if client is None:
        raise ApiError(503, "upstream_unavailable", f"the {name} service is not configured on this gateway", name)
    return client


def model_pool(request: Request, task: str, model: str | None) -> Upstream:
    """The pool of `task` that serves `model` (None: the task's default), or 404/503 saying why not."""
    pools: ModelPools | None = request.app.state.pools.get(task)
    if pools is None:
        raise ApiError(503, "upstream_unavailable", f"the {task} service is not configured on this gateway", task)
    pool = pools.route(model)
    tenant = request.scope.get("state", {}).get("tenant")
    if tenant is not None and not tenant.may_use(pool.limits.names() if pool.limits else set()):
        raise ApiError(403, "permission_denied", f"tenant {tenant.name!r} may not use the {task} model "
                                                 f"{pool.limits.model_id if pool.limits else pool.name!r}")
    return pool


def account(request: Request, model: str, tokens: int) -> None:
    """What the request used, for its tenant's usage and the audit line (gateway/middleware.py)."""
    request.state.model = model
    request.state.tokens = tokens


def request_timeout(request: Request, client: Upstream, body_timeout: float | None = None) -> float:
    """The request's deadline in seconds: the body's `timeout`, the X-Request-Timeout header, or the default."""
    if body_timeout is not None:
        return body_timeout
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return client.settings.timeout_s
    try:
        timeout = float(raw)
    except ValueError:
        timeout = -1.0
    if not MIN_TIMEOUT_S <= timeout <= MAX_TIMEOUT_S:
        raise ApiError(400, "invalid_request_error",
                       f"{TIMEOUT_HEADER} must be a number of seconds in [{MIN_TIMEOUT_S}, {MAX_TIMEOUT_S}]")
    return timeout


@dataclass(frozen=True)
class CacheUse:
    """The response cache as one request uses it: its key space, and whether it may read (Cache-Control)."""

    cache: ResponseCache
    scope: Scope
    read: bool

    async def resolve(self, items: list[bytes], compute: Compute, timeout: float, valid=bool):
        return await self.cache.resolve(self.scope, items, compute, timeout, self.read, valid)


def response_cache(request: Request, client: Upstream, task: str, options: tuple) -> CacheUse | None:
    """The cache for this request's inputs to `client`'s model under `options` (everything besides the inputs
    that changes a result); None when the cache is off or the serving model's fingerprint is not known now."""
    cache: ResponseCache | None = request.app.state.cache
    identity = client.model_identity()
    if cache is None or identity is None:
        return None
    directives = request.headers.get("cache-control", "").lower()
    return CacheUse(cache, Scope(task, *identity, options), read="no-cache" not in directives)
