"""Push for job watchers: a committed job event is announced on Redis pub/sub, so that a watch
stream sends it within milliseconds instead of at its next look at the event log.

The event log in the database stays the truth: an announcement carries only the job's id, and a
watcher that misses one (Redis restarting, a subscription not yet open) still finds the events
at its next look, `LLMOPS_WATCH_POLL_SECONDS` later. One subscription per process serves every
watcher in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

import redis
import redis.asyncio
from sqlalchemy.orm import Session

from llmops_services.db.database import Database

CHANNEL = "llmops:job-events"
_PENDING = "llmops.jobs_with_new_events"

log = logging.getLogger("llmops.jobs")


def mark(session: Session, job_id: str) -> None:
    """Notes that the session's transaction adds events to the job, to announce on commit."""
    session.info.setdefault(_PENDING, set()).add(job_id)


class Announcer:
    """Publishes, after each commit, the ids of the jobs that transaction gave new events."""

    def __init__(self, redis_url: str) -> None:
        self._client = redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)

    def install(self, db: Database) -> Announcer:
        """Announces the commits of every session of `db` from now on."""
        db.on_commit(self._after_commit)
        return self

    def _after_commit(self, session: Session) -> None:
        for job_id in sorted(session.info.pop(_PENDING, ())):
            try:
                self._client.publish(CHANNEL, job_id)
            except redis.RedisError as error:  # watchers still poll the log
                log.debug("could not announce events of %s: %s", job_id, error)

    def close(self) -> None:
        """Closes the connection."""
        self._client.close()


class Listener:
    """Wakes the watchers of a job when its events are announced."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def armed(self, job_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set when the job's events are next announced. Arm it before reading the
        log, so that an announcement between the read and the wait is not lost."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._listen())
        signal = asyncio.Event()
        self._waiters[job_id].add(signal)
        try:
            yield signal
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(signal)
                if not waiters:
                    del self._waiters[job_id]

    async def _listen(self) -> None:
        while True:
            client = redis.asyncio.Redis.from_url(self.redis_url)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            job_id = message["data"].decode()
                            for waiter in self._waiters.get(job_id, ()):
                                waiter.set()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # Redis away: watchers poll until it is back
                log.warning("job event subscription lost: %s", error)
                await asyncio.sleep(1.0)
            finally:
                await client.aclose()

    async def close(self) -> None:
        """Stops listening."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


async def wait(signal: asyncio.Event, timeout: float) -> None:
    """Returns when `signal` is set or after `timeout` seconds, whichever is first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(signal.wait(), timeout)
