"""What every job service (training, eval) answers the same way: events, watch and cancel.

A job's kind scopes every lookup, so an eval run's id is NOT_FOUND to the training service.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from functools import partial

from sqlalchemy.orm import Session

from llmops.v1 import jobs_pb2
from llmops_services import job_signals
from llmops_services.db.database import Database
from llmops_services.db.tables import JobRow
from llmops_services.errors import FailedPrecondition, PreconditionViolation
from llmops_services.runtime.pagination import page_of
from llmops_services.training import convert, jobs


def cancel(session: Session, job_id: str, kind: str) -> JobRow:
    """Cancels a job: at once when it is not running, at its next step when it is."""
    row = jobs.get_job(session, job_id, kind)
    if row.state in jobs.TERMINAL:
        raise FailedPrecondition(
            f"job {row.id} already ended ({row.state})",
            violations=[PreconditionViolation("STATE", f"jobs/{row.id}", f"job is {row.state}")],
        )
    if row.state in ("QUEUED", "PAUSED"):
        jobs.move(session, row, "CANCELLED", "cancelled before it ran")
    elif row.state == "RUNNING":
        row.cancel_requested = True
        jobs.move(session, row, "CANCELLING", "cancel requested; stops at its next step")
    return row


async def events_page(
    db: Database, job_id: str, kind: str, page_size: int, page_token: str
) -> tuple[list[jobs_pb2.JobEvent], str]:
    """One page of a job's events, oldest first, and the next page's token."""
    page = page_of(page_size, page_token, job_id, default=100)

    def work(session: Session) -> list[jobs_pb2.JobEvent]:
        jobs.get_job(session, job_id, kind)
        rows = jobs.events_after(session, job_id, page.offset, page.limit + 1)
        return [convert.job_event(r) for r in rows]

    events = await db.run(work)
    return events[: page.limit], page.next_token(len(events))


def _events_and_end(
    session: Session, job_id: str, kind: str, after: int
) -> tuple[list[jobs_pb2.JobEvent], bool]:
    """The events after `after`, and whether the job has ended."""
    row = jobs.get_job(session, job_id, kind)
    events = [convert.job_event(e) for e in jobs.events_after(session, row.id, after, 500)]
    return events, row.state in jobs.TERMINAL


async def watch(
    db: Database,
    job_id: str,
    kind: str,
    after: int,
    poll_seconds: float,
    listener: job_signals.Listener | None = None,
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
                await job_signals.wait(announced, poll_seconds)


@contextlib.asynccontextmanager
async def _never() -> AsyncIterator[asyncio.Event]:
    """A signal nobody sets: plain polling, for services running without Redis."""
    yield asyncio.Event()
