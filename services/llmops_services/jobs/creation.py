"""Creating a job, the same way for every kind: idempotent per kind, stored QUEUED with its
first event, then queued on Redis (or left to the reconciler when Redis is down).

The same idempotency key on the same kind returns the job it made, without checking the request
again; on another kind it names an independent job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from llmops_services.db.database import Database
from llmops_services.db.tables import JobRow
from llmops_services.jobs.events import Event, append_event
from llmops_services.jobs.kinds import JobKind
from llmops_services.jobs.queue import JobQueue
from llmops_services.jobs.store import by_key
from llmops_services.registry.names import new_id

T = TypeVar("T")


@dataclass
class Draft:
    """What a kind's checks made of a request: the job's own fields (`row`; creation sets its id,
    kind, state, attempt and key) and the message of its first event."""

    row: JobRow
    message: str


def create_in(
    session: Session, kind: JobKind, key: str, draft: Callable[[Session], Draft]
) -> tuple[JobRow, bool]:
    """The job of `kind` that `key` names, or a new one from `draft` (which runs the request's
    checks, so an earlier job is returned even when the request would now be refused); and
    whether it is new."""
    if key:
        earlier = by_key(session, kind, key)
        if earlier is not None:
            return earlier, False
    made = draft(session)
    row = made.row
    row.id = new_id(kind.id_prefix)
    row.kind = kind.value
    row.state = "QUEUED"
    row.attempt = 1
    row.idempotency_key = key or None
    session.add(row)
    session.flush()
    append_event(session, row, Event("STATE_CHANGED", "QUEUED", made.message))
    return row, True


async def create_job(
    db: Database,
    queue: JobQueue,
    kind: JobKind,
    key: str,
    draft: Callable[[Session], Draft],
    present: Callable[[Session, JobRow], T],
) -> T:
    """Creates (or finds by `key`) a job of `kind`, queues a new one, and returns it as
    `present` shows it (inside the transaction, for kinds whose message reads other rows)."""

    def work(session: Session) -> tuple[T, str, bool]:
        row, created = create_in(session, kind, key, draft)
        return present(session, row), row.id, created

    try:
        shown, job_id, created = await db.run(work)
    except IntegrityError:
        if not key:
            raise
        # a create with the same key committed between our look-up and our insert: its job is
        # the answer (the second run finds it by the key)
        shown, job_id, created = await db.run(work)
    if created:
        await queue.enqueue_or_defer(job_id, 1, kind)
    return shown


async def exists(db: Database, kind: JobKind, key: str) -> bool:
    """Whether `key` already names a job of `kind` (whose create then returns it unchecked)."""
    return bool(key) and await db.run(lambda s: by_key(s, kind, key) is not None)
