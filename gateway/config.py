"""Gateway settings: TORCHGATE_GATEWAY_*; per upstream TORCHGATE_GATEWAY_<UPSTREAM>__<FIELD>."""

from pydantic import AliasChoices, BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class UpstreamSettings(BaseModel):
    """How the gateway talks to one worker service (all replicas of it)."""

    addresses: str = Field(description="One pool per model, `;` between pools; a pool is comma-separated IP:port "
                                       "replicas, one DNS name:port (headless Service), or a gRPC target URI "
                                       "(dns://AUTHORITY/name:port, ipv4:, ipv6:, unix:).")
    timeout_s: float = Field(30.0, gt=0, description="Default request deadline (X-Request-Timeout overrides).")
    breaker_fail_max: int = Field(5, ge=1, description="Consecutive failures that open the circuit breaker.")
    breaker_reset_s: float = Field(60.0, gt=0, description="How long the breaker stays open before a trial call, "
                                                           "unless the upstream's health turns SERVING first.")
    max_concurrency: int = Field(512, ge=1, description="Requests in flight before new ones get 429.")
    merge_requests: int = Field(8, ge=1, description="At most this many concurrent requests with the same options "
                                                     "travel as one call (1: never merge).")
    retry_attempts: int = Field(3, ge=2, le=5, description="gRPC attempts for UNAVAILABLE (first call included).")
    breaker_min_deadline_s: float = Field(
        1.0, gt=0, description="DEADLINE_EXCEEDED counts as a breaker failure only for deadlines at least this long."
    )
    info_timeout_s: float = Field(2.0, gt=0, description="Deadline of the Info call that learns the worker's limits.")


class GpuUpstream(UpstreamSettings):
    addresses: str = "127.0.0.1:50051"


class EmbeddingUpstream(UpstreamSettings):
    addresses: str = "127.0.0.1:50052"


class RerankingUpstream(UpstreamSettings):
    addresses: str = "127.0.0.1:50053"


class ClassifierUpstream(UpstreamSettings):
    addresses: str = "127.0.0.1:50054"


