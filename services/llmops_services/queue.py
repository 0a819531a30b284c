"""The work queue: arq on Redis. It carries a job's id and attempt to a worker, nothing more; the
database stays the truth, and the reconciler queues again what Redis loses."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import Job, JobStatus

from llmops_services.job_signals import Listener

TRAINING_QUEUE = "llmops:training"
TRAINING_FUNCTION = "run_training_job"
EVAL_FUNCTION = "run_eval_job"
FUNCTIONS = {"training": TRAINING_FUNCTION, "eval": EVAL_FUNCTION}
"""The worker function that runs each kind of job; one queue carries them all."""
WORKERS_PREFIX = "llmops:workers:"


def arq_job_id(job_id: str, attempt: int) -> str:
    """One arq id per attempt: arq never forgets an id's abort flag or result (arq#485)."""
    return f"{job_id}:{attempt}"


class JobQueue:
    """Enqueues job attempts and tells whether Redis still knows one."""

    def __init__(self, redis_url: str, queue_name: str = TRAINING_QUEUE) -> None:
        self.redis_url = redis_url
        self.queue_name = queue_name
        self._pool: ArqRedis | None = None
        self.signals = Listener(redis_url)
        """Wakes job watchers when a job's events are announced on the same Redis."""

    async def pool(self) -> ArqRedis:
        """The connection pool, opened on first use."""
        if self._pool is None:
            self._pool = await create_pool(
                RedisSettings.from_dsn(self.redis_url), default_queue_name=self.queue_name
            )
        return self._pool

    async def enqueue(self, job_id: str, attempt: int, kind: str = "training") -> bool:
        """Queues an attempt of a job of `kind`; False when Redis already holds it."""
        pool = await self.pool()
        queued = await pool.enqueue_job(
            FUNCTIONS[kind], job_id, attempt, _job_id=arq_job_id(job_id, attempt)
        )
        return queued is not None

    async def knows(self, job_id: str, attempt: int) -> bool:
        """Whether Redis has the attempt queued, running or finished."""
        job = Job(arq_job_id(job_id, attempt), await self.pool(), _queue_name=self.queue_name)
        return await job.status() != JobStatus.not_found

    async def workers(self) -> list[dict[str, Any]]:
        """What the live workers advertise (see `advertise`); empty when none runs."""
        pool = await self.pool()
        found = []
        async for key in pool.scan_iter(match=WORKERS_PREFIX + "*"):
            raw = await pool.get(key)
            if raw:
                found.append(json.loads(raw))
        return found

    async def close(self) -> None:
        """Closes the pool and the watchers' subscription."""
        await self.signals.close()
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None


async def advertise(redis: Any, owner: str, capabilities: dict[str, Any], ttl: float) -> None:
    """Publishes a worker's capabilities for `ttl` seconds; a worker renews it while it lives."""
    key = WORKERS_PREFIX + owner
    await redis.set(key, json.dumps({"owner": owner, **capabilities}), px=int(ttl * 1000))


async def withdraw(redis: Any, owner: str) -> None:
    """Removes a stopping worker's advertisement."""
    await redis.delete(WORKERS_PREFIX + owner)


class PrivateRedis:
    """A redis-server of our own on a free loopback port, for the embedded default and tests.

    No persistence, and `noeviction`: Redis may lose work only by a restart, never by evicting it.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self._own_dir = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="llmops-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The redis:// URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> PrivateRedis:
        """Starts the server and waits until it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed (apt-get install redis-server), "
                "or set LLMOPS_REDIS_URL to a running Redis"
            )
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.directory)]
        command += ["--maxmemory-policy", "noeviction", "--loglevel", "warning"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if self._answers():
                return self
            time.sleep(0.01)
        self.stop()
        raise RuntimeError("redis-server did not answer in time")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stops the server and removes its directory if it made one."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)
