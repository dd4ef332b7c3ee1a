"""Prometheus metrics of the workers (one registry per process, labels per service and model)."""

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

REQUESTS = Counter("torchgate_worker_requests_total", "gRPC requests by method and status code",
                   ["method", "code"])
# What the alerts read where a scrape still answers: the process runs, but its gRPC health is not SERVING.
SERVING_STATE = Gauge("torchgate_worker_serving",
                      "1 while the worker's gRPC health is SERVING, 0 while it loads or drains")
IN_FLIGHT = Gauge("torchgate_worker_requests_in_flight", "gRPC calls being served now", ["method"])
REQUEST_SECONDS = Histogram("torchgate_worker_request_seconds", "gRPC request latency", ["method"],
                            buckets=_LATENCY_BUCKETS)
_QUEUE_DEPTH = Gauge("torchgate_batcher_queue_depth", "Inputs waiting for a batch", ["model"])
_QUEUE_WAIT = Histogram("torchgate_batcher_queue_wait_seconds", "Time a request waited before its first batch",
                        ["model"], buckets=_LATENCY_BUCKETS)
_INFERENCE = Histogram("torchgate_batcher_inference_seconds", "Tokenize + forward time of one batch", ["model"],
                       buckets=_LATENCY_BUCKETS)
_BATCH_SIZE = Histogram("torchgate_batcher_batch_size", "Inputs per batch", ["model"],
                        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
_BATCH_TOKENS = Histogram("torchgate_batcher_batch_tokens", "Padded tokens per batch (estimated)", ["model"],
                          buckets=(64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768))
_REJECTED = Counter("torchgate_batcher_rejected_total", "Requests refused because the queue was full", ["model"])


class BatcherMetrics:
    """The batcher's metric hooks, bound to one model's label."""

    def __init__(self, model: str):
        self.queue_depth = _QUEUE_DEPTH.labels(model)
        self.queue_wait = _QUEUE_WAIT.labels(model)
        self.inference_seconds = _INFERENCE.labels(model)
        self.batch_size = _BATCH_SIZE.labels(model)
        self.batch_tokens = _BATCH_TOKENS.labels(model)
        self.rejected = _REJECTED.labels(model)
