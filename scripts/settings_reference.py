"""The configuration reference, generated from the settings classes themselves: every environment variable of
the gateway and of each worker, with its type, default and description. `mkdocs build` runs it (the hook
below fills docs/configuration.md), so the page cannot drift from the code; `python scripts/settings_reference.py`
prints it."""

import sys
import typing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydantic import BaseModel  # noqa: E402
from pydantic.fields import FieldInfo  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

from gateway.config import GatewaySettings  # noqa: E402
from services.classifier.settings import ClassifierSettings  # noqa: E402
from services.documents.settings import DocumentsSettings  # noqa: E402
from services.embedding.settings import EmbeddingSettings  # noqa: E402
from services.gpu.settings import GpuSettings  # noqa: E402
from services.reranking.settings import RerankingSettings  # noqa: E402

WORKERS = {"gpu": GpuSettings, "embedding": EmbeddingSettings, "reranking": RerankingSettings,
           "classifier": ClassifierSettings, "documents": DocumentsSettings}
PLACEHOLDER = "<!-- settings reference -->"


def variable(prefix: str, name: str, field: FieldInfo) -> str:
    """The environment variable a field reads: its alias, else prefix + name."""
    alias = field.validation_alias
    return alias.choices[0] if alias is not None else f"{prefix}{name}".upper()


def _type(annotation) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(f"`{value}`" for value in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation)).replace("|", "\\|")


def _default(field: FieldInfo) -> str:
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is PydanticUndefined:
        return "required"
    return f"`{value}`" if value not in ("", None) else "empty"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def rows(settings_class: type[BaseModel], prefix: str) -> list[tuple[str, str, str, str]]:
    """(variable, type, default, description) of every field that is no nested model."""
    return [(variable(prefix, name, field), _type(field.annotation), _default(field), field.description or "")
            for name, field in settings_class.model_fields.items()
            if not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel))]


def components() -> dict[str, list[tuple[str, str, str, str]]]:
    """Every component's settings, by heading."""
    tables = {"Gateway": rows(GatewaySettings, GatewaySettings.model_config["env_prefix"])}
    for upstream in WORKERS:
        upstream_settings = GatewaySettings.model_fields[upstream].default_factory()
        tables[f"Gateway → {upstream} upstream"] = [
            (name, kind, f"`{upstream_settings.addresses}`" if name.endswith("__ADDRESSES") else default, description)
            for name, kind, default, description in rows(type(upstream_settings), f"TORCHGATE_GATEWAY_{upstream}__")]
    for worker, settings_class in WORKERS.items():
        tables[f"{worker.capitalize()} worker"] = rows(settings_class, settings_class.model_config["env_prefix"])
    return tables


def reference() -> str:
    lines = []
    for heading, table in components().items():
        lines += [f"## {heading}", "", "| Variable | Type | Default | Description |", "| --- | --- | --- | --- |"]
        lines += [f"| `{name}` | {kind} | {default} | {_cell(description)} |"
                  for name, kind, default, description in table]
        lines.append("")
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    """mkdocs hook: the configuration page's placeholder becomes the reference."""
    return markdown.replace(PLACEHOLDER, reference()) if PLACEHOLDER in markdown else markdown


if __name__ == "__main__":
    print(reference())
