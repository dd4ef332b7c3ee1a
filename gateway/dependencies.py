"""Request-scoped helpers shared by the routes: upstream lookup, deadline, the fields every model route takes."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from fastapi import Request
from pydantic import Field

from gateway.cache import Compute, ResponseCache, Scope
from gateway.contract import Name, RequestBody
from gateway.errors import ApiError
from gateway.registry import ModelPools
from gateway.rollout import VERSION_HEADER
from gateway.tenants import ANONYMOUS
from gateway.upstream import Upstream

T = TypeVar("T")
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


def model_pool(request: Request, task: str, model: str | None,
               user: str | None = None) -> tuple[Upstream, str | None]:
    """The pool of `task` that serves `model` (None: the task's default), and the model name to ask it for:
    `model`, or for an alias of the routing file the version chosen for this caller (gateway/rollout.py).
    404/503 saying why when no pool serves it."""
    pools: ModelPools | None = request.app.state.pools.get(task)
    if pools is None:
        raise ApiError(503, "upstream_unavailable", f"the {task} service is not configured on this gateway", task)
    state = request.scope.setdefault("state", {})
    tenant = state.get("tenant")
    routing = request.app.state.routing()
    caller = user or (tenant.name if tenant is not None and tenant.name != ANONYMOUS else None)
    routed, alias = routing.resolve(model, caller, request.headers.get(VERSION_HEADER))
    try:
        pool = pools.route(routed)
    except ApiError as error:
        if error.status == 404 and routing.aliases:
            error.message += f"; aliases: {', '.join(map(repr, routing.aliases))}"
        raise
    if alias is not None:
        state["alias"] = (alias, pool.limits.model_id if pool.limits else pool.name)
        state.setdefault("response_headers", {})[VERSION_HEADER] = state["alias"][1]
        shadow = routing.shadow_of(alias)
        if shadow is not None:
            state["shadow"] = (alias, shadow.model)
    if tenant is not None and not tenant.may_use(pool.limits.names() if pool.limits else set()):
        raise ApiError(403, "permission_denied", f"tenant {tenant.name!r} may not use the {task} model "
                                                 f"{pool.limits.model_id if pool.limits else pool.name!r}")
    return pool, routed


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


def mirror(request: Request, task: str, run: Callable[[Upstream, str], Awaitable[T]],
           agree: Callable[[T], float | None]) -> None:
    """When this request was chosen for its alias's shadow: `run(shadow pool, shadow model)` in the background
    after the primary answered, and `agree(its result)` exported (gateway/rollout.py). Once per request."""
    shadowed = request.scope.get("state", {}).pop("shadow", None)
    if shadowed is None:
        return
    alias, model = shadowed

    async def run_shadow() -> T:
        return await run(request.app.state.pools[task].route(model), model)

    request.app.state.shadows.mirror(alias, model, run_shadow, agree)
