"""The work queue: arq on Redis. It carries a job's id and attempt to a worker, nothing more; the
database stays the truth, and the reconciler queues again what Redis loses."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import Job, JobStatus

from llmops_services.jobs import adverts
from llmops_services.jobs.kinds import JobKind
from llmops_services.jobs.signals import Listener

JOB_QUEUE = "llmops:training"
"""The one arq queue every kind of job goes through (each kind has its own worker function).
The name is older than eval runs; it stays so that attempts queued by an earlier version are
still found by workers of this one."""

log = logging.getLogger("llmops.jobs")


def arq_job_id(job_id: str, attempt: int) -> str:
    """One arq id per attempt: arq never forgets an id's abort flag or result (arq#485)."""
    return f"{job_id}:{attempt}"


async def enqueue_attempt(redis: ArqRedis, job_id: str, attempt: int, kind: JobKind) -> bool:
    """Queues an attempt of a job of `kind` on `redis`; False when Redis already holds it."""
    queued = await redis.enqueue_job(
        kind.function, job_id, attempt, _job_id=arq_job_id(job_id, attempt), _queue_name=JOB_QUEUE
    )
    return queued is not None


class JobQueue:
    """Enqueues job attempts and tells whether Redis still knows one."""

    def __init__(self, redis_url: str, queue_name: str = JOB_QUEUE) -> None:
        self.redis_url = redis_url
        self.queue_name = queue_name
        self._pool: ArqRedis | None = None
        self._opening = asyncio.Lock()
        self.signals = Listener(redis_url)
        """Wakes job watchers when a job's events are announced on the same Redis."""

    async def pool(self) -> ArqRedis:
        """The connection pool, opened on first use.

        Opened under a lock: two first uses at once (the reconciler's first pass and a create)
        would otherwise each open a pool, and the one overwritten would leak its connection.
        """
        async with self._opening:
            if self._pool is None:
                self._pool = await create_pool(
                    RedisSettings.from_dsn(self.redis_url), default_queue_name=self.queue_name
                )
        return self._pool

    async def enqueue(self, job_id: str, attempt: int, kind: JobKind) -> bool:
        """Queues an attempt of a job of `kind`; False when Redis already holds it."""
        pool = await self.pool()
        queued = await pool.enqueue_job(
            kind.function, job_id, attempt, _job_id=arq_job_id(job_id, attempt)
        )
        return queued is not None

    async def enqueue_or_defer(self, job_id: str, attempt: int, kind: JobKind) -> None:
        """Queues an attempt; with Redis down, leaves it to the reconciler (the job is safe in
        the database, QUEUED, and the reconciler queues what Redis does not know)."""
        try:
            await self.enqueue(job_id, attempt, kind)
        except Exception:
            log.exception("could not queue %s; the reconciler will retry", job_id)

    async def knows(self, job_id: str, attempt: int) -> bool:
        """Whether Redis has the attempt queued, running or finished."""
        job = Job(arq_job_id(job_id, attempt), await self.pool(), _queue_name=self.queue_name)
        return await job.status() != JobStatus.not_found

    async def workers(self) -> list[dict[str, Any]]:
        """What the live workers advertise (see `adverts`); empty when none runs."""
        return await adverts.read_all(await self.pool())

    async def close(self) -> None:
        """Closes the pool and the watchers' subscription."""
        await self.signals.close()
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
