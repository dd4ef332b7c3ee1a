"""One client per worker service: a gRPC channel over its replicas, a circuit breaker, a bulkhead, deadlines.

gRPC itself retries UNAVAILABLE with exponential backoff and jitter inside the deadline and balances
round-robin across replicas (the channel's service config); this class adds what gRPC lacks.
"""

import ipaddress
import json
import logging
import time
from typing import Any

import grpc
import pybreaker
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.config import UpstreamSettings
from gateway.errors import ApiError, error_from_grpc
from gateway.metrics import BREAKER_STATE, UPSTREAM_CALLS

log = logging.getLogger(__name__)

# Failures that say the upstream is unhealthy; client errors and overload do not trip the breaker.
BREAKER_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                           grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})
_STATE_VALUES = {pybreaker.STATE_CLOSED: 0, pybreaker.STATE_HALF_OPEN: 1, pybreaker.STATE_OPEN: 2}


def grpc_target(addresses: str) -> str:
    """`ipv4:`/`ipv6:` target for a list of IP literals, `dns:///` for one host name."""
    parts = [part.strip() for part in addresses.split(",") if part.strip()]
    if not parts:
        raise ValueError("an upstream needs at least one address")
    hosts = [part.rsplit(":", 1)[0].strip("[]") for part in parts]
    try:
        versions = {ipaddress.ip_address(host).version for host in hosts}
    except ValueError:
        if len(parts) == 1:
            return f"dns:///{parts[0]}"
        raise ValueError(
            f"{addresses!r}: several replicas must be IP:port literals; for DNS use one name that resolves "
            "to every replica (a headless Service)"
        ) from None
    if len(versions) > 1:
        raise ValueError(f"{addresses!r}: mix of IPv4 and IPv6 replicas")
    return f"ipv{versions.pop()}:{','.join(parts)}"


def channel_options(service: str, settings: UpstreamSettings) -> list[tuple[str, Any]]:
    """Retries, round-robin, keepalive and fast reconnects, as gRPC channel configuration."""
    service_config = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{
            "name": [{"service": service}],
            "retryPolicy": {
                "maxAttempts": settings.retry_attempts,
                "initialBackoff": "0.05s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }],
    }
    return [
        ("grpc.service_config", json.dumps(service_config)),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2_000),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ]


def _not_a_breaker_failure(error: BaseException) -> bool:
    return not (isinstance(error, grpc.aio.AioRpcError) and error.code() in BREAKER_CODES)


class BreakerMonitor(pybreaker.CircuitBreakerListener):
    """Logs and exports state changes, and remembers when the breaker opened (for Retry-After)."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.opened_at = 0.0
        BREAKER_STATE.labels(upstream).set(0)

    def state_change(self, cb, old_state, new_state) -> None:
        if new_state.name == pybreaker.STATE_OPEN:
            self.opened_at = time.monotonic()
        if old_state and old_state.name == new_state.name:
            return  # a call that was in flight when the breaker opened failed too: not a transition
        BREAKER_STATE.labels(self.upstream).set(_STATE_VALUES[new_state.name])
        log.warning("circuit breaker %s -> %s", old_state.name if old_state else None, new_state.name,
                    extra={"upstream": self.upstream, "failures": cb.fail_counter})


class Upstream:
    """Calls one worker service through its breaker, bulkhead and deadline; probes its health."""

    def __init__(self, name: str, service: str, stub_class: type, settings: UpstreamSettings,
                 interceptors: list | None = None, credentials: grpc.ChannelCredentials | None = None,
                 tls_server_name: str = ""):
        self.name = name
        self.service = service
        self.settings = settings
        target, options = grpc_target(settings.addresses), channel_options(service, settings)
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
        else:
            if tls_server_name:
                options.append(("grpc.ssl_target_name_override", tls_server_name))
            self.channel = grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
        self.stub = stub_class(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)
        self.monitor = BreakerMonitor(name)
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=settings.breaker_fail_max, reset_timeout=settings.breaker_reset_s,
            exclude=[_not_a_breaker_failure], listeners=[self.monitor], throw_new_error_on_trip=False, name=name,
        )
        self.in_flight = 0
        self._trial_in_flight = False

    async def call(self, method: str, request, timeout: float | None = None):
        """Call `method` on the stub; raises ApiError with the HTTP mapping on any failure."""
        if self.in_flight >= self.settings.max_concurrency:
            raise ApiError(429, "overloaded", f"too many concurrent requests for the {self.name} service; retry later",
                           self.name, 1)
        trial = self.breaker.current_state != pybreaker.STATE_CLOSED
        if trial and self._trial_in_flight:
            raise self._circuit_open()
        self._trial_in_flight |= trial
        self.in_flight += 1
        try:
            with self.breaker.calling():
                reply = await getattr(self.stub, method)(request, timeout=timeout or self.settings.timeout_s)
        except pybreaker.CircuitBreakerError:
            UPSTREAM_CALLS.labels(self.name, "CIRCUIT_OPEN").inc()
            raise self._circuit_open() from None
        except grpc.aio.AioRpcError as error:
            UPSTREAM_CALLS.labels(self.name, error.code().name).inc()
            raise error_from_grpc(error.code(), error.details(), self.name) from None
        finally:
            self.in_flight -= 1
            if trial:
                self._trial_in_flight = False
        UPSTREAM_CALLS.labels(self.name, "OK").inc()
        return reply

    def _circuit_open(self) -> ApiError:
        remaining = self.settings.breaker_reset_s - (time.monotonic() - self.monitor.opened_at)
        return ApiError(503, "upstream_unavailable",
                        f"the {self.name} service is failing; its circuit breaker is open", self.name,
                        max(1.0, remaining))

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
        await self.channel.close()
