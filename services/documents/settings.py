"""Documents worker settings: TORCHGATE_DOCUMENTS_*."""

import os

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.runtime.config import WorkerSettings


class DocumentsSettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="TORCHGATE_DOCUMENTS_")

    port: int = Field(50055, description="gRPC port.")
    metrics_port: int = Field(9455, description="Prometheus /metrics HTTP port; 0 disables it.")
    embedding_addresses: str = Field(
        "127.0.0.1:50052", description="Comma-separated embedding workers (host:port or gRPC targets) whose "
                                       "tokenizers bound the chunks; each model's is fetched once per fingerprint.")
    max_document_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Largest document accepted.")
    max_decompressed_bytes: int = Field(
        128 * 1024 * 1024, ge=1024, description="Most bytes an Office file (a ZIP archive) may unpack to, as its "
                                                "directory declares them; the child's memory limit holds the rest.")
    max_pages: int = Field(1000, ge=1, description="Most pages of a PDF.")
    max_chunks: int = Field(20000, ge=1, description="Most chunks one document may give.")
    conversion_timeout_s: float = Field(60.0, gt=0, description="Wall time of one document's conversion and "
                                                                "chunking; its child process is killed after it.")
    conversion_cpu_s: int = Field(60, ge=1, description="CPU seconds of one document's child process.")
    conversion_memory_mb: int = Field(3072, ge=256, description="Address space of one document's child process.")
    conversions: int = Field(max(1, os.cpu_count() or 1), ge=1,
                             description="Documents converted at once (one child process each); more wait.")
    max_waiting: int = Field(64, ge=0, description="Documents waiting for a conversion slot before new ones get "
                                                   "RESOURCE_EXHAUSTED.")

    def max_request_bytes(self) -> int:
        return self.max_document_bytes + 64 * 1024
