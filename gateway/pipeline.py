"""The call pipeline: every task's call, from every route of every protocol, runs through these stages in order.

1. tenant: the call's inputs counted and the tenant's limits taken (requests, inputs, concurrency, daily
   tokens) in one admission; the identity was established by the edge from the headers alone;
2. rollout: the model name resolved (registry rule, alias -> version, pin), the tenant's model permission (a
   task that names no model runs on its upstream);
3. cache: per input, single-flight (gateway/cache.py), when the task is cached and the model's fingerprint known;
4. upstream: the pool's breaker, bulkhead, deadline and retries (gateway/upstream/), merged with concurrent
   calls where the task allows;
5. merge: the per-input values (cached, shared, computed) assembled into the task's answer;
6. usage: the model and tokens recorded for the tenant's usage and the audit line (written by the edge), and
   the alias's shadow mirrored in the background.
A stage that does not apply to a task says so in the task's declaration (gateway/tasks/).
"""

from fastapi import Request

from gateway.cache import Computed, Scope
from gateway.contract import MAX_TIMEOUT_S, MIN_TIMEOUT_S
from gateway.errors import ApiError
from gateway.registry import ModelPools, task_of
from gateway.rollout import VERSION_HEADER
from gateway.tasks import AnswerT, CallT, Task
from gateway.tenants import ANONYMOUS
from gateway.upstream import Upstream

TIMEOUT_HEADER = "X-Request-Timeout"


async def run(request: Request, task: Task[CallT, AnswerT], call: CallT) -> AnswerT:
    """The task's answer to `call`, through every stage of the pipeline."""
    state = request.scope.setdefault("state", {})
    inputs = state["inputs"] = task.inputs(call)
    tenant = state.get("tenant")
    admission = None
    if tenant is not None:
        admission = await request.app.state.tenants.admit(tenant, inputs, state.get("route", "other"),
                                                          state.get("background", False))
        if admission.headers:
            state.setdefault("response_headers", {}).update(admission.headers)
    try:
        pool, model = (route(request, task.upstream, call.model, call.user) if task.names_model
                       else (upstream(request, task.upstream), None))
        answer = await _answer(request, task, pool, call, model)
        if task.shadowed:
            _mirror(request, task, call, answer)
        state["model"], state["tokens"] = answer.model, answer.tokens
        return answer
    finally:
        if admission is not None:
            admission.release()


def route(request: Request, task: str, model: str | None, user: str | None = None) -> tuple[Upstream, str | None]:
    """The pool of `task` that serves `model` (None: the task's default), and the model name to ask it for:
    `model`, or for an alias of the routing file the version chosen for this caller (gateway/rollout.py).
    404/503 saying why when no pool serves it; 403 when the tenant may not use it."""
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


def upstream(request: Request, name: str) -> Upstream:
    """The named upstream client (a call that is no task's: GPU management), or 503 when this gateway was started
    without it."""
    client = request.app.state.upstreams.get(name)
    if client is None:
        raise ApiError(503, "upstream_unavailable", f"the {name} service is not configured on this gateway", name)
    return client


def model_task(request: Request, name: str) -> str:
    """The task of the model a protocol without a task in its path names (TorchServe, KServe, Open Inference),
    by the registry's rule and the routing file's aliases; 404 or 400 saying why."""
    return task_of(request.app.state.pools, request.app.state.routing().aliases, name)


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


async def _answer(request: Request, task: Task[CallT, AnswerT], pool: Upstream, call: CallT,
                  model: str | None) -> AnswerT:
    """The cache, upstream and merge stages: from the response cache and the pool's worker."""
    task.check(call, pool)
    deadline = request_timeout(request, pool, call.timeout)
    cache = request.app.state.cache
    identity = pool.model_identity() if task.cached and cache is not None else None
    if identity is None:
        return await task.compute(pool, call, model, deadline)
    scope = Scope(task.upstream, *identity, task.cache_options(call))

    async def compute(indices: list[int], timeout: float) -> Computed:
        computed = await task.compute_items(pool, call, model, indices, timeout)
        if computed.fingerprint != scope.fingerprint:
            pool.model_changed()
        return computed

    read = "no-cache" not in request.headers.get("cache-control", "").lower()
    values, outcome = await cache.resolve(scope, task.cache_items(call), compute, deadline, read, task.valid(pool))
    return task.assemble(call, values, outcome, scope, pool)


def _mirror(request: Request, task: Task[CallT, AnswerT], call: CallT, answer: AnswerT) -> None:
    """When this request was chosen for its alias's shadow: the task again on the shadow's pool, in the
    background after the primary answered, and the agreement exported (gateway/rollout.py). Once per request."""
    shadowed = request.scope.get("state", {}).pop("shadow", None)
    if shadowed is None:
        return
    alias, model = shadowed
    shadow_call = task.shadow_call(call)

    async def run_shadow() -> AnswerT:
        return await _answer(request, task, request.app.state.pools[task.upstream].route(model), shadow_call, model)

    request.app.state.shadows.mirror(alias, model, run_shadow, lambda shadow: task.agreement(answer, shadow))
