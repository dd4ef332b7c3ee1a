"""Embedding worker settings: TORCHGATE_EMBEDDING_*."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.runtime.config import ModelWorkerSettings


class EmbeddingSettings(ModelWorkerSettings):
    model_config = SettingsConfigDict(env_prefix="TORCHGATE_EMBEDDING_")

    port: int = Field(50052, description="gRPC port.")
    metrics_port: int = Field(9452, description="Prometheus /metrics HTTP port; 0 disables it.")
    model: str = Field("sentence-transformers/all-MiniLM-L6-v2",
                       description="Model id (bundled, Hugging Face cache) or local directory.")
    prompts: dict[str, str] = Field(
        default_factory=dict, description='Instruction prefixes by name, JSON ({"query": "query: "}): added to the '
                                      "model's own (sentence-transformers `prompts`), overriding same names.")
