"""Creating a job by idempotency key when another create with the same key commits first: the
caller gets that job, not INTERNAL."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy.orm import Session

from llmops_services.db.database import Database
from llmops_services.db.tables import JobRow
from llmops_services.jobs import creation
from llmops_services.jobs.kinds import JobKind
from llmops_services.jobs.queue import JobQueue


class _Queue(JobQueue):
    def __init__(self) -> None:
        self.queued: list[str] = []

    async def enqueue_or_defer(self, job_id: str, attempt: int, kind: JobKind) -> None:
        self.queued.append(job_id)


def test_a_create_that_loses_the_race_for_its_key_returns_the_winner(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    db.migrate()
    queue = _Queue()
    winner: list[str] = []

    def draft(session: Session) -> creation.Draft:
        if not winner:  # another request with the same key commits meanwhile
            other = db.run_sync(
                lambda s: (
                    creation.create_in(
                        s, JobKind.EVAL, "k", lambda _: creation.Draft(JobRow(), "first")
                    )[0].id
                )
            )
            winner.append(other)
        return creation.Draft(JobRow(), "second")

    shown = asyncio.run(
        creation.create_job(db, queue, JobKind.EVAL, "k", draft, lambda _, row: row.id)
    )
    assert shown == winner[0] and queue.queued == []
    db.close()
