"""The gateway application factory."""

import gc
import ipaddress
import logging
import os
import tempfile
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.security import HTTPBearer

from gateway.cache import ResponseCache
from gateway.config import GatewaySettings
from gateway.contract import publish_limits
from gateway.errors import install_error_handlers
from gateway.jobs import Jobs
from gateway.json_routes import form_contract, json_routes
from gateway.metrics import MULTIPROCESS_DIR, forget_this_process
from gateway.middleware import EdgeMiddleware
from gateway.redis_client import SharedRedis
from gateway.registry import ModelPools, pool_name, pool_targets
from gateway.reloading import ConfigFile, Reloader
from gateway.rollout import Routing, Shadows, routes_loader
from gateway.routes import (
    classify,
    cohere,
    documents,
    embeddings,
    gpu,
    health,
    jobs,
    models,
    open_inference,
    rerank,
    torchserve,
    usage,
)
from gateway.tasks.catalog import MODEL_TASKS
from gateway.tenants import Directory, Limiter, TenantGate
from gateway.upstream import Upstream
from torchgate import __version__
from torchgate.logs import configure_logging
from torchgate.ports import announce_port
from torchgate.telemetry import configure_tracing, grpc_filter
from torchgate.tls import client_credentials
from torchgate.v1 import (
    classifier_pb2,
    classifier_pb2_grpc,
    documents_pb2,
    documents_pb2_grpc,
    embedding_pb2,
    embedding_pb2_grpc,
    gpu_pb2,
    gpu_pb2_grpc,
    reranking_pb2,
    reranking_pb2_grpc,
)

log = logging.getLogger(__name__)

# On SIGTERM, how long in-flight requests may take before uvicorn closes their connections.
GRACEFUL_SHUTDOWN_S = 10

# name -> (gRPC service, stub class); every upstream is built the same way from its settings.
UPSTREAMS = {
    "gpu": (gpu_pb2.DESCRIPTOR.services_by_name["GpuService"].full_name, gpu_pb2_grpc.GpuServiceStub),
    "embedding": (embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].full_name,
                  embedding_pb2_grpc.EmbeddingServiceStub),
    "reranking": (reranking_pb2.DESCRIPTOR.services_by_name["RerankingService"].full_name,
                  reranking_pb2_grpc.RerankingServiceStub),
    "classifier": (classifier_pb2.DESCRIPTOR.services_by_name["ClassifierService"].full_name,
                   classifier_pb2_grpc.ClassifierServiceStub),
    "documents": (documents_pb2.DESCRIPTOR.services_by_name["DocumentService"].full_name,
                  documents_pb2_grpc.DocumentServiceStub),
}


# Room for a batch file's multipart framing and its purpose field, past the file's own limit.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# Routers behind the API key (health and metrics stay open for probes and scrapers).
API_ROUTERS = (embeddings.router, rerank.router, cohere.router, classify.router, documents.router, gpu.router,
               models.router, usage.router)
# Routers whose POST routes carry more than a body (a model in the path, a multipart upload): FastAPI runs them.
PATH_ROUTERS = (classify.model_path_router, torchserve.router, open_inference.router, jobs.router)
# Probes and scrapers: neither traced nor access-logged (they would drown the requests that matter).
PROBE_PATHS = frozenset({"/health/live", "/health/ready", "/metrics", "/ping", "/v2/health/live",
                         "/v2/health/ready"})
