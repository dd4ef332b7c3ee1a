"""The metrics table of docs/observability.md, the Grafana dashboard and the scrape config agree with the code."""

import json
import re
from pathlib import Path

import yaml
from prometheus_client.metrics import MetricWrapperBase

import gateway.metrics
import services.gpu.metrics
import services.runtime.metrics
import torchgate.tls
from services.classifier.settings import ClassifierSettings
from services.embedding.settings import EmbeddingSettings
from services.gpu.settings import GpuSettings
from services.reranking.settings import RerankingSettings

ROOT = Path(__file__).resolve().parents[2]
METRICS_PAGE = (ROOT / "docs/observability.md").read_text()


def code_metrics() -> dict[str, tuple[str, ...]]:
    """Exposed name -> label names, for every metric the gateway and the workers define."""
    found = {}
    for module in (gateway.metrics, services.runtime.metrics, torchgate.tls):
        for metric in vars(module).values():
            if isinstance(metric, MetricWrapperBase):
                suffix = "_total" if metric._type == "counter" else ""
                found[metric._name + suffix] = tuple(metric._labelnames)
    for family in services.gpu.metrics.GpuCollector().collect():
        found[family.name] = ("device", "name")
    return found


def test_every_metric_is_in_the_readme_table_with_its_labels():
    rows = dict(re.findall(r"^\| `(torchgate_[a-z_]+)` \| [a-z]+ \| ([^|]*) \|", METRICS_PAGE, re.M))
    for name, labels in code_metrics().items():
        assert name in rows, f"add {name} to the metrics table of docs/observability.md"
        assert sorted(re.findall(r"`(\w+)`", rows[name])) == sorted(labels), name
    assert set(rows) <= set(code_metrics()), "docs/observability.md lists a metric the code does not define"


def test_the_dashboard_queries_only_metrics_that_exist_and_covers_the_essentials():
    dashboard = json.loads((ROOT / "ops" / "grafana" / "torchgate-mesh.json").read_text())
    queried = {re.sub(r"_(bucket|sum|count)$", "", name)
               for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"torchgate_[a-z_]+", target["expr"])}
    known = set(code_metrics())
    assert queried <= known, queried - known
    assert {"torchgate_gateway_requests_total", "torchgate_gateway_request_seconds",
            "torchgate_batcher_queue_depth", "torchgate_batcher_batch_size", "torchgate_gateway_breaker_state",
            "torchgate_gpu_memory_used_bytes"} <= queried


def test_the_scrape_config_targets_the_default_metrics_ports():
    config = yaml.safe_load((ROOT / "ops" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {group["labels"]["service"]: group["targets"][0]
               for group in jobs["torchgate-workers"]["static_configs"]}
    for name, settings_class in (("gpu", GpuSettings), ("embedding", EmbeddingSettings),
                                 ("reranking", RerankingSettings), ("classifier", ClassifierSettings)):
        port = settings_class.model_fields["metrics_port"].default
        assert targets[f"torchgate-{name}"] == f"127.0.0.1:{port}"
