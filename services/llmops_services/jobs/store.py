"""Reading a job and its checkpoints. A job's kind scopes every lookup, so an eval run's id is
NOT_FOUND to the training service."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from llmops_services.db.tables import CheckpointRow, JobRow
from llmops_services.errors import NotFound
from llmops_services.jobs.events import Event, append_event
from llmops_services.jobs.kinds import JobKind


def get_job(session: Session, job_id: str, kind: JobKind, *, for_update: bool = False) -> JobRow:
    """A job of `kind` by id, or NOT_FOUND. `for_update` locks its row until the transaction
    ends (PostgreSQL's `SELECT ... FOR UPDATE`), for a caller about to change the job on what it
    read: another replica's or a worker's change waits, then is made on the new state."""
    row = locked_job(session, job_id) if for_update else session.get(JobRow, job_id)
    if row is None or row.kind != kind:
        raise NotFound(
            f"job {job_id!r} not found", resource_type=kind.resource_type, resource_name=job_id
        )
    return row


def locked_job(session: Session, job_id: str) -> JobRow | None:
    """The job's row, locked for this transaction and read fresh (never the session's copy).

    Every read-then-write of a job takes this lock: a worker claiming it, renewing its lease or
    writing its results, a replica cancelling, pausing or resuming it, the reconciler giving it
    a new attempt. Without it two writers on PostgreSQL (READ COMMITTED) both act on the state
    they read, e.g. two workers claiming one QUEUED attempt. SQLite has one writer at a time
    and ignores the clause."""
    return session.get(JobRow, job_id, with_for_update=True, populate_existing=True)


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