# Paths the API key never guards: probes, scrapers and the API's own documentation (and the Open Inference
# Protocol's server metadata: a name, a version, the extensions).
OPEN_PATHS = PROBE_PATHS | {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/v2"}


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def tenant_gate(settings: GatewaySettings, redis: SharedRedis | None) -> TenantGate:
    """Tenants from the file (reloaded), else one unlimited tenant holding API_KEYS, else everyone anonymous.
    A tenants file that does not load stops the start, since serving without it would be open."""
    limiter = Limiter(redis, settings.limits_fail_open)
    if settings.tenants_file:
        return TenantGate(ConfigFile(settings.tenants_file, Directory.from_file, "tenants file"), limiter)
    keys = [key.strip() for key in settings.api_keys.split(",") if key.strip()]
    return TenantGate(Directory.from_api_keys(keys) if keys else None, limiter)


NO_ALIASES = Routing()


def served_names(app: FastAPI) -> set[str] | None:
    """Every model name the registry routes, or None while a pool has not answered Info yet."""
    pools = [pool for registry in getattr(app.state, "pools", {}).values() for pool in registry.pools]
    if not pools or any(pool.limits is None for pool in pools):
        return None
    return set().union(*(pool.limits.names() for pool in pools))


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """Build the app; upstream channels open in the lifespan, inside the serving event loop."""
    settings = settings or GatewaySettings()
    tracing = configure_tracing("torchgate-gateway", settings.otlp_endpoint)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        interceptors = None
        if tracing:
            from opentelemetry.instrumentation.grpc import aio_client_interceptors

            interceptors = aio_client_interceptors(filter_=grpc_filter())
        credentials = None
        if settings.tls_ca:
            # A rotated client certificate (its file replaced) reaches every upstream's new calls; see
            # Upstream.use_credentials.
            certificate = ConfigFile(settings.tls_cert or settings.tls_ca, lambda _: client_credentials(settings),
                                     "client certificate", on_reload=lambda renewed: [
                                         upstream.use_credentials(renewed)
                                         for upstream in app.state.upstreams.values()])
            credentials = certificate.value
            reloader.files.append(certificate)
        app.state.upstreams, app.state.pools = {}, {}
        for task, (service, stub) in UPSTREAMS.items():
            task_settings = getattr(settings, task)
            pools = [Upstream(pool_name(task, index), service, stub,
                              task_settings.model_copy(update={"addresses": target}), interceptors, credentials,
                              settings.tls_server_name, serves_model=task in MODEL_TASKS)
                     for index, target in enumerate(pool_targets(task_settings.addresses))]
            app.state.upstreams |= {pool.name: pool for pool in pools}
            if task in MODEL_TASKS:
                app.state.pools[task] = ModelPools(task, pools)
        for client in app.state.upstreams.values():
            client.start()
        if settings.cache:
            app.state.cache = ResponseCache(settings.cache_bytes, redis_clients.get(settings.cache_url),
                                            settings.cache_ttl_s)
        reloader.start()
        await app.state.jobs.start()
        # What start-up built lives as long as the process: out of the collector's sight, a full collection
        # walks only what requests made (batch jobs made its pauses of ~100 ms the interactive p99).
        gc.freeze()
        log.info("gateway ready", extra={"upstreams": {name: client.settings.addresses
                                                       for name, client in app.state.upstreams.items()}})
        yield
        await app.state.jobs.close()
        if app.state.cache is not None:
            await app.state.cache.close()
        await reloader.close()
        await app.state.shadows.close()
        for client in redis_clients.values():
            await client.close()
        for client in app.state.upstreams.values():
            await client.close()
        forget_this_process()

    app = FastAPI(title="Torchgate", version=__version__, lifespan=lifespan,
                  description="Embeddings, reranking and intent classification over a gRPC mesh of model workers.")
    app.state.settings = settings
    app.state.cache = None
    # One client per Redis URL: the cache and the limits share one when they name the same server.
    redis_clients = {url: SharedRedis(url, settings.redis_timeout_s)
                     for url in dict.fromkeys((settings.cache_url, settings.limits_url or settings.cache_url)) if url}
    tenants = app.state.tenants = tenant_gate(settings, redis_clients.get(settings.limits_url or settings.cache_url))
    routing_file = (ConfigFile(settings.routes_file, routes_loader(lambda: served_names(app)), "routing file")
                    if settings.routes_file else None)
    app.state.routing = (lambda: routing_file.value) if routing_file else (lambda: NO_ALIASES)
    app.state.shadows = Shadows()
    reloader = app.state.reloader = Reloader([file for file in (tenants.file, routing_file) if file is not None])
    if not tenants.required and not _is_loopback(settings.host):
        log.warning("API keys are off and the gateway listens on %s: anyone who reaches it can use it; "
                    "set TORCHGATE_GATEWAY_TENANTS_FILE or TORCHGATE_GATEWAY_API_KEYS", settings.host)
    install_error_handlers(app)
    # The credential is checked by the edge middleware before the body is read; the dependency only documents it.
    documented_key = [Depends(HTTPBearer(auto_error=False))] if tenants.required else []
    for router in (*API_ROUTERS, *PATH_ROUTERS):
        app.include_router(router, dependencies=documented_key)
    app.include_router(health.router)
    app.state.api_routes = [route for router in (*API_ROUTERS, *PATH_ROUTERS, health.router)
                            for route in router.routes]
    routes = frozenset(route.path for route in app.state.api_routes)
    edge_routes = app.state.json_routes = json_routes(API_ROUTERS)
    app.state.jobs = Jobs(app, settings)
    app.add_middleware(EdgeMiddleware, max_body_bytes=settings.max_body_bytes, routes=routes, tenants=tenants,
                       raw_body_prefixes=(torchserve.RAW_BODY_PREFIX, open_inference.RAW_BODY_PREFIX),
                       open_paths=OPEN_PATHS, quiet_paths=PROBE_PATHS, json_routes=edge_routes,
                       upload_paths={jobs.FILES_PATH: settings.jobs_max_file_bytes + MULTIPART_OVERHEAD_BYTES})
    static_openapi = app.openapi

    def openapi() -> dict:
        """The schema with the limits each worker published (unknown until the worker answered Info), and the
        form routes' multipart bodies."""
        pools = getattr(app.state, "pools", {})
        return form_contract(publish_limits(static_openapi(), {task: pool.pools[0].limits
                                                               for task, pool in pools.items()}), edge_routes)

    app.openapi = openapi
    if tracing:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, excluded_urls=",".join(PROBE_PATHS), exclude_spans=["receive", "send"])
    return app


def main() -> None:
    """`python -m gateway`: serve the REST API with uvicorn on a socket bound here, so port 0 can be announced."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from gateway.http import HeaderTimeoutProtocol

    settings = GatewaySettings()
    configure_logging(settings.log_level, settings.log_format)
    config = uvicorn.Config("gateway.app:create_app", factory=True, host=settings.host, port=settings.port,
                            workers=settings.workers, loop="uvloop", http=HeaderTimeoutProtocol,
                            log_level=settings.log_level.lower(), access_log=False,
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    sock = config.bind_socket()
    if settings.port_file:
        announce_port(settings.port_file, sock.getsockname()[1])
    if config.workers > 1:
        with tempfile.TemporaryDirectory(prefix="torchgate-metrics-") as metrics_dir:
            os.environ.setdefault(MULTIPROCESS_DIR, metrics_dir)
            Multiprocess(config, sockets=[sock]).run()
        return
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        raise SystemExit(1)
