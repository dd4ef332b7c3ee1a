"""The configuration reference is generated from the settings classes (scripts/settings_reference.py, run by the
docs build), so it lists every setting of every component; these tests hold what generation cannot: every
setting says what it does, and no page names a variable that nothing reads."""

import importlib.util
import re
from pathlib import Path

from gateway.config import GatewaySettings, UpstreamSettings

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("settings_reference", ROOT / "scripts/settings_reference.py")
settings_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(settings_reference)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# Read by scripts/ only.
SCRIPT_VARIABLES = {"RUN_DIR", "PYTHON", "START_TIMEOUT", "STOP_TIMEOUT", "<WORKER>_REPLICAS", "EMBEDDING_MODELS",
                    "RERANKING_MODELS", "CLASSIFIER_MODELS", "CONTAINER_ENGINE", "IMAGE_VARIANT", "IMAGE_BASE",
                    "TORCH_INDEX_URL", "PUBLISH_HOST", "MODELS"}


def test_every_setting_of_every_component_has_a_description():
    classes = [GatewaySettings, UpstreamSettings, *settings_reference.WORKERS.values()]
    missing = [f"{settings.__name__}.{name}" for settings in classes
               for name, field in settings.model_fields.items() if not (field.description or "").strip()]
    assert not missing, f"describe these settings (Field(description=...)): {missing}"


def test_the_reference_lists_every_variable_each_component_reads():
    reference = settings_reference.reference()
    expected = {settings_reference.variable(settings.model_config["env_prefix"], name, field)
                for settings in settings_reference.WORKERS.values() for name, field in settings.model_fields.items()}
    expected |= {settings_reference.variable("TORCHGATE_GATEWAY_", name, field)
                 for name, field in GatewaySettings.model_fields.items() if name not in settings_reference.WORKERS}
    expected |= {f"TORCHGATE_GATEWAY_{upstream}__{name}".upper() for upstream in settings_reference.WORKERS
                 for name in UpstreamSettings.model_fields}
    listed = set(re.findall(r"^\| `(TORCHGATE_[A-Z_]+)` \|", reference, re.M))
    assert listed == expected
    assert settings_reference.PLACEHOLDER in (ROOT / "docs/configuration.md").read_text()


def _fields() -> set[str]:
    fields = {*GatewaySettings.model_fields, *UpstreamSettings.model_fields}
    for settings in settings_reference.WORKERS.values():
        fields |= set(settings.model_fields)
    return fields


def test_no_page_names_a_variable_that_nothing_reads():
    fields = _fields()
    for page in PAGES:
        for variable in set(re.findall(r"`(TORCHGATE_[A-Z_<>]+)`", page.read_text())):
            generic = variable.replace("<WORKER>", "EMBEDDING").replace("<UPSTREAM>", "EMBEDDING")
            if variable.removeprefix("TORCHGATE_") in SCRIPT_VARIABLES or \
                    generic.removeprefix("TORCHGATE_") in SCRIPT_VARIABLES:
                continue
            field = generic.removeprefix("TORCHGATE_GATEWAY_EMBEDDING__").removeprefix("TORCHGATE_GATEWAY_")
            for worker in settings_reference.WORKERS:
                field = field.removeprefix(f"TORCHGATE_{worker.upper()}_")
            field = field.removeprefix("TORCHGATE_").lower()
            assert field in fields, f"{page.relative_to(ROOT)} names {variable}, which no settings class reads"
