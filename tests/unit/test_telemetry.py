import json
import logging

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from services.classifier.settings import ClassifierSettings
from services.embedding.settings import EmbeddingSettings
from services.gpu.settings import GpuSettings
from services.reranking.settings import RerankingSettings
from torchgate.logs import JsonFormatter, TextFormatter
from torchgate.telemetry import accepted_request_id, request_id


@pytest.mark.parametrize(("settings_class", "name"), [
    (GpuSettings, "torchgate-gpu"), (EmbeddingSettings, "torchgate-embedding"),
    (RerankingSettings, "torchgate-reranking"), (ClassifierSettings, "torchgate-classifier")])
def test_each_worker_traces_under_its_own_service_name(settings_class, name):
    assert settings_class(port=0).service_name() == name


@pytest.mark.parametrize("offered", ["a", "req-1", "7f3a:42/retry=2", "x" * 128, "user@example.com"])
def test_plain_short_request_ids_are_kept(offered):
    assert accepted_request_id(offered) == offered


@pytest.mark.parametrize("offered", [None, "", "x" * 129, "two words", "line\nbreak", "quote\"", "é"])
def test_missing_or_unusable_request_ids_are_replaced_by_a_fresh_one(offered):
    replaced = accepted_request_id(offered)
    assert len(replaced) == 32 and int(replaced, 16) >= 0 and replaced != accepted_request_id(offered)


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("torchgate.test", logging.INFO, __file__, 1, message, (), None)


def test_log_lines_name_the_request_and_its_trace():
    tracer = TracerProvider().get_tracer("test")
    token = request_id.set("req-9")
    try:
        with tracer.start_as_current_span("request") as span:
            line = json.loads(JsonFormatter().format(record("hello")))
            trace_id = format(span.get_span_context().trace_id, "032x")
        assert line["request_id"] == "req-9" and line["trace_id"] == trace_id
        assert TextFormatter("%(message)s").format(record("hello")) == "hello [request_id=req-9]"
    finally:
        request_id.reset(token)
    outside = json.loads(JsonFormatter().format(record("idle")))
    assert "request_id" not in outside and "trace_id" not in outside
    assert not trace.get_current_span().get_span_context().is_valid
