"""OpenTelemetry tracing, switched on only when a collector endpoint is configured."""

import logging

log = logging.getLogger(__name__)


def configure_tracing(service_name: str, otlp_endpoint: str) -> bool:
    """Install an OTLP-exporting tracer provider; returns whether tracing is on."""
    if not otlp_endpoint:
        return False
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True)))
    trace.set_tracer_provider(provider)
    log.info("tracing to %s", otlp_endpoint)
    return True
