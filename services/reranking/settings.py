"""Reranking worker settings: TORCHGATE_RERANKING_*."""

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.runtime.config import ModelWorkerSettings


class RerankingSettings(ModelWorkerSettings):
    model_config = SettingsConfigDict(env_prefix="TORCHGATE_RERANKING_")

    port: int = Field(50053, description="gRPC port.")
    metrics_port: int = Field(9453, description="Prometheus /metrics HTTP port; 0 disables it.")
    model: str = Field("cross-encoder/ms-marco-MiniLM-L-6-v2",
                       description="Cross-encoder id (Hugging Face cache) or local directory.")
    fallback: Literal["none", "embedding"] = Field(
        "none", description="`embedding`: when the cross-encoder is not available offline, score with the "
        "embedding model's cosine similarity (said in Info, responses and logs); `none`: fail at start."
    )
    fallback_model: str = Field(
        "sentence-transformers/all-MiniLM-L6-v2", description="Embedding model of the fallback."
    )
    max_items_per_request: int = Field(1000, ge=1, description="Most documents in one request.")
    pack_length: int = Field(256, ge=16, description="Widest row of packed batches (query+document pairs).")
    max_windows_per_document: int = Field(
        8, ge=1, description="A document longer than the model's window is scored over overlapping windows of "
                             "itself (the query whole in each), best window wins; at most this many, from its start.")
