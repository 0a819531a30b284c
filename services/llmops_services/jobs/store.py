"""Reading a job and its checkpoints. A job's kind scopes every lookup, so an eval run's id is
NOT_FOUND to the training service."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from llmops_services.db.tables import CheckpointRow, JobRow
from llmops_services.errors import NotFound
from llmops_services.jobs.events import Event, append_event
from llmops_services.jobs.kinds import JobKind


def get_job(session: Session, job_id: str, kind: JobKind) -> JobRow:
    """A job of `kind` by id, or NOT_FOUND."""
    row = session.get(JobRow, job_id)
    if row is None or row.kind != kind:
        raise NotFound(
            f"job {job_id!r} not found", resource_type=kind.resource_type, resource_name=job_id
        )
    return row


def by_key(session: Session, kind: JobKind, key: str) -> JobRow | None:
    """The job of `kind` created with idempotency key `key`, if any (keys are scoped per
    kind: the same key may name a training job and an eval run)."""
    query = select(JobRow).where(JobRow.kind == kind, JobRow.idempotency_key == key)
    return session.scalars(query).first()


def checkpoints_of(session: Session, job_id: str) -> list[CheckpointRow]:
    """A job's checkpoints, oldest first."""
    query = select(CheckpointRow).where(CheckpointRow.job_id == job_id).order_by(CheckpointRow.step)
    return list(session.scalars(query).all())


def record_checkpoint(
    session: Session, job: JobRow, step: int, uri: str, metrics: dict[str, float]
) -> None:
    """Records a complete checkpoint and says so in the events."""
    existing = session.get(CheckpointRow, (job.id, step))
    if existing is None:
        session.add(
            CheckpointRow(job_id=job.id, step=step, uri=uri, metrics=metrics, attempt=job.attempt)
        )
    else:
        existing.uri, existing.metrics, existing.attempt = uri, metrics, job.attempt
    append_event(session, job, Event("CHECKPOINT", step=step, metrics=metrics))
