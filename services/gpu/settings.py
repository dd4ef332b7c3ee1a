"""GPU worker settings: TORCHGATE_GPU_*."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.runtime.config import WorkerSettings


class GpuSettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="TORCHGATE_GPU_")

    port: int = Field(50051, description="gRPC port.")
    metrics_port: int = Field(9451, description="Prometheus /metrics HTTP port; 0 disables it.")
    lease_ttl_s: int = Field(300, ge=1, description="Default lifetime of a memory reservation.")
    max_lease_ttl_s: int = Field(3600, ge=1, description="Longest lifetime a reservation may ask for; longer asks "
                                                         "are cut to it (a crashed holder's lease ends by then).")
