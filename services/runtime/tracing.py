"""Trace spans of the batcher, per request: its wait in the queue and each batch that served it.

One forward pass serves many requests, while a trace follows one request. Each request's trace therefore
gets its own child spans, stamped afterwards with the times the batcher measured; `torchgate.batch.id` names
the shared forward pass, so the requests batched together can be found by that attribute.
"""

from opentelemetry import trace

from services.runtime.adapter import ModelDescription
from services.runtime.batcher import BatchOutcome

_tracer = trace.get_tracer("torchgate.batcher")


def record_batching(outcome: BatchOutcome, model: ModelDescription) -> None:
    """Add `queue` and `batch` spans under the current (request) span; nothing when it is not recorded."""
    if not outcome.batches or not trace.get_current_span().is_recording():
        return
    _tracer.start_span("queue", start_time=outcome.enqueued_ns).end(end_time=outcome.batches[0].started_ns)
    for batch in outcome.batches:
        span = _tracer.start_span("batch", start_time=batch.started_ns, attributes={
            "torchgate.batch.id": batch.batch_id,
            "torchgate.batch.size": batch.size,
            "torchgate.batch.tokens": batch.tokens,
            "torchgate.batch.request_inputs": batch.inputs,
            "torchgate.model": model.model_id,
            "torchgate.device": model.device,
            "torchgate.dtype": model.dtype,
        })
        span.end(end_time=batch.ended_ns)