class DocumentsUpstream(UpstreamSettings):
    addresses: str = "127.0.0.1:50055"
    # A document's conversion may take its child's whole wall-time limit (TORCHGATE_DOCUMENTS_CONVERSION_TIMEOUT_S).
    timeout_s: float = Field(90.0, gt=0, description="Default request deadline (X-Request-Timeout overrides).")


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TORCHGATE_GATEWAY_", env_nested_delimiter="__", extra="ignore", populate_by_name=True
    )

    host: str = Field("127.0.0.1", description="Interface the REST server binds.")
    port: int = Field(8000, description="REST port (0 picks a free one).")
    port_file: str = Field("", description="After binding, write the REST port here (scripts/start.sh uses "
                                           "$TORCHGATE_RUN_DIR/gateway.port).")
    workers: int = Field(1, ge=1, description="Gateway processes (uvicorn workers) for many-core hosts.")
    api_keys: str = Field(
        "", description="Comma-separated API keys; when set, /v1 and /api need `Authorization: Bearer <key>`."
    )
    tenants_file: str = Field("", description="YAML file of tenants (API key digests, JWT issuer, limits); "
                                              "reloaded on SIGHUP or when it changes. Replaces API_KEYS.")
    routes_file: str = Field("", description="YAML file of model aliases with weighted, sticky versions "
                                             "(gateway/rollout.py); reloaded on SIGHUP or when it changes.")
    limits_url: str = Field("", description="Redis for the tenants' limits and usage when it is not CACHE_URL's.")
    limits_fail_open: bool = Field(True, description="Redis down: true keeps limiting per gateway process; false "
                                                     "answers 503 until it is back.")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Larger request bodies get 413.")
    header_timeout_s: float = Field(10.0, gt=0, description="A connection whose request head (request line and "
                                                            "headers) has not arrived this long after its first "
                                                            "byte gets 408 and is closed.")
    cache: bool = Field(True, description="Answer repeated inputs from the response cache (gateway/cache.py).")
    cache_bytes: int = Field(128 * 1024 * 1024, ge=0, description="Bound of each gateway process's in-memory "
                                                                   "cache tier, entries' overhead included (LRU).")
    cache_url: str = Field("", description="redis:// or rediss://[user:password@]host:port/db: a cache tier shared "
                                           "by every gateway process and replica (and their rate limits).")
    cache_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="How long an entry lives in Redis.")
    redis_timeout_s: float = Field(0.25, gt=0, description="Deadline of one Redis operation; a request slowed past "
                                                           "it goes on without Redis.")
    health_timeout_s: float = Field(1.0, gt=0, description="Deadline of each upstream health probe in /health/ready.")
    log_level: str = Field("INFO", validation_alias=AliasChoices("TORCHGATE_LOG_LEVEL", "log_level"),
                           description="DEBUG, INFO, WARNING or ERROR (every process reads the same variable).")
    log_format: str = Field("json", validation_alias=AliasChoices("TORCHGATE_LOG_FORMAT", "log_format"),
                            description="json (one object per line) or text.")
    otlp_endpoint: str = Field("", validation_alias=AliasChoices("TORCHGATE_OTLP_ENDPOINT", "otlp_endpoint"),
                               description="OTLP/gRPC collector (http://host:4317) that receives every span; "
                                           "empty: tracing off.")
    tls_ca: str = Field("", description="CA (PEM) the workers' certificates are checked against; set for TLS.")
    tls_cert: str = Field("", description="Client certificate (PEM) presented to workers (mTLS).")
    tls_key: str = Field("", description="Client private key (PEM).")
    tls_server_name: str = Field(
        "", description="Name the workers' certificates must carry when upstreams are IP addresses (e.g. localhost)."
    )
    jobs_url: str = Field("", description="postgresql://user:password@host:port/db for batch jobs shared by several "
                                          "gateway processes or hosts; empty: SQLite in JOBS_DIR.")
    jobs_dir: str = Field(".run/jobs", description="Directory of the embedded batch job store (jobs.sqlite3, "
                                                   "created on first use).")
    jobs_max_file_bytes: int = Field(200 * 1024 * 1024, ge=1024, description="Largest batch file accepted (413).")
    jobs_max_lines: int = Field(50_000, ge=1, description="Most requests in one batch file (413).")
    jobs_slice_lines: int = Field(32, ge=1, description="Lines a runner claims at once (one lease, one commit).")
    jobs_slices: int = Field(4, ge=1, description="Slices each gateway process runs at once: its batch lines in "
                                                  "flight are SLICES x SLICE_LINES.")
    jobs_yield_lines: int = Field(8, ge=1, description="Batch lines each gateway process keeps in flight while "
                                                       "interactive requests arrive (measured in make bench: 8 "
                                                       "keeps their p99 within 1.3x of idle).")
    jobs_lease_s: float = Field(30.0, gt=0, description="How long a claim holds its lines without renewal: a dead "
                                                        "claimer's lines return to the queue after it.")
    jobs_batches_per_tenant: int = Field(2, ge=1, description="Batches of one tenant running at once; later ones "
                                                              "wait in `validating`.")
    jobs_max_attempts: int = Field(5, ge=1, description="Attempts of a line answered 429, 503 or 504 before that "
                                                        "answer is final.")
    gpu: GpuUpstream = Field(default_factory=GpuUpstream, description="GPU management upstream.")
    embedding: EmbeddingUpstream = Field(default_factory=EmbeddingUpstream, description="Embedding upstream.")
    reranking: RerankingUpstream = Field(default_factory=RerankingUpstream, description="Reranking upstream.")
    classifier: ClassifierUpstream = Field(default_factory=ClassifierUpstream, description="Classifier upstream.")
    documents: DocumentsUpstream = Field(default_factory=DocumentsUpstream, description="Documents upstream.")
