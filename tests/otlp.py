"""A trace receiver speaking the OpenTelemetry collector's own protocol (OTLP/gRPC) on loopback."""

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span it is sent, flattened, with the service.name of the resource that sent it."""

    def __init__(self):
        self._spans: list[Span] = []
        self._lock = threading.Lock()

    def Export(self, request, context):
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(Span(resource.get("service.name", ""), span.name, span.trace_id.hex(),
                                         span.span_id.hex(), span.parent_span_id.hex(),
                                         {a.key: _value(a.value) for a in span.attributes} | {
                                             f"resource.{k}": v for k, v in resource.items()}))
        with self._lock:
            self._spans.extend(received)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)

    def wait_for(self, condition, timeout: float = 20) -> list[Span]:
        """The spans once `condition(spans)` holds; fails after `timeout`."""
        give_up = time.monotonic() + timeout
        while not condition(spans := self.spans()):
            assert time.monotonic() < give_up, f"spans never met the condition: {[s.name for s in spans]}"
            time.sleep(0.1)
        return spans


def _value(value):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@contextmanager
def otlp_receiver() -> Iterator[tuple[Receiver, int]]:
    """(receiver, port) of an OTLP/gRPC trace endpoint on 127.0.0.1."""
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield receiver, port
    finally:
        server.stop(0)
