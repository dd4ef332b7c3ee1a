"""Prometheus metrics of the gateway."""

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter("torchgate_gateway_requests_total", "REST requests by route and status", ["route", "status"])
HTTP_SECONDS = Histogram(
    "torchgate_gateway_request_seconds", "REST request latency", ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
UPSTREAM_CALLS = Counter("torchgate_gateway_upstream_calls_total", "gRPC calls by upstream and outcome",
                         ["upstream", "code"])
BREAKER_STATE = Gauge("torchgate_gateway_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open",
                      ["upstream"])
