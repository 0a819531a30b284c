"""Leases and fencing: a worker owns an attempt while its lease lasts, and every write it makes
goes through `fenced_job`, so a worker that lost its lease (killed, partitioned) can never change
a job that a newer attempt owns."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from llmops_services.db.tables import JobRow, utcnow
from llmops_services.jobs.states import move
from llmops_services.jobs.store import locked_job


def fenced_job(session: Session, job_id: str, attempt: int, owner: str) -> JobRow | None:
    """The job, when `owner` still holds its lease for `attempt` (every worker write goes
    through here); None otherwise."""
    row = locked_job(session, job_id)
    if row is None or row.attempt != attempt or row.lease_owner != owner:
        return None
    if row.state not in ("RUNNING", "CANCELLING"):
        return None
    return row


def claim(
    session: Session, job_id: str, attempt: int, owner: str, lease_seconds: float
) -> JobRow | None:
    """Takes a QUEUED job for `attempt`: RUNNING, leased to `owner`. None when someone else
    has it, it moved on, or it was cancelled meanwhile."""
    row = locked_job(session, job_id)
    if row is None or row.attempt != attempt or row.state != "QUEUED":
        return None
    row.lease_owner = owner
    row.lease_expires = utcnow() + timedelta(seconds=lease_seconds)
    move(session, row, "RUNNING", f"attempt {attempt} started on {owner}")
    return row


def heartbeat(
    session: Session, job_id: str, attempt: int, owner: str, lease_seconds: float
) -> JobRow | None:
    """Renews the lease; None when it was lost (the caller must stop)."""
    row = fenced_job(session, job_id, attempt, owner)
    if row is not None:
        row.lease_expires = utcnow() + timedelta(seconds=lease_seconds)
    return row


def retries_used(job: JobRow) -> int:
    """How many attempts the job has had, not counting those a resume started: the number the
    retry limit (`LLMOPS_JOB_MAX_ATTEMPTS`) applies to."""
    return job.attempt - job.resumes


def expired(session: Session, now: datetime) -> list[JobRow]:
    """Running jobs whose lease ran out: their worker died or lost touch. Locked, and those
    another transaction holds (a worker renewing its lease, another replica's reconciler) are
    skipped: this sweep looks at them again next time, on what was committed."""
    query = (
        select(JobRow)
        .where(JobRow.state.in_(("RUNNING", "CANCELLING")), JobRow.lease_expires < now)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(query).all())


def requeue(session: Session, job: JobRow, reason: str) -> None:
    """Gives a job a new attempt (fencing out the old one) and queues it again."""
    job.attempt += 1
    job.lease_owner = ""
    job.lease_expires = None
    if job.state == "CANCELLING":
        move(session, job, "CANCELLED", f"{reason}; the cancel completes")
        return
    if job.pause_requested:  # it was pausing: its last checkpoint is where a resume starts
        job.pause_requested = False
        move(session, job, "PAUSED", f"{reason}; paused as asked, at its last checkpoint")
        return
    move(session, job, "QUEUED", f"{reason}; attempt {job.attempt} queued")
