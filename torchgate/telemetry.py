"""OpenTelemetry tracing, switched on only when a collector endpoint is configured; the request id."""

import contextvars
import logging
import re
import uuid

from torchgate import __version__

log = logging.getLogger(__name__)

# X-Request-ID at the REST edge, x-request-id in gRPC metadata: one id from the client's log to the worker's.
REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID_CHARS = 128
_REQUEST_ID_PATTERN = re.compile(rf"[A-Za-z0-9._:/+=@-]{{1,{MAX_REQUEST_ID_CHARS}}}")
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


def accepted_request_id(offered: str | None) -> str:
    """The caller's id when it is 1-128 plain characters (it reaches logs and headers), else a fresh one."""
    if offered and _REQUEST_ID_PATTERN.fullmatch(offered):
        return offered
    return uuid.uuid4().hex


def configure_tracing(service_name: str, otlp_endpoint: str, **attributes: str) -> bool:
    """Install an OTLP-exporting tracer provider; returns whether tracing is on.

    `service_name` is `torchgate-<process>`; attributes (the model, say) join service.version on the resource.
    """
    if not otlp_endpoint:
        return False
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": service_name, "service.version": __version__, **attributes})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True)))
    trace.set_tracer_provider(provider)
    log.info("tracing to %s", otlp_endpoint, extra={"service": service_name})
    return True


def grpc_filter():
    """Which gRPC calls get spans: all but the health protocol's, which would drown the real ones."""
    from opentelemetry.instrumentation.grpc import filters

    return filters.negate(filters.health_check())
