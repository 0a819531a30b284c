"""The job store: a job's row, its append-only events and checkpoints, its state machine and its
lease. Every write by a worker is fenced by the attempt number, so a stale attempt (a worker that
lost its lease) can never change a job that a newer attempt owns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from llmops_services import job_signals
from llmops_services.db.tables import CheckpointRow, JobEventRow, JobRow, utcnow
from llmops_services.errors import FailedPrecondition, NotFound, PreconditionViolation

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
ACTIVE = ("QUEUED", "RUNNING", "CANCELLING", "PAUSED")
_MOVES: dict[str, tuple[str, ...]] = {
    "QUEUED": ("RUNNING", "CANCELLED", "PAUSED", "FAILED"),
    "RUNNING": ("SUCCEEDED", "FAILED", "CANCELLING", "QUEUED", "PAUSED"),
    "CANCELLING": ("CANCELLED", "FAILED", "SUCCEEDED"),
    "PAUSED": ("QUEUED", "CANCELLED"),
}


@dataclass(frozen=True)
class Event:
    """An event to append."""

    type: str
    state: str = ""
    message: str = ""
    step: int = 0
    metrics: dict[str, float] | None = None


def get_job(session: Session, job_id: str, kind: str = "training") -> JobRow:
    """A job by id, or NOT_FOUND."""
    row = session.get(JobRow, job_id)
    if row is None or row.kind != kind:
        raise NotFound(
            f"job {job_id!r} not found", resource_type="training_job", resource_name=job_id
        )
    return row


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
    job_signals.mark(session, job.id)
    return row


def move(session: Session, job: JobRow, state: str, message: str = "") -> None:
    """Moves a job to `state`, stamping times and logging the change as an event."""
    if state == job.state:
        return
    if state not in _MOVES.get(job.state, ()):
        raise FailedPrecondition(
            f"job {job.id} is {job.state} and cannot become {state}",
            violations=[PreconditionViolation("STATE", f"jobs/{job.id}", f"job is {job.state}")],
        )
    now = utcnow()
    job.state = state
    job.update_time = now
    if state == "RUNNING" and job.start_time is None:
        job.start_time = now
    if state in TERMINAL:
        job.end_time = now
        job.lease_owner = ""
        job.lease_expires = None
    append_event(session, job, Event("STATE_CHANGED", state=state, message=message))


def events_after(session: Session, job_id: str, after: int, limit: int) -> list[JobEventRow]:
    """Events with a sequence above `after`, oldest first."""
    query = (
        select(JobEventRow)
        .where(JobEventRow.job_id == job_id, JobEventRow.sequence > after)
        .order_by(JobEventRow.sequence)
        .limit(limit)
    )
    return list(session.scalars(query).all())


def checkpoints_of(session: Session, job_id: str) -> list[CheckpointRow]:
    """A job's checkpoints, oldest first."""
    query = select(CheckpointRow).where(CheckpointRow.job_id == job_id).order_by(CheckpointRow.step)
    return list(session.scalars(query).all())


def _fenced(session: Session, job_id: str, attempt: int, owner: str) -> JobRow | None:
    """The job if `owner` still holds its lease for `attempt`, else None."""
    row = session.get(JobRow, job_id)
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
    row = session.get(JobRow, job_id)
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
    row = _fenced(session, job_id, attempt, owner)
    if row is not None:
        row.lease_expires = utcnow() + timedelta(seconds=lease_seconds)
    return row


def fenced_job(session: Session, job_id: str, attempt: int, owner: str) -> JobRow | None:
    """The job, when this attempt still owns it: every worker write goes through here."""
    return _fenced(session, job_id, attempt, owner)


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


def retries_used(job: JobRow) -> int:
    """How many attempts the job has had, not counting those a resume started: the number the
    retry limit (`LLMOPS_JOB_MAX_ATTEMPTS`) applies to."""
    return job.attempt - job.resumes


def _state_violation(job: JobRow, wanted: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"job {job.id} is {job.state}; {wanted}",
        violations=[PreconditionViolation("STATE", f"jobs/{job.id}", f"job is {job.state}")],
    )


def pause(session: Session, job: JobRow) -> None:
    """Holds a queued job at once; asks a running one to checkpoint at its next step and let go
    of its worker (the worker then moves it to PAUSED). Pausing a paused job changes nothing."""
    if job.state == "PAUSED" or (job.state == "RUNNING" and job.pause_requested):
        return
    if job.state == "QUEUED":
        move(session, job, "PAUSED", "paused before it ran; resume queues it again")
    elif job.state == "RUNNING":
        job.pause_requested = True
        job.update_time = utcnow()
        append_event(
            session, job, Event("MESSAGE", message="pause requested; checkpoints at its next step")
        )
    else:
        raise _state_violation(job, "only a queued or running job can be paused")


def resume(session: Session, job: JobRow) -> bool:
    """Queues a paused job again as a new attempt, which continues from its last checkpoint;
    withdraws a pause a running job has not acted on yet. Returns whether it must be enqueued."""
    if job.state == "RUNNING" and job.pause_requested:
        job.pause_requested = False
        append_event(session, job, Event("MESSAGE", message="pause withdrawn; the job runs on"))
        return False
    if job.state != "PAUSED":
        raise _state_violation(job, "only a paused job can be resumed")
    job.attempt += 1
    job.resumes += 1
    job.pause_requested = False
    at = f"from the checkpoint of step {job.step}" if job.step else "from the start"
    move(session, job, "QUEUED", f"resumed; attempt {job.attempt} queued, continues {at}")
    return True


def expired(session: Session, now: datetime) -> list[JobRow]:
    """Running jobs whose lease ran out: their worker died or lost touch."""
    query = select(JobRow).where(
        JobRow.state.in_(("RUNNING", "CANCELLING")), JobRow.lease_expires < now
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
