"""What every job service (training, eval, later kinds) answers the same way: get, cancel,
events, watch. Each call is scoped by the kind, so one kind's ids are NOT_FOUND to another's
service."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from functools import partial

from sqlalchemy.orm import Session

from llmops.v1 import jobs_pb2
from llmops_services.db.database import Database
from llmops_services.db.tables import JobRow
from llmops_services.jobs import convert, signals, states
from llmops_services.jobs.events import events_after
from llmops_services.jobs.kinds import JobKind
from llmops_services.jobs.store import get_job
from llmops_services.runtime.pagination import page_of


def cancel(session: Session, job_id: str, kind: JobKind) -> JobRow:
    """Cancels a job: at once when it is not running, at its next step when it is."""
    row = get_job(session, job_id, kind, for_update=True)
    states.cancel(session, row)
    return row


async def events_page(
    db: Database, job_id: str, kind: JobKind, page_size: int, page_token: str
) -> tuple[list[jobs_pb2.JobEvent], str]:
    """One page of a job's events, oldest first, and the next page's token."""
    page = page_of(page_size, page_token, job_id, default=100)

    def work(session: Session) -> list[jobs_pb2.JobEvent]:
        get_job(session, job_id, kind)
        rows = events_after(session, job_id, page.offset, page.limit + 1)
        return [convert.job_event(r) for r in rows]

    events = await db.run(work)
    return events[: page.limit], page.next_token(len(events))


def _events_and_end(
    session: Session, job_id: str, kind: JobKind, after: int
) -> tuple[list[jobs_pb2.JobEvent], bool]:
    """The events after `after`, and whether the job has ended."""
    row = get_job(session, job_id, kind)
    events = [convert.job_event(e) for e in events_after(session, row.id, after, 500)]
    return events, row.state in states.TERMINAL


async def watch(
    db: Database,
    job_id: str,
    kind: JobKind,
    after: int,
    poll_seconds: float,
    listener: signals.Listener | None = None,
) -> AsyncIterator[jobs_pb2.JobEvent]:
    """The events after `after`, then new ones as they come, until the job has ended.

    The event log is the only source: a watcher reads it again when the listener says the job
    has new events, and every `poll_seconds` in any case, so a lost announcement delays an event
    but never loses it. A reconnecting watcher passes the last sequence it saw.
    """
    while True:
        async with listener.armed(job_id) if listener is not None else _never() as announced:
            events, ended = await db.run(
                partial(_events_and_end, job_id=job_id, kind=kind, after=after)
            )
            for event in events:
                after = event.sequence
                yield event
            if ended and not events:
                return
            if not events:
                await signals.wait(announced, poll_seconds)


@contextlib.asynccontextmanager
async def _never() -> AsyncIterator[asyncio.Event]:
    """A signal nobody sets: plain polling, for services running without Redis."""
    yield asyncio.Event()
