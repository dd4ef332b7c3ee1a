"""One request, one trace, down to the batch, received by a real OTLP/gRPC endpoint; request ids in every
process's logs; metrics that stay true with several gateway processes."""

import json
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.processes import start_gateway, start_worker, wait_serving
from tests.network import refusing_port
from tests.otlp import otlp_receiver

REQUEST_ID = "checkout-7f3a:42"


@pytest.fixture
def traced(tmp_path):
    with otlp_receiver() as (receiver, port):
        telemetry = {"TORCHGATE_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "TORCHGATE_LOG_FORMAT": "json",
                     "OTEL_BSP_SCHEDULE_DELAY": "100"}
        worker, worker_port = start_worker(tmp_path, env={**telemetry, "TORCHGATE_LOG_LEVEL": "DEBUG"})
        gateway = None
        try:
            wait_serving(worker_port)
            gateway, url = start_gateway([worker_port], tmp_path, env=telemetry)
            yield receiver, url, worker.log, gateway.log
        finally:
            if gateway:
                gateway.stop()
            worker.stop()


def log_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_one_rest_request_is_one_trace_from_the_gateway_down_to_its_batch(traced):
    receiver, url, worker_log, gateway_log = traced
    with httpx.Client(base_url=url, timeout=30) as client:
        for probe in ("/health/live", "/health/ready", "/metrics"):
            client.get(probe)
        reply = client.post("/v1/embeddings", json={"input": ["trace me", "and me"]},
                            headers={"X-Request-ID": REQUEST_ID})
    assert reply.status_code == 200 and reply.headers["X-Request-ID"] == REQUEST_ID

    spans = receiver.wait_for(lambda spans: any(s.name == "batch" for s in spans)
                              and any(s.service == "torchgate-gateway" and not s.parent_id for s in spans))
    time.sleep(1)  # the gateway's request span may end a moment after the worker's
    spans = receiver.spans()
    batch = next(s for s in spans if s.name == "batch")
    tree = {s.span_id: s for s in spans if s.trace_id == batch.trace_id}
    roots = [s for s in tree.values() if not s.parent_id]
    assert len(roots) == 1 and roots[0].service == "torchgate-gateway", [(s.service, s.name) for s in roots]

    chain, span = [], batch
    while span.parent_id:
        span = tree[span.parent_id]
        chain.append((span.service, span.name))
    assert ("torchgate-embedding", "/torchgate.v1.EmbeddingService/Embed") == chain[0], chain
    assert any(service == "torchgate-gateway" and "EmbeddingService/Embed" in name for service, name in chain), chain
    assert {s.name for s in tree.values() if s.parent_id == batch.parent_id} >= {"queue", "batch"}
    # The two inputs ran in one batch, or in one batch on each device stream.
    batches = [s for s in tree.values() if s.name == "batch"]
    assert sum(s.attributes["torchgate.batch.request_inputs"] for s in batches) == 2
    assert all(s.attributes["torchgate.batch.size"] >= s.attributes["torchgate.batch.request_inputs"] for s in batches)
    assert batch.attributes["torchgate.device"] == "cpu" and batch.attributes["torchgate.dtype"]
    assert batch.attributes["resource.torchgate.model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert batch.attributes["resource.service.version"]

    print_tree(tree, roots[0])
    probes = [(s.service, s.name) for s in spans if "health" in s.name.lower() or "metrics" in s.name]
    assert probes == [], "health probes and scrapes are not traced"

    trace_id = batch.trace_id
    for path in (gateway_log, worker_log):
        about = [line for line in log_lines(path) if line.get("request_id") == REQUEST_ID]
        assert about, f"no log line of {path.name} names the request"
        assert all(line["trace_id"] == trace_id for line in about), about


def print_tree(tree: dict, span, depth: int = 0) -> None:
    """The trace for the record (`pytest -s` shows it)."""
    batch_attributes = {k.removeprefix("torchgate."): v for k, v in span.attributes.items()
                        if k.startswith("torchgate.") and not k.startswith("torchgate.model")}
    print(f"{span.service:21} {'  ' * depth}{span.name} {batch_attributes or ''}")
    for child in sorted((s for s in tree.values() if s.parent_id == span.span_id), key=lambda s: s.name):
        print_tree(tree, child, depth + 1)


def test_request_ids_are_generated_when_missing_or_unusable(traced):
    _, url, _, gateway_log = traced
    with httpx.Client(base_url=url, timeout=30) as client:
        generated = client.post("/v1/embeddings", json={"input": ""}).headers["X-Request-ID"]
        unusable = client.post("/v1/embeddings", json={"input": "x"},
                               headers={"X-Request-ID": "x" * 500}).headers["X-Request-ID"]
    assert len(generated) == 32 and len(unusable) == 32 and generated != unusable
    give_up = time.monotonic() + 10
    # The access line is written once the response has gone out: it may trail the reply a little.
    while not {generated, unusable} <= {line.get("request_id") for line in log_lines(gateway_log)}:
        assert time.monotonic() < give_up, "the request ids never reached the gateway's log"
        time.sleep(0.1)


def test_two_gateway_processes_count_every_request_exactly_once_on_every_scrape(tmp_path):
    gateway, url = start_gateway([refusing_port()], tmp_path, env={"TORCHGATE_GATEWAY_WORKERS": "2"})
    try:
        sent = 40
        for _ in range(sent):
            # A new connection each time, so both processes take requests.
            assert httpx.post(f"{url}/v1/embeddings", json={"input": ""}, timeout=10).status_code == 422
        for _ in range(6):
            scrape = httpx.get(f"{url}/metrics", timeout=10).text
            counted = [sample.value for family in text_string_to_metric_families(scrape)
                       for sample in family.samples
                       if sample.name == "torchgate_gateway_requests_total"
                       and sample.labels == {"route": "/v1/embeddings", "status": "422"}]
            assert counted == [sent], counted
    finally:
        gateway.stop()
