"""The call to one worker service: through its circuit breaker, its bulkhead (and each tenant's share of it) and
a deadline; its health followed and its published limits learned.

gRPC itself retries UNAVAILABLE with exponential backoff and jitter inside the deadline and balances
round-robin across replicas (the channel's service config, gateway/upstream/channel.py); this adds what gRPC lacks.
"""

import asyncio
import contextlib
import logging
import time

import grpc
import pybreaker
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.config import UpstreamSettings
from gateway.contract import Limits
from gateway.errors import ApiError, error_from_grpc
from gateway.merging import CallMerger, Mergeable
from gateway.metrics import TENANT_REFUSALS, UPSTREAM_CALLS
from gateway.tenants.identity import current_tenant
from gateway.upstream.breaker import BreakerMonitor
from gateway.upstream.channel import channel_options, grpc_target
from torchgate.priority import BACKGROUND, PRIORITY_KEY, background_work
from torchgate.telemetry import REQUEST_ID_HEADER, request_id
from torchgate.v1 import common_pb2

log = logging.getLogger(__name__)

_BACKGROUND_METADATA = ((PRIORITY_KEY, BACKGROUND),)

# Failures that say the upstream is unhealthy; client errors and overload do not trip the breaker.
BREAKER_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                           grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})
# Trailing metadata a worker sets when it dropped a request whose deadline passed in its queue (overload, not a fault).
WORKER_ERROR_KEY = "torchgate-error"
QUEUE_EXPIRED = "queue_expired"
# How often a known worker's limits are read again (replicas may restart with other settings).
LIMITS_REFRESH_S = 30.0
LIMITS_RETRY_S = 1.0
# After the health protocol says SERVING again, an open breaker tries at once; each early trial that failed
# since the breaker last closed doubles the wait (1 s, 2 s, 4 s, ...) up to breaker_reset_s.
EARLY_TRIAL_BACKOFF_S = 1.0
HEALTH_RETRY_S = 0.5


def _worker_error(error: grpc.aio.AioRpcError) -> str:
    return next((value for key, value in error.trailing_metadata() or () if key == WORKER_ERROR_KEY), "")


