"""A job's append-only event log: state changes, metrics, checkpoints, messages. It is the only
source of what watchers see; every append is announced on commit (`signals`)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from llmops_services.db.tables import JobEventRow, JobRow
from llmops_services.jobs import signals


@dataclass(frozen=True)
class Event:
    """An event to append."""

    type: str
    state: str = ""
    message: str = ""
    step: int = 0
    metrics: dict[str, float] | None = None


def append_event(session: Session, job: JobRow, event: Event) -> JobEventRow:
    """Appends an event with the next sequence number of the job."""
    last = session.scalar(
        select(func.max(JobEventRow.sequence)).where(JobEventRow.job_id == job.id)
    )
    row = JobEventRow(
        job_id=job.id,
        sequence=(last or 0) + 1,
        type=event.type,
        state=event.state,
        message=event.message,
        step=event.step,
        metrics=dict(event.metrics or {}),
        attempt=job.attempt,
    )
    session.add(row)
    session.flush()
    signals.mark(session, job.id)
    return row


def events_after(session: Session, job_id: str, after: int, limit: int) -> list[JobEventRow]:
    """Events with a sequence above `after`, oldest first."""
    query = (
        select(JobEventRow)
        .where(JobEventRow.job_id == job_id, JobEventRow.sequence > after)
        .order_by(JobEventRow.sequence)
        .limit(limit)
    )
    return list(session.scalars(query).all())
