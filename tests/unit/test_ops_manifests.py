"""The compose file and Kubernetes manifests must agree with the code: ports, service names, probes."""

from pathlib import Path

import yaml

from services.classifier.settings import ClassifierSettings
from services.embedding.settings import EmbeddingSettings
from services.gpu.settings import GpuSettings
from services.reranking.settings import RerankingSettings
from torchgate.v1 import classifier_pb2, embedding_pb2, gpu_pb2, reranking_pb2

OPS = Path(__file__).resolve().parents[2] / "ops" / "docker"
WORKERS = {
    "gpu": (GpuSettings, gpu_pb2.DESCRIPTOR.services_by_name["GpuService"].full_name),
    "embedding": (EmbeddingSettings, embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].full_name),
    "reranking": (RerankingSettings, reranking_pb2.DESCRIPTOR.services_by_name["RerankingService"].full_name),
    "classifier": (ClassifierSettings, classifier_pb2.DESCRIPTOR.services_by_name["ClassifierService"].full_name),
}


def default_port(settings_class) -> int:
    return settings_class.model_fields["port"].default


def test_compose_healthchecks_probe_each_workers_service_on_its_port():
    compose = yaml.safe_load((OPS / "docker-compose.yml").read_text())["services"]
    for name, (settings_class, service) in WORKERS.items():
        assert compose[name]["command"] == ["python", "-m", f"services.{name}"]
        assert compose[name]["healthcheck"]["test"][-2:] == [f"127.0.0.1:{default_port(settings_class)}", service]
        assert f"{name}:{default_port(settings_class)}" in compose["gateway"]["environment"].values()


def test_kubernetes_workers_use_native_grpc_probes_and_headless_services():
    documents = list(yaml.safe_load_all((OPS / "k8s" / "workers.yaml").read_text()))
    deployments = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}
    services = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Service"}
    for name, (settings_class, service) in WORKERS.items():
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        port = default_port(settings_class)
        assert container["readinessProbe"]["grpc"] == {"port": port, "service": service}
        assert container["startupProbe"]["grpc"] == {"port": port, "service": service}
        assert services[name]["spec"]["clusterIP"] == "None"
        assert services[name]["spec"]["ports"][0]["port"] == port


def test_the_gateway_manifest_points_at_every_worker_service():
    gateway = next(yaml.safe_load_all((OPS / "k8s" / "gateway.yaml").read_text()))
    env = {e["name"]: e.get("value") for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]}
    for name, (settings_class, _) in WORKERS.items():
        assert env[f"TORCHGATE_GATEWAY_{name.upper()}__ADDRESSES"] == (
            f"{name}.torchgate.svc.cluster.local:{default_port(settings_class)}")
