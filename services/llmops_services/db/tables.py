"""SQLAlchemy tables of the metadata database. Alembic migrations must match these."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    """Timestamps are stored in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of all tables."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        datetime: DateTime(timezone=True),
    }


class PromptTemplateRow(Base):
    """One version of a prompt template; versions are immutable."""

    __tablename__ = "prompt_templates"

    template_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    template: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    task: Mapped[str] = mapped_column(String(63), default="")
    create_time: Mapped[datetime] = mapped_column(default=utcnow)


class DatasetRow(Base):
    """A validated dataset; its bytes live in the artifact store under their sha256."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("sha256", "kind", name="uq_datasets_sha256_kind"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    row_count: Mapped[int] = mapped_column(BigInteger)
    approx_tokens: Mapped[int] = mapped_column(BigInteger)
    task_counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    uri: Mapped[str] = mapped_column(Text)
    create_time: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class ModelRow(Base):
    """A registered model: base, adapter or merged, with where it came from."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_models_name_version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    uri: Mapped[str] = mapped_column(Text)
    base_model_id: Mapped[str | None] = mapped_column(ForeignKey("models.id"), index=True)
    parent_model_id: Mapped[str | None] = mapped_column(ForeignKey("models.id"), index=True)
    teacher_model_id: Mapped[str | None] = mapped_column(ForeignKey("models.id"), index=True)
    dataset_id: Mapped[str | None] = mapped_column(String(32), index=True)
    dataset_sha256: Mapped[str] = mapped_column(String(64), default="")
    method: Mapped[str] = mapped_column(String(16), default="")
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    training_job_id: Mapped[str] = mapped_column(String(32), default="", index=True)
    merge_job_id: Mapped[str] = mapped_column(String(32), default="")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    checkpoint_step: Mapped[int] = mapped_column(BigInteger, default=0)
    template_id: Mapped[str] = mapped_column(String(63), default="")
    template_version: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    architecture: Mapped[str] = mapped_column(String(128), default="")
    tokenizer_sha256: Mapped[str] = mapped_column(String(64), default="")
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    trust_remote_code: Mapped[bool] = mapped_column(Boolean, default=False)
    """Set only by an admin (base and merged models) or taken from the base (adapters)."""
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    create_time: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class ModelAliasRow(Base):
    """`model_name@alias` points at one model."""

    __tablename__ = "model_aliases"

    model_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    alias: Mapped[str] = mapped_column(String(63), primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    update_time: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(64), default="")


class AliasMoveRow(Base):
    """One move of an alias, kept for history and rollback."""

    __tablename__ = "alias_moves"
    __table_args__ = (Index("ix_alias_moves_name_alias", "model_name", "alias", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(128))
    alias: Mapped[str] = mapped_column(String(63))
    from_model: Mapped[str] = mapped_column(String(32), default="")
    to_model: Mapped[str] = mapped_column(String(32), default="")
    actor: Mapped[str] = mapped_column(String(64), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    eval_run: Mapped[str] = mapped_column(String(32), default="")
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    create_time: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKeyRow(Base):
    """An API key: only its sha256 is stored; the secret is shown once at creation."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text, default="")
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    revoke_time: Mapped[datetime | None] = mapped_column(default=None)


class JobRow(Base):
    """A training job, eval run or merge job: the source of truth for its state. Redis only
    carries the job's id to a worker; a job lost there is found here and queued again."""

    __tablename__ = "jobs"
    # an idempotency key names one job of a kind: the same key may name an eval run and a
    # training job, each its own
    __table_args__ = (
        UniqueConstraint("kind", "idempotency_key", name="uq_jobs_kind_idempotency_key"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    dataset_id: Mapped[str] = mapped_column(String(32), default="", index=True)
    validation_dataset_id: Mapped[str] = mapped_column(String(32), default="")
    model_id: Mapped[str] = mapped_column(String(32), default="", index=True)
    teacher_model_id: Mapped[str] = mapped_column(String(32), default="")
    progress_fraction: Mapped[float] = mapped_column(Float, default=0.0)
    create_time: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    method: Mapped[str] = mapped_column(String(16), default="", index=True)
    parent_model_id: Mapped[str] = mapped_column(String(32), default="")
    template_id: Mapped[str] = mapped_column(String(63), default="")
    template_version: Mapped[int] = mapped_column(Integer, default=0)
    output_name: Mapped[str] = mapped_column(String(128), default="")
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    resolved_hyperparameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[int] = mapped_column(BigInteger, default=0)
    total_steps: Mapped[int] = mapped_column(BigInteger, default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error_code: Mapped[int] = mapped_column(Integer, default=0)
    error_message: Mapped[str] = mapped_column(Text, default="")
    result_model_id: Mapped[str] = mapped_column(String(32), default="")
    report_uri: Mapped[str] = mapped_column(Text, default="")
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # a pause asked for while running: the worker checkpoints at its next step and lets go
    pause_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # how many times a paused job was resumed: resumes add attempts that are not retries
    resumes: Mapped[int] = mapped_column(Integer, default=0)
    # GPUs a training job runs on, one process each (0 or 1: a single process), and how they
    # share the work ("ddp" or "fsdp"; "" is DDP)
    gpu_count: Mapped[int] = mapped_column(Integer, default=0)
    distributed_strategy: Mapped[str] = mapped_column(String(8), default="")
    lease_owner: Mapped[str] = mapped_column(String(64), default="")
    lease_expires: Mapped[datetime | None] = mapped_column(default=None, index=True)
    traceparent: Mapped[str] = mapped_column(String(64), default="")
    start_time: Mapped[datetime | None] = mapped_column(default=None)
    end_time: Mapped[datetime | None] = mapped_column(default=None)
    update_time: Mapped[datetime] = mapped_column(default=utcnow)


class JobEventRow(Base):
    """One entry of a job's append-only event log; `sequence` counts from 1 per job."""

    __tablename__ = "job_events"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    type: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    step: Mapped[int] = mapped_column(BigInteger, default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    attempt: Mapped[int] = mapped_column(Integer, default=0)


class CheckpointRow(Base):
    """A complete checkpoint of a job, written by the attempt that holds the lease."""

    __tablename__ = "checkpoints"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    uri: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    registered_model_id: Mapped[str] = mapped_column(String(32), default="")
    create_time: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDeliveryRow(Base):
    """One event of a job's end on its way to one endpoint: the outbox. Written in the
    transaction that ends the job; sent, retried and settled by the services' dispatcher."""

    __tablename__ = "webhook_deliveries"
    # one event per job end and endpoint, whatever the retries or the dispatchers
    __table_args__ = (
        UniqueConstraint("job_id", "endpoint", name="uq_webhook_deliveries_job_endpoint"),
        Index("ix_webhook_deliveries_due", "state", "next_attempt_time"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(40), index=True)
    """`evt_…`: the event's id and the `webhook-id` header of every attempt."""
    event_type: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    endpoint: Mapped[str] = mapped_column(String(2048))
    body: Mapped[str] = mapped_column(Text)
    """The JSON sent, fixed when the job ended, so every attempt sends the same bytes."""
    state: Mapped[str] = mapped_column(String(16))
    """PENDING until delivered (DELIVERED) or out of attempts (FAILED)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_time: Mapped[datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str] = mapped_column(String(64), default="")
    lease_expires: Mapped[datetime | None] = mapped_column(default=None)
    last_status: Mapped[int] = mapped_column(Integer, default=0)
    """The HTTP status of the last attempt; 0 when no answer came (timeout, connection)."""
    last_error: Mapped[str] = mapped_column(Text, default="")
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    update_time: Mapped[datetime] = mapped_column(default=utcnow)