class Upstream:
    """Calls one worker service through its breaker, bulkhead and deadline; probes its health."""

    def __init__(self, name: str, service: str, stub_class: type, settings: UpstreamSettings,
                 interceptors: list | None = None, credentials: grpc.ChannelCredentials | None = None,
                 tls_server_name: str = "", serves_model: bool = False):
        self.name = name
        self.serves_model = serves_model
        self.service = service
        self.settings = settings
        self._target, self._options = grpc_target(settings.addresses), channel_options(service, settings)
        if credentials is not None and tls_server_name:
            self._options.append(("grpc.ssl_target_name_override", tls_server_name))
        self._stub_class, self._interceptors = stub_class, interceptors
        self._retiring: set[asyncio.Task] = set()
        self._open(credentials)
        self.monitor = BreakerMonitor(name)
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=settings.breaker_fail_max, reset_timeout=settings.breaker_reset_s,
            listeners=[self.monitor], throw_new_error_on_trip=False, name=name,
        )
        self.in_flight = 0
        self.interactive_at = -1e9  # monotonic: the last call that was not background work (a batch job's)
        self._by_tenant: dict[str | None, int] = {}
        self._trial_in_flight = False
        self._merger = CallMerger(self._send, settings.merge_requests)
        self.limits: Limits | None = None
        # Whether `limits` describe the model serving now: false from a restart or a reply naming another
        # fingerprint until Info answers again (the response cache is bypassed meanwhile).
        self._limits_current = False
        self._relearn = asyncio.Event()
        self.serving = False
        self._tasks: list[asyncio.Task] = []

    def _open(self, credentials: grpc.ChannelCredentials | None) -> None:
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(self._target, options=self._options,
                                                     interceptors=self._interceptors)
        else:
            self.channel = grpc.aio.secure_channel(self._target, credentials, options=self._options,
                                                   interceptors=self._interceptors)
        self.stub = self._stub_class(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    def start(self) -> None:
        """Begin watching health and learning the worker's published limits; call inside the serving loop."""
        self._health_watch = asyncio.create_task(self._follow_health())
        self._tasks.append(self._health_watch)
        if self.serves_model:
            self._tasks.append(asyncio.create_task(self._learn_limits()))

    def use_credentials(self, credentials: grpc.ChannelCredentials) -> None:
        """Present `credentials` (a rotated client certificate) from now on: a new channel takes every new call, and
        the old one closes once the calls on it have finished (within the upstream's deadline). The health watch
        moves to the new channel at once, so the upstream never reads as not serving on the way."""
        retired = self.channel
        self._open(credentials)
        self._tasks.remove(self._health_watch)
        self._health_watch.cancel()
        self._health_watch = asyncio.create_task(self._follow_health())
        self._tasks.append(self._health_watch)
        closing = asyncio.ensure_future(retired.close(grace=self.settings.timeout_s))
        self._retiring.add(closing)
        closing.add_done_callback(self._retiring.discard)

    async def _follow_health(self) -> None:
        """Watch the service's health through the channel; when it turns SERVING, end an open breaker's wait.

        With wait_for_ready the watch reaches a replica only once one is healthy, so a watch that answers after
        every replica died is the replacement saying SERVING.
        """
        request = health_pb2.HealthCheckRequest(service=self.service)
        while True:
            try:
                async for reply in self._health.Watch(request, wait_for_ready=True):
                    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
                    if self.serving and not serving:
                        self.model_changed()
                    if serving and not self.serving:
                        self._relearn.set()
                        await self._early_trial()
                    self.serving = serving
            except grpc.aio.AioRpcError:
                pass
            if self.serving:
                self.model_changed()
            self.serving = False
            await asyncio.sleep(HEALTH_RETRY_S)

    async def _early_trial(self) -> None:
        """Let an open breaker try now, or after its back-off when earlier early trials failed."""
        if self.breaker.current_state != pybreaker.STATE_OPEN:
            return
        failed = self.monitor.failed_trials
        backoff = min(self.settings.breaker_reset_s, EARLY_TRIAL_BACKOFF_S * 2 ** (failed - 1)) if failed else 0.0
        await asyncio.sleep(max(0.0, self.monitor.opened_at + backoff - time.monotonic()))
        if self.breaker.current_state == pybreaker.STATE_OPEN:
            log.info("health says SERVING: circuit breaker tries now", extra={"upstream": self.name,
                                                                             "failed_trials": failed})
            self.breaker.half_open()

    async def _learn_limits(self) -> None:
        while True:
            self._relearn.clear()
            try:
                info = await self.stub.Info(common_pb2.InfoRequest(), timeout=self.settings.info_timeout_s)
                self.limits = Limits.from_info(info)
                self._limits_current = not self._relearn.is_set()
                wait = LIMITS_REFRESH_S
            except grpc.aio.AioRpcError:
                wait = LIMITS_RETRY_S
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._relearn.wait()

    def model_changed(self) -> None:
        """The model behind this pool may have changed (a restart, a reply naming another fingerprint):
        read Info again now, and treat the known fingerprint as stale until it answers."""
        self._limits_current = False
        self._relearn.set()

    def model_identity(self) -> tuple[str, str] | None:
        """(model id, fingerprint) of the model serving now, when known."""
        if not self._limits_current or self.limits is None or not self.limits.fingerprint:
            return None
        return self.limits.model_id, self.limits.fingerprint

    def is_upstream_fault(self, error: grpc.aio.AioRpcError, timeout: float) -> bool:
        """Whether a failed call says the worker is unhealthy; nothing the client chose may say so.

        A deadline counts only when it was at least BREAKER_MIN_DEADLINE_S long (a client asking for 1 ms
        learns nothing about the worker), and never when the worker itself dropped the request from its
        queue (that is overload, answered like RESOURCE_EXHAUSTED).
        """
        code = error.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return timeout >= self.settings.breaker_min_deadline_s and _worker_error(error) != QUEUE_EXPIRED
        return code in BREAKER_CODES

    async def call(self, method: str, request, timeout: float | None = None, merge: Mergeable | None = None):
        """Call `method` on the stub; raises ApiError with the HTTP mapping on any failure.

        With `merge`, the request may travel merged with concurrent ones (gateway/merging.py); the reply is
        still this request's own.
        """
        if self.in_flight >= self.settings.max_concurrency:
            raise ApiError(429, "overloaded", f"too many concurrent requests for the {self.name} service; retry later",
                           self.name, 1, shared=True)
        tenant = current_tenant.get()
        self._check_share(tenant)
        if not background_work.get():
            self.interactive_at = time.monotonic()
        self.in_flight += 1
        self._by_tenant[tenant] = self._by_tenant.get(tenant, 0) + 1
        timeout = timeout or self.settings.timeout_s
        try:
            if merge is not None and self.limits is not None and self.settings.merge_requests > 1:
                return await self._merger.call(method, request, timeout, merge, request_id.get(),
                                               self.limits.max_items)
            return await self._send(method, request, timeout, (request_id.get(),))
        finally:
            self.in_flight -= 1
            self._by_tenant[tenant] -= 1
            if not self._by_tenant[tenant]:
                del self._by_tenant[tenant]

    def _check_share(self, tenant: str | None) -> None:
        """Once the pool is half busy, a tenant holds at most an equal share of MAX_CONCURRENCY among the tenants
        with requests in it: one tenant's flood leaves room for the others' requests."""
        if tenant is None or self.in_flight < self.settings.max_concurrency // 2:
            return
        share = max(1, self.settings.max_concurrency // len(self._by_tenant.keys() | {tenant}))
        if self._by_tenant.get(tenant, 0) >= share:
            TENANT_REFUSALS.labels(tenant, self.name, "pool_share").inc()
            raise ApiError(429, "overloaded", f"the {self.name} service is busy and this tenant holds its share of "
                                              f"it ({share} requests); retry later", self.name, 1)

    async def _send(self, method: str, request, timeout: float, request_ids: tuple[str, ...]):
        """One RPC through the breaker, on behalf of the requests named by `request_ids`."""
        trial = self.breaker.current_state != pybreaker.STATE_CLOSED
        if trial and self._trial_in_flight:
            raise self._circuit_open()
        self._trial_in_flight |= trial
        answered: grpc.aio.AioRpcError | None = None
        cancelled: asyncio.CancelledError | None = None
        try:
            with self.breaker.calling():
                try:
                    metadata = tuple((REQUEST_ID_HEADER, rid) for rid in request_ids)
                    if background_work.get():
                        metadata += _BACKGROUND_METADATA
                    reply = await getattr(self.stub, method)(request, timeout=timeout, metadata=metadata)
                except grpc.aio.AioRpcError as error:
                    if self.is_upstream_fault(error, timeout):
                        raise
                    answered = error
                except asyncio.CancelledError as error:
                    cancelled = error
        except pybreaker.CircuitBreakerError:
            UPSTREAM_CALLS.labels(self.name, "CIRCUIT_OPEN").inc()
            raise self._circuit_open() from None
        except grpc.aio.AioRpcError as error:
            UPSTREAM_CALLS.labels(self.name, error.code().name).inc()
            raise error_from_grpc(error.code(), error.details(), self.name) from None
        finally:
            if trial:
                self._trial_in_flight = False
        uninformative = cancelled or (answered and answered.code() == grpc.StatusCode.DEADLINE_EXCEEDED)
        if trial and uninformative:
            # A trial that ended for the client's reasons (its disconnect, its short deadline) proves nothing,
            # though pybreaker took it for a success: the next call is the trial again.
            self.breaker.half_open()
        if cancelled:
            UPSTREAM_CALLS.labels(self.name, "CLIENT_CANCELLED").inc()
            raise cancelled
        if answered:
            UPSTREAM_CALLS.labels(self.name, answered.code().name).inc()
            raise error_from_grpc(answered.code(), answered.details(), self.name, _worker_error(answered)) from None
        UPSTREAM_CALLS.labels(self.name, "OK").inc()
        return reply

    def _circuit_open(self) -> ApiError:
        remaining = self.settings.breaker_reset_s - (time.monotonic() - self.monitor.opened_at)
        return ApiError(503, "upstream_unavailable",
                        f"the {self.name} service is failing; its circuit breaker is open", self.name,
                        max(1.0, remaining), shared=True)

    async def probe(self, timeout: float) -> dict:
        """Health of the service (gRPC health protocol) with breaker state and probe latency."""
        started = time.perf_counter()
        try:
            reply = await self._health.Check(health_pb2.HealthCheckRequest(service=self.service), timeout=timeout)
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.aio.AioRpcError as error:
            status = "UNKNOWN_SERVICE" if error.code() == grpc.StatusCode.NOT_FOUND else "UNREACHABLE"
        return {
            "status": status,
            "breaker": self.breaker.current_state,
            "failures": self.breaker.fail_counter,
            "in_flight": self.in_flight,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        }

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.channel.close()
        await asyncio.gather(*self._retiring)
