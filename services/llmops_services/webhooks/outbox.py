"""The outbox: a job's end and its webhook deliveries commit in one transaction, so no event is
lost when a process dies after the job ended, and none exists for an end that rolled back.

`states.move` marks each job it ends on the session; `install` adds a hook that, just before
the commit, writes one delivery per configured endpoint for each job marked. Every process
that ends jobs (the services, each worker) installs it through `Platform.open`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from llmops_services.db.database import Database
from llmops_services.db.tables import JobRow, WebhookDeliveryRow, utcnow
from llmops_services.jobs.kinds import JobKind
from llmops_services.webhooks.events import event_body, event_type, new_event_id

_ENDED = "llmops.jobs_ended"
_RECORDED = "llmops.webhooks_recorded"
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def mark_ended(session: Session, job_id: str) -> None:
    """Notes that the session's transaction ends the job (`states.move` calls it)."""
    session.info.setdefault(_ENDED, set()).add(job_id)


def record(session: Session, job: JobRow, endpoints: Sequence[str]) -> list[WebhookDeliveryRow]:
    """One delivery of the job's end event per endpoint; the same event id and body for all."""
    if not endpoints:
        return []
    event_id = new_event_id()
    body = event_body(job, event_id)
    kind = event_type(JobKind.named(job.kind), job.state)
    now = utcnow()
    rows = [
        WebhookDeliveryRow(
            id=f"whd_{secrets.token_hex(12)}",
            event_id=event_id,
            event_type=kind,
            job_id=job.id,
            endpoint=endpoint,
            body=body,
            state="PENDING",
            attempts=0,
            next_attempt_time=now,
            create_time=now,
            update_time=now,
        )
        for endpoint in endpoints
    ]
    session.add_all(rows)
    session.info[_RECORDED] = True
    return rows


SWEEP_WINDOW = timedelta(hours=1)
"""How far back the dispatcher looks for job ends that recorded no event."""


def record_missing(session: Session, endpoints: Sequence[str], since: datetime) -> int:
    """Records the events of jobs that ended since `since` and recorded none: those a process
    without the webhook settings ended (a worker started without them). The services' dispatcher
    runs it now and then, so such a job's event is late, not lost. Two replicas recording the
    same job meet the `(job_id, endpoint)` constraint; the loser's transaction runs again and
    finds the rows (`Database.run_sync`)."""
    if not endpoints:
        return 0
    recorded = select(WebhookDeliveryRow.id).where(WebhookDeliveryRow.job_id == JobRow.id)
    query = select(JobRow).where(
        JobRow.state.in_(TERMINAL), JobRow.end_time >= since, ~exists(recorded)
    )
    ended = list(session.scalars(query).all())
    for job in ended:
        record(session, job, endpoints)
    return len(ended)


def install(db: Database, endpoints: Sequence[str]) -> None:
    """Writes the deliveries of every job a transaction of `db` ends, inside that transaction."""
    chosen = tuple(endpoints)

    def before_commit(session: Session) -> None:
        for job_id in sorted(session.info.pop(_ENDED, ())):
            job = session.get(JobRow, job_id)
            if job is not None and job.state in TERMINAL:
                record(session, job, chosen)

    def after_rollback(session: Session) -> None:
        session.info.pop(_ENDED, None)
        session.info.pop(_RECORDED, None)

    db.listen("before_commit", before_commit)
    db.listen("after_rollback", after_rollback)


def on_recorded(db: Database, callback: Callable[[], None]) -> None:
    """Calls `callback` after each commit of `db` that recorded deliveries (to send at once)."""

    def after_commit(session: Session) -> None:
        if session.info.pop(_RECORDED, False):
            callback()

    db.on_commit(after_commit)
