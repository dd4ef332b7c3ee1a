"""Prometheus metrics of the gateway; with several gateway processes, one exposition summed over all of them.

Several processes (TORCHGATE_GATEWAY_WORKERS > 1) share PROMETHEUS_MULTIPROC_DIR, where prometheus_client
keeps each process's values; a scrape answered by any process then reads them all.
"""

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

HTTP_REQUESTS = Counter("torchgate_gateway_requests_total", "REST requests by route and status", ["route", "status"])
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
HTTP_SECONDS = Histogram("torchgate_gateway_request_seconds", "REST request latency", ["route"],
                         buckets=LATENCY_BUCKETS)
UPSTREAM_CALLS = Counter("torchgate_gateway_upstream_calls_total", "gRPC calls by upstream and outcome",
                         ["upstream", "code"])
HEADER_TIMEOUTS = Counter("torchgate_gateway_header_timeouts_total",
                          "Connections closed because their request head did not arrive within the header timeout")
# Across processes the worst state counts: one process with an open breaker is an open breaker.
BREAKER_STATE = Gauge("torchgate_gateway_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open",
                      ["upstream"], multiprocess_mode="livemax")

CACHE_HITS = Counter("torchgate_gateway_cache_hits_total", "Inputs answered by the response cache, by tier "
                     "(local, redis, or shared: computed once for concurrent identical inputs)",
                     ["task", "model", "tier"])
CACHE_MISSES = Counter("torchgate_gateway_cache_misses_total", "Inputs the workers computed", ["task", "model"])
CACHE_EVICTIONS = Counter("torchgate_gateway_cache_evictions_total", "In-memory entries dropped for room",
                          ["task", "model"])
CACHE_BYTES = Gauge("torchgate_gateway_cache_bytes", "Bytes held by the in-memory cache tier, overhead included",
                    ["task", "model"], multiprocess_mode="livesum")
REDIS_ERRORS = Counter("torchgate_gateway_redis_errors_total", "Redis operations that failed or timed out",
                       ["operation"])

TENANT_REQUESTS = Counter("torchgate_gateway_tenant_requests_total", "Requests by tenant, route, serving model and "
                          "status", ["tenant", "route", "model", "status"])
TENANT_INPUTS = Counter("torchgate_gateway_tenant_inputs_total", "Inputs (texts, documents) by tenant",
                        ["tenant", "route", "model"])
TENANT_TOKENS = Counter("torchgate_gateway_tenant_tokens_total", "Tokens the models saw, by tenant",
                        ["tenant", "route", "model"])
TENANT_REFUSALS = Counter("torchgate_gateway_tenant_refusals_total", "Requests refused with 429 by a tenant's "
                          "limit (requests, inputs, concurrency, daily_tokens, pool_share)",
                          ["tenant", "route", "limit"])
TENANT_QUOTA_USED = Gauge("torchgate_gateway_tenant_quota_used_ratio", "Share of its daily token quota a tenant has "
                          "used today (UTC), as its last request found it", ["tenant"], multiprocess_mode="livemax")

ALIAS_REQUESTS = Counter("torchgate_gateway_alias_requests_total", "Requests for an alias of the routing file, by "
                         "the version that served and status", ["alias", "version", "status"])
ALIAS_SECONDS = Histogram("torchgate_gateway_alias_request_seconds", "Latency of requests for an alias, by version",
                          ["alias", "version"], buckets=LATENCY_BUCKETS)

SHADOW_CALLS = Counter("torchgate_gateway_shadow_calls_total", "Mirrored requests to an alias's shadow by outcome "
                       "(ok, dropped, or the error type)", ["alias", "shadow", "outcome"])
SHADOW_SECONDS = Histogram("torchgate_gateway_shadow_seconds", "Latency of the shadow's answers", ["alias", "shadow"],
                           buckets=LATENCY_BUCKETS)
SHADOW_AGREEMENT = Histogram("torchgate_gateway_shadow_agreement", "Agreement of shadow and primary: embeddings "
                             "cosine (or rank correlation of similarities), classify same intent, rerank same top-1",
                             ["alias", "shadow"], buckets=(0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1))

# Batch jobs (gateway/jobs/): the gauges read the job store, which every gateway process shares (hence livemax).
JOB_BATCHES = Gauge("torchgate_gateway_batches", "Batch jobs by status", ["status"], multiprocess_mode="livemax")
JOB_LINES = Counter("torchgate_gateway_batch_lines_total", "Batch lines answered by this process, by outcome "
                    "(completed, failed) and endpoint", ["outcome", "endpoint"])
JOB_RETRIES = Counter("torchgate_gateway_batch_line_retries_total", "Batch lines put back for a later attempt "
                      "(429, 503, 504), by status", ["status"])
JOB_QUEUED_LINES = Gauge("torchgate_gateway_batch_queued_lines", "Lines of waiting and running batches not yet "
                         "answered", multiprocess_mode="livemax")
JOB_OLDEST_QUEUED = Gauge("torchgate_gateway_batch_oldest_queued_seconds", "Age of the oldest batch with lines "
                          "not yet answered", multiprocess_mode="livemax")


def exposition() -> bytes:
    """The text exposition of this process, or of every gateway process in multiprocess mode."""
    if MULTIPROCESS_DIR not in os.environ:
        return generate_latest()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


def forget_this_process() -> None:
    """On a clean exit, drop this process's live gauges from the shared directory."""
    if MULTIPROCESS_DIR in os.environ:
        multiprocess.mark_process_dead(os.getpid())
