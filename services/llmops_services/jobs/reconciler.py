"""The reconciler (the design's sweeper): the database is the truth and Redis may lose work, so
every `LLMOPS_RECONCILE_SECONDS` it queues again the QUEUED attempts Redis does not know, and
gives a job whose lease expired (its worker died) a new attempt, up to
`LLMOPS_JOB_MAX_ATTEMPTS`. The same for every kind."""

from __future__ import annotations

import asyncio
import logging

import grpc
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from llmops_services.context import Platform
from llmops_services.db.tables import JobRow, utcnow
from llmops_services.jobs import leases, states
from llmops_services.jobs.kinds import JobKind
from llmops_services.jobs.queue import JobQueue

log = logging.getLogger("llmops.jobs")


class Reconciler:
    """Finds work Redis lost and workers that died, and queues it again."""

    def __init__(self, platform: Platform, queue: JobQueue) -> None:
        self.platform = platform
        self.queue = queue
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Runs `sweep` every `reconcile_seconds` until stopped."""
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stops the loop."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except (RedisError, OSError, OperationalError) as error:  # down or restarting
                log.warning("reconciler sweep: Redis or the database unavailable (%s)", error)
            except Exception:
                log.exception("reconciler sweep failed")
            await asyncio.sleep(self.platform.settings.reconcile_seconds)

    async def sweep(self) -> None:
        """Retries expired attempts, and queues QUEUED attempts that Redis does not know."""
        settings = self.platform.settings

        def expire(session: Session) -> None:
            for row in leases.expired(session, utcnow()):
                if leases.retries_used(row) >= settings.job_max_attempts:
                    states.fail(
                        session,
                        row,
                        grpc.StatusCode.UNAVAILABLE,
                        "worker lost; no attempts left",
                        f"worker lost after {row.attempt} attempts",
                    )
                else:
                    leases.requeue(session, row, f"attempt {row.attempt} lost its worker")

        await self.platform.db.run(expire)
        queued = await self.platform.db.run(_queued_attempts)
        for job_id, attempt, kind in queued:
            if not await self.queue.knows(job_id, attempt):
                log.info("queueing %s attempt %s again", job_id, attempt)
                await self.queue.enqueue(job_id, attempt, kind)


def _queued_attempts(session: Session) -> list[tuple[str, int, JobKind]]:
    query = select(JobRow.id, JobRow.attempt, JobRow.kind).where(JobRow.state == "QUEUED")
    return [(job_id, n, JobKind.named(kind)) for job_id, n, kind in session.execute(query).all()]
