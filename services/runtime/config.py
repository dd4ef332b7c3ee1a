"""Settings shared by every worker process; each worker subclasses them with its own env prefix."""

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    """Process-level settings of any worker. Fields read `TORCHGATE_<WORKER>_<FIELD>` unless aliased."""

    model_config = SettingsConfigDict(env_prefix="TORCHGATE_", extra="ignore", populate_by_name=True)

    host: str = Field("127.0.0.1", description="Interface the gRPC server binds (0.0.0.0 in containers).")
    port: int = Field(0, description="gRPC port (0 picks a free one).")
    port_file: str = Field("", description="After binding, write the gRPC port here (how callers of port 0 "
                                           "learn it; scripts/start.sh uses $TORCHGATE_RUN_DIR/<worker>.port).")
    metrics_port: int = Field(0, description="Prometheus /metrics HTTP port; 0 disables it.")
    grace_period_s: float = Field(10.0, description="On SIGTERM, how long in-flight requests may take.")
    max_connection_age_s: float = Field(
        30.0, ge=0, description="Client connections are closed gracefully (GOAWAY) after about this long (±10%), "
                                "so clients re-resolve DNS and rebalance onto replicas that joined; 0: never."
    )
    max_connection_age_grace_s: float = Field(
        30.0, ge=0, description="How long calls on a connection that aged out may still run (the gateway's "
                                "default deadline)."
    )
    max_concurrent_rpcs: int = Field(
        1024, ge=1, description="Calls served at once; more are refused with RESOURCE_EXHAUSTED."
    )
    log_level: str = Field(
        "INFO", validation_alias=AliasChoices("TORCHGATE_LOG_LEVEL", "log_level"), description="Log level."
    )
    log_format: str = Field(
        "json",
        validation_alias=AliasChoices("TORCHGATE_LOG_FORMAT", "log_format"),
        description="`json` (one object a line) or `text`.",
    )
    require_gpu: bool = Field(
        False,
        validation_alias=AliasChoices("TORCHGATE_REQUIRE_GPU", "require_gpu"),
        description="Exit non-zero at start when no CUDA device is usable.",
    )
    otlp_endpoint: str = Field(
        "",
        validation_alias=AliasChoices("TORCHGATE_OTLP_ENDPOINT", "otlp_endpoint"),
        description="OTLP/gRPC collector for traces (e.g. http://127.0.0.1:4317); empty disables tracing.",
    )
    tls_cert: str = Field("", validation_alias=AliasChoices("TORCHGATE_TLS_CERT", "tls_cert"),
                          description="Server certificate (PEM); set with tls_key to serve TLS only.")
    tls_key: str = Field("", validation_alias=AliasChoices("TORCHGATE_TLS_KEY", "tls_key"),
                         description="Server private key (PEM).")
    tls_client_ca: str = Field("", validation_alias=AliasChoices("TORCHGATE_TLS_CLIENT_CA", "tls_client_ca"),
                               description="CA (PEM) that signs client certificates; set for mTLS.")

    def service_name(self) -> str:
        """`torchgate-<worker>`: the name in traces (from the env prefix, TORCHGATE_EMBEDDING_ -> embedding)."""
        return "torchgate-" + self.model_config["env_prefix"].removeprefix("TORCHGATE_").strip("_").lower()

    def connection_options(self) -> list[tuple[str, int]]:
        """gRPC server options that age connections out (none when max_connection_age_s is 0)."""
        if not self.max_connection_age_s:
            return []
        return [("grpc.max_connection_age_ms", round(self.max_connection_age_s * 1000)),
                ("grpc.max_connection_age_grace_ms", round(self.max_connection_age_grace_s * 1000))]

    def max_request_bytes(self) -> int:
        """The largest request a valid call can need: gRPC refuses bigger ones before parsing them."""
        return 64 * 1024


class ModelWorkerSettings(WorkerSettings):
    """Settings of a worker that serves a model through the dynamic batcher."""

    model: str = Field(description="Model id (bundled, Hugging Face cache) or local directory.")
    device: str = Field("auto", description="`auto` (CUDA when usable, else CPU), `cpu`, `cuda` or `cuda:N`.")
    dtype: str = Field("auto", description="`auto` (fp16 on CUDA; on CPU bf16 autocast where the CPU has native "
                                           "bf16 and a start-up self-check agrees with fp32, else fp32), "
                                           "`float32`, `float16`, `bfloat16`.")
    cpu_threads: int = Field(0, ge=0, description="Torch intra-op threads of each device stream on CPU; 0: the "
                                                  "available cores divided among the streams.")
    device_streams: int = Field(
        0, ge=0, description="Batches the model runs at once, each on its own device thread; 0 (auto): 2 on a "
                             "CPU with 2 or more cores (README, design notes), 1 on CUDA or a single core."
    )
    pack_length: int = Field(128, ge=16, description="Widest row of packed batches (BERT models).")
    trace: bool = Field(True, description="On CPU, run packed BERT encoders as a TorchScript graph traced at "
                                          "start-up, where it reproduces the module; false: always eager.")
    inference_backend: Literal["auto", "torch", "openvino"] = Field(
        "auto", description="What computes packed BERT encoders on CPU. `auto`: OpenVINO where a start-up self-check "
                            "finds it agrees with fp32 and runs >= 1.1x the torch choice, else torch; `openvino`: "
                            "OpenVINO where it agrees, else the worker fails to start; `torch`: never OpenVINO. CUDA "
                            "and non-BERT models run on torch.")
    quantize: Literal["none", "int8"] = Field(
        "none", description="`int8`: OpenVINO also tries int8 weight-only compression (NNCF), kept only where the "
                            "self-check agrees with fp32 and it is the fastest.")
    openvino_cache_dir: str = Field(
        "", description="Where converted OpenVINO models and the start-up self-check's decisions are kept between "
                        "starts (keyed by the model's files, the versions, the CPU and the settings); empty: "
                        "$XDG_CACHE_HOME/torchgate/openvino or ~/.cache/torchgate/openvino. Unwritable: measured and "
                        "converted at every start.")
    recheck: bool = Field(False, description="Run the start-up self-check even where an earlier start on this "
                                             "machine, model and settings decided already (and keep the new result).")
    max_batch_size: int = Field(64, ge=1, description="Most inputs in one forward pass.")
    max_batch_tokens: int = Field(
        4096, ge=16, description="Most padded tokens (inputs x longest input) in one forward pass."
    )
    max_wait_ms: float = Field(
        0.0, ge=0, description="How long a non-full batch waits for more inputs when the model is idle."
    )
    max_queue_items: int = Field(
        4096, ge=1, description="Inputs waiting in the queue before new requests get RESOURCE_EXHAUSTED."
    )
    background_batch_size: int = Field(
        4, ge=1, description="Most inputs in a batch of background work (batch jobs) while interactive requests "
                             "arrive; an idle worker gives background work full batches.")
    max_items_per_request: int = Field(256, ge=1, description="Most inputs in one request.")
    gpu_address: str = Field("", description="On CUDA, the GPU worker (host:port) this worker reserves its share of "
                                             "the device from before serving; empty: no reservation.")
    gpu_memory_mb: int = Field(0, ge=0, description="The share to reserve; 0 sizes it from the loaded, warmed-up "
                                                    "model (see README).")
    max_chars_per_item: int = Field(16384, ge=1, description="Most characters in one input text.")

    def max_request_bytes(self) -> int:
        # Every item and the query at their character limit, 4 UTF-8 bytes each, plus the other fields.
        return (self.max_items_per_request + 1) * self.max_chars_per_item * 4 + 64 * 1024
