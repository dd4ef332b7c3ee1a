"""The compose file and Kubernetes manifests must agree with the code: ports, service names, probes."""

import subprocess
from pathlib import Path

import yaml

from gateway.app import GRACEFUL_SHUTDOWN_S
from services.classifier.settings import ClassifierSettings
from services.documents.settings import DocumentsSettings
from services.embedding.settings import EmbeddingSettings
from services.gpu.settings import GpuSettings
from services.reranking.settings import RerankingSettings
from torchgate.v1 import classifier_pb2, documents_pb2, embedding_pb2, gpu_pb2, reranking_pb2

OPS = Path(__file__).resolve().parents[2] / "ops" / "docker"
WORKERS = {
    "gpu": (GpuSettings, gpu_pb2.DESCRIPTOR.services_by_name["GpuService"].full_name),
    "embedding": (EmbeddingSettings, embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].full_name),
    "reranking": (RerankingSettings, reranking_pb2.DESCRIPTOR.services_by_name["RerankingService"].full_name),
    "classifier": (ClassifierSettings, classifier_pb2.DESCRIPTOR.services_by_name["ClassifierService"].full_name),
    "documents": (DocumentsSettings, documents_pb2.DESCRIPTOR.services_by_name["DocumentService"].full_name),
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
    deployments = {d["metadata"]["name"]: d for d in documents if d["kind"] in ("Deployment", "DaemonSet")}
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


def k8s_documents() -> list[dict]:
    return [document for path in sorted((OPS / "k8s").rglob("*.yaml")) if path.name != "kustomization.yaml"
            for document in yaml.safe_load_all(path.read_text())]


def workloads() -> list[dict]:
    return [d for d in k8s_documents() if d["kind"] in ("Deployment", "DaemonSet")]


def test_every_container_is_hardened_and_writes_only_to_volumes():
    for workload in workloads():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        volumes = {volume["name"] for volume in pod["volumes"]}
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            assert mounts.get("/tmp") in volumes, f"{container['name']} has no writable /tmp"


def test_termination_grace_covers_the_pre_stop_pause_and_the_drain():
    for workload in workloads():
        pod = workload["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        env = {item["name"]: item.get("value") for item in container.get("env", [])}
        name = workload["metadata"]["name"]
        if name == "gateway":
            drain = GRACEFUL_SHUTDOWN_S
        else:
            name = container["command"][-1].removeprefix("services.")
            settings_class = WORKERS[name][0]
            drain = float(env.get(f"TORCHGATE_{name.upper()}_GRACE_PERIOD_S",
                                  settings_class.model_fields["grace_period_s"].default))
        assert pod["terminationGracePeriodSeconds"] >= pause + drain + 5, name


def test_every_deployment_has_a_disruption_budget_and_the_gpu_worker_claims_no_gpu():
    budgets = {d["spec"]["selector"]["matchLabels"]["app"] for d in k8s_documents()
               if d["kind"] == "PodDisruptionBudget"}
    deployments = {d["metadata"]["name"] for d in workloads() if d["kind"] == "Deployment"}
    assert deployments <= budgets
    gpu = next(d for d in workloads() if d["metadata"]["name"] == "gpu")
    (container,) = gpu["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in str(container["resources"])
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"} in container["env"]


def test_the_two_model_example_points_the_gateway_at_a_pool_per_model_service():
    example = OPS / "k8s" / "examples" / "two-embedding-models"
    (patch,) = yaml.safe_load((example / "kustomization.yaml").read_text())["patches"]
    (operation,) = yaml.safe_load(patch["patch"])
    gateway = next(yaml.safe_load_all((OPS / "k8s" / "gateway.yaml").read_text()))
    env = gateway["spec"]["template"]["spec"]["containers"][0]["env"]
    index = int(operation["path"].rsplit("/", 2)[-2])
    assert env[index]["name"] == "TORCHGATE_GATEWAY_EMBEDDING__ADDRESSES", "the patch replaces the wrong variable"
    services = {d["metadata"]["name"] for path in (OPS / "k8s" / "workers.yaml", example / "embedding-bge.yaml")
                for d in yaml.safe_load_all(path.read_text()) if d["kind"] == "Service"}
    pools = [pool.split(".")[0] for pool in operation["value"].split(";")]
    assert pools == ["embedding", "embedding-bge"] and set(pools) <= services


def test_compose_and_kubernetes_run_the_images_that_make_images_builds():
    built = subprocess.run(["bash", "-c", 'source scripts/containers.sh && echo "$GATEWAY_IMAGE $WORKER_IMAGE"'],
                           cwd=OPS.parents[1], capture_output=True, text=True, check=True).stdout.split()
    gateway_image, worker_image = built
    compose = yaml.safe_load((OPS / "docker-compose.yml").read_text())["services"]
    assert compose["gateway"]["image"] == gateway_image
    assert {compose[name]["image"] for name in WORKERS} == {worker_image}
    images = {container["image"] for document in k8s_documents() if document["kind"] in ("Deployment", "DaemonSet")
              for container in document["spec"]["template"]["spec"]["containers"]}
    assert images == {gateway_image, worker_image}
