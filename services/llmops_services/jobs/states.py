"""The state machine every job follows, and the moves users ask for (cancel, pause, resume).

QUEUED → RUNNING → SUCCEEDED | FAILED | CANCELLED, with CANCELLING while a running job stops and
PAUSED while a paused job holds its last checkpoint. Each change is an event.
"""

from __future__ import annotations

import grpc
from sqlalchemy.orm import Session

from llmops_services.db.tables import JobRow, utcnow
from llmops_services.errors import FailedPrecondition, PreconditionViolation
from llmops_services.jobs.events import Event, append_event
from llmops_services.webhooks import outbox

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
ACTIVE = ("QUEUED", "RUNNING", "CANCELLING", "PAUSED")
_MOVES: dict[str, tuple[str, ...]] = {
    "QUEUED": ("RUNNING", "CANCELLED", "PAUSED", "FAILED"),
    "RUNNING": ("SUCCEEDED", "FAILED", "CANCELLING", "QUEUED", "PAUSED"),
    "CANCELLING": ("CANCELLED", "FAILED", "SUCCEEDED"),
    "PAUSED": ("QUEUED", "CANCELLED"),
}


def _state_violation(job: JobRow, wanted: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"job {job.id} is {job.state}; {wanted}",
        violations=[PreconditionViolation("STATE", f"jobs/{job.id}", f"job is {job.state}")],
    )


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
        outbox.mark_ended(session, job.id)  # its webhook deliveries commit with this move
    append_event(session, job, Event("STATE_CHANGED", state=state, message=message))


def fail(
    session: Session, job: JobRow, code: grpc.StatusCode, error: str, message: str = ""
) -> None:
    """Fails a job with the error its users see (`error.code` is stored as its number)."""
    job.error_code, job.error_message = code.value[0], error
    move(session, job, "FAILED", message or error)


def cancel(session: Session, job: JobRow) -> None:
    """Cancels a job: at once when it is not running, at its next step when it is."""
    if job.state in TERMINAL:
        raise FailedPrecondition(
            f"job {job.id} already ended ({job.state})",
            violations=[PreconditionViolation("STATE", f"jobs/{job.id}", f"job is {job.state}")],
        )
    if job.state in ("QUEUED", "PAUSED"):
        move(session, job, "CANCELLED", "cancelled before it ran")
    elif job.state == "RUNNING":
        job.cancel_requested = True
        move(session, job, "CANCELLING", "cancel requested; stops at its next step")


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
