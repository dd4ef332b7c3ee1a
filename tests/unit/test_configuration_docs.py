import re
from pathlib import Path

from gateway.config import GatewaySettings, UpstreamSettings
from services.classifier.settings import ClassifierSettings
from services.embedding.settings import EmbeddingSettings
from services.gpu.settings import GpuSettings
from services.reranking.settings import RerankingSettings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
WORKER_SETTINGS = {"GPU": GpuSettings, "EMBEDDING": EmbeddingSettings, "RERANKING": RerankingSettings,
                   "CLASSIFIER": ClassifierSettings}


def documented(variable: str) -> bool:
    patterns = {variable}
    for worker in WORKER_SETTINGS:
        patterns.add(variable.replace(f"TORCHGATE_{worker}_", "TORCHGATE_<WORKER>_"))
        patterns.add(variable.replace(f"TORCHGATE_GATEWAY_{worker}__", "TORCHGATE_GATEWAY_<UPSTREAM>__"))
    return any(f"`{pattern}`" in README for pattern in patterns)


def variables(settings_class, prefix: str) -> set[str]:
    names = set()
    for name, field in settings_class.model_fields.items():
        alias = field.validation_alias
        names.add(alias.choices[0] if alias is not None else f"{prefix}{name}".upper())
    return names


def test_every_environment_variable_is_in_the_readme_table():
    expected = set()
    for worker, settings_class in WORKER_SETTINGS.items():
        expected |= variables(settings_class, f"TORCHGATE_{worker}_")
    gateway = variables(GatewaySettings, "TORCHGATE_GATEWAY_")
    for upstream in WORKER_SETTINGS:
        gateway.discard(f"TORCHGATE_GATEWAY_{upstream}")
        expected |= variables(UpstreamSettings, f"TORCHGATE_GATEWAY_{upstream}__")
    expected |= gateway
    missing = sorted(v for v in expected if not documented(v))
    assert not missing, f"add these to README.md's configuration table: {missing}"


def test_the_readme_documents_no_variable_that_does_not_exist():
    # Read by scripts/ only.
    known = {"RUN_DIR", "PYTHON", "START_TIMEOUT", "STOP_TIMEOUT", "<WORKER>_REPLICAS", "EMBEDDING_MODELS",
             "RERANKING_MODELS", "CLASSIFIER_MODELS", "CONTAINER_ENGINE", "IMAGE_VARIANT", "IMAGE_BASE",
             "TORCH_INDEX_URL", "PUBLISH_HOST", "MODELS"}
    for variable in set(re.findall(r"`(TORCHGATE_[A-Z_<>]+)`", README)):
        if variable.removeprefix("TORCHGATE_") in known:
            continue
        generic = variable.replace("<WORKER>", "EMBEDDING").replace("<UPSTREAM>", "EMBEDDING")
        if generic.removeprefix("TORCHGATE_") in known:
            continue
        assert documented(generic), variable
        field = generic.removeprefix("TORCHGATE_GATEWAY_EMBEDDING__").removeprefix("TORCHGATE_GATEWAY_")
        for worker in WORKER_SETTINGS:
            field = field.removeprefix(f"TORCHGATE_{worker}_")
        field = field.removeprefix("TORCHGATE_").lower()
        all_fields = {*GatewaySettings.model_fields, *UpstreamSettings.model_fields}
        for settings_class in WORKER_SETTINGS.values():
            all_fields |= set(settings_class.model_fields)
        assert field in all_fields, f"README documents {variable}, which no settings class reads"
