"""Server bootstrap shared by every worker: gRPC server, health, reflection, metrics, drain."""

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from services.runtime.config import WorkerSettings
from services.runtime.device import DeviceError, limit_blas_threads, require_gpu_or_exit
from services.runtime.errors import ModelNotFound
from services.runtime.interceptors import StatusInterceptor
from services.runtime.metrics import SERVING_STATE
from services.runtime.servicer import WorkerServicer
from torchgate.logs import configure_logging
from torchgate.ports import announce_port
from torchgate.telemetry import configure_tracing, grpc_filter
from torchgate.tls import server_credentials

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# Accept the gateway's keepalive pings (it pings idle channels to notice dead workers quickly).
SERVER_OPTIONS = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]

S = TypeVar("S", bound=WorkerSettings)

# How long a draining worker keeps serving after it reported NOT_SERVING: the gateway's health-checked channels
# hear it within milliseconds and stop sending calls before the server starts refusing them.
HEALTH_NOTICE_S = 1.0


class HealthService(HealthServicer):
    """grpc.health.v1 whose Watch streams can be ended: a stopping server waits for every open call, and the
    watchers (health-checking channels) never hang up by themselves, so a drain would always last its grace."""

    def __init__(self):
        super().__init__()
        self._closing = asyncio.Event()

    def end_watches(self) -> None:
        self._closing.set()

    async def Watch(self, request, context) -> None:
        watching = asyncio.ensure_future(super().Watch(request, context))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({watching, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watching.cancel()
            closing.cancel()
        if watching.done() and not watching.cancelled():
            watching.result()


class Worker:
    """One gRPC server around one servicer; NOT_SERVING until the servicer has loaded."""

    def __init__(self, servicer: WorkerServicer, settings: WorkerSettings, tracing: bool = False):
        self.servicer = servicer
        self.settings = settings
        self.service_name = servicer.SERVICE.full_name
        interceptors: list = [StatusInterceptor()]
        if tracing:
            from opentelemetry.instrumentation.grpc import aio_server_interceptor

            interceptors.insert(0, aio_server_interceptor(filter_=grpc_filter()))
        self.server = grpc.aio.server(
            interceptors=interceptors,
            options=[*SERVER_OPTIONS, *settings.connection_options(),
                     ("grpc.max_receive_message_length", settings.max_request_bytes())],
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
        self.health = HealthService()
        self.loading: asyncio.Task | None = None
        self.port = 0

    async def start(self) -> int:
        """Bind, start serving health and reflection, and begin loading; returns the bound port."""
        self.servicer.add_to_server(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (self.service_name, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME),
            self.server,
        )
        address, settings = f"{self.settings.host}:{self.settings.port}", self.settings
        if settings.tls_cert:
            credentials = server_credentials(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
            self.port = self.server.add_secure_port(address, credentials)
        else:
            self.port = self.server.add_insecure_port(address)
        for name in ("", self.service_name):
            await self.health.set(name, NOT_SERVING)
        await self.server.start()
        if settings.port_file:
            announce_port(settings.port_file, self.port)
        if self.settings.metrics_port:
            start_http_server(self.settings.metrics_port, addr=self.settings.host)
        log.info("listening", extra={"service": self.service_name, "port": self.port,
                                     "tls": "mtls" if settings.tls_client_ca else bool(settings.tls_cert)})
        self.loading = asyncio.create_task(self._load())
        return self.port

    async def _load(self) -> None:
        started = time.perf_counter()
        await self.servicer.load()
        for name in ("", self.service_name):
            await self.health.set(name, SERVING)
        SERVING_STATE.set(1)
        log.info("serving", extra={"service": self.service_name, "startup_s": round(time.perf_counter() - started, 2)})

    async def wait_serving(self) -> None:
        """Wait until loading finished; raises what loading raised."""
        await self.loading

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING, a moment for health-checking clients to route elsewhere, refuse new calls, let
        in-flight ones finish within `grace`, stop."""
        grace = self.settings.grace_period_s if grace is None else grace
        await self.health.enter_graceful_shutdown()
        SERVING_STATE.set(0)
        if self.loading and not self.loading.done():
            self.loading.cancel()
        # Calls a client sent before it heard NOT_SERVING would be cancelled by the stopping server.
        await asyncio.sleep(min(grace, HEALTH_NOTICE_S))
        self.health.end_watches()
        await self.server.stop(grace)
        await self.servicer.drain(grace)


# What an operator fixes in the configuration: one line naming it, exit 1, no traceback.
CONFIGURATION_ERRORS = (ModelNotFound, DeviceError)


def run_worker(build: Callable[[S], WorkerServicer], settings_class: type[S]) -> None:
    """Entry point of a worker process: configure, serve until SIGTERM/SIGINT (SIGHUP: servicer.reload()),
    drain, exit."""
    settings = settings_class()
    configure_logging(settings.log_level, settings.log_format)
    # Weights come from disk only; a hub lookup would hang or fail without the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    require_gpu_or_exit(settings.require_gpu)
    limit_blas_threads()
    model = getattr(settings, "model", "")
    tracing = configure_tracing(settings.service_name(), settings.otlp_endpoint,
                                **({"torchgate.model": model} if model else {}))
    try:
        servicer = build(settings)
    except CONFIGURATION_ERRORS as error:
        log.error("cannot start: %s", error)
        raise SystemExit(f"torchgate: {error}") from None
    sys.exit(asyncio.run(_serve(servicer, settings, tracing)))


async def _serve(servicer: WorkerServicer, settings: WorkerSettings, tracing: bool) -> int:
    worker = Worker(servicer, settings, tracing)
    await worker.start()
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    reloads: set[asyncio.Task] = set()

    def reload() -> None:
        if worker.loading.done():
            task = asyncio.ensure_future(servicer.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    stopping = asyncio.create_task(stop_requested.wait())
    await asyncio.wait({worker.loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if worker.loading.done() and not worker.loading.cancelled() and worker.loading.exception():
        error = worker.loading.exception()
        configuration_error = isinstance(error, CONFIGURATION_ERRORS)
        log.error("start-up failed: %s", error, exc_info=None if configuration_error else error)
        await worker.stop(0)
        if configuration_error:
            raise SystemExit(f"torchgate: {error}")
        return 1
    await stopping
    log.info("draining", extra={"grace_s": settings.grace_period_s})
    await worker.stop()
    log.info("stopped")
    return 0
