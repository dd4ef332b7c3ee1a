"""The alert rules: promtool checks and tests them (each alert fires on its bad series, stays silent on good ones),
each has a runbook in the repository, and each reads only metrics the code defines."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.test_observability_ops import code_metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "ops" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "alerts_test.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus package) is not "
                                    "installed; `make test` installs it")


def rules(kind: str) -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if kind in rule]


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


@needs_promtool
def test_promtool_checks_the_rules_and_the_prometheus_config_loads_them():
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Not `promtool check config`: Debian builds Prometheus without Kubernetes discovery, which the config uses.
    config = yaml.safe_load((ROOT / "ops" / "prometheus" / "prometheus.yml").read_text())
    assert [(RULES.parent / name).resolve() for name in config["rule_files"]] == [RULES]


@needs_promtool
def test_every_alert_fires_on_its_bad_series_and_stays_silent_on_good_ones():
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_is_tested_firing_and_has_a_summary_description_and_runbook_in_the_repo():
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    firing = {case["alertname"] for case in cases if case["exp_alerts"]}
    for rule in rules("alert"):
        name, annotations = rule["alert"], rule["annotations"]
        assert name in firing, f"{name}: add series on which it fires to {RULE_TESTS.name}"
        assert {"summary", "description", "runbook_url"} <= set(annotations), name
        runbook = ROOT / annotations["runbook_url"]
        assert runbook.is_file(), f"{name}: {annotations['runbook_url']} is not in the repository"
        page = runbook.read_text()
        for part in ("**Means:**", "**Confirm**", "**Mitigate**", "**Over when**"):
            assert part in page, f"{runbook.name} lacks {part}"
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name


def test_the_rules_read_only_metrics_the_code_defines():
    known = set(code_metrics()) | {"up"}
    recorded = {rule["record"] for rule in rules("record")}
    for rule in rules("expr"):
        read = {re.sub(r"_(bucket|sum|count)$", "", name) if name.endswith(("_bucket", "_sum", "_count"))
                and not name.startswith("torchgate:") else name
                for name in re.findall(r"\b(?:torchgate[_:][a-z0-9_:]+|up)\b(?=\s*[{\[)\s]|$)", rule["expr"])}
        assert read <= known | recorded, (rule.get("alert") or rule.get("record"), read - known - recorded)


def test_the_model_workers_scale_on_a_queue_depth_the_adapter_serves_from_labels_the_scrape_sets():
    manifests = list(yaml.safe_load_all((ROOT / "ops/docker/k8s/autoscaling.yaml").read_text()))
    scaled_on = {hpa["spec"]["scaleTargetRef"]["name"]: [metric.get("pods", {}).get("metric", {}).get("name")
                                                          or metric["resource"]["name"]
                                                          for metric in hpa["spec"]["metrics"]]
                 for hpa in manifests}
    assert {name: scaled_on[name] for name in ("embedding", "reranking", "classifier")} == {
        name: ["torchgate_batcher_queue_depth"] for name in ("embedding", "reranking", "classifier")}
    assert "torchgate_batcher_queue_depth" in code_metrics()
    adapter = yaml.safe_load((ROOT / "ops/prometheus/adapter.yaml").read_text())["rules"]
    assert [rule["name"]["as"] for rule in adapter] == ["torchgate_batcher_queue_depth"]
    assert set(adapter[0]["resources"]["overrides"]) == {"namespace", "pod"}
    scrape = yaml.safe_load((ROOT / "ops/prometheus/prometheus.yml").read_text())["scrape_configs"]
    pods = next(job for job in scrape if job["job_name"] == "kubernetes-pods")
    assert {"namespace", "pod"} <= {relabel.get("target_label") for relabel in pods["relabel_configs"]}


@needs_promtool
def test_the_containerized_meshs_prometheus_loads_the_same_rules_and_scrapes_every_service():
    compose = yaml.safe_load((ROOT / "ops/docker/docker-compose.yml").read_text())["services"]
    prometheus = compose["prometheus"]
    config_file = prometheus["command"][0].removeprefix("--config.file=/etc/prometheus/")
    assert "../prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    checked = promtool("check", "config", str(RULES.parent / config_file))
    assert checked.returncode == 0 and "1 rule files found" in checked.stdout, checked.stdout + checked.stderr
    config = yaml.safe_load((RULES.parent / config_file).read_text())
    scraped = {target.split(":")[0] for job in config["scrape_configs"] for group in job["static_configs"]
               for target in group["targets"]}
    assert scraped == set(compose) - {"prometheus"}
