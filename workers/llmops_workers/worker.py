"""The arq worker: takes training attempts from Redis and runs them (`llmops worker`)."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any, ClassVar

from arq.connections import RedisSettings

from llmops_services.context import Platform
from llmops_services.queue import TRAINING_QUEUE
from llmops_services.runtime.logs import configure_logging
from llmops_services.settings import Settings
from llmops_workers.runner import run_attempt

log = logging.getLogger("llmops.worker")


async def run_training_job(ctx: dict[str, Any], job_id: str, attempt: int) -> str:
    """One attempt of a training job (the arq job carries only the id and attempt)."""
    platform: Platform = ctx["platform"]
    return await run_attempt(platform, job_id, attempt, ctx["owner"], ctx["threads"])


async def startup(ctx: dict[str, Any]) -> None:
    """Opens the platform once per worker process."""
    settings: Settings = ctx["settings"]
    ctx["platform"] = Platform.open(settings)
    ctx["owner"] = f"{socket.gethostname()}:{os.getpid()}"
    log.info("worker started", extra={"owner": ctx["owner"]})


async def shutdown(ctx: dict[str, Any]) -> None:
    """Closes the platform."""
    platform: Platform | None = ctx.get("platform")
    if platform is not None:
        platform.close()


def worker_settings(settings: Settings, threads: int = 1) -> type:
    """An arq WorkerSettings class bound to these settings.

    One job at a time (a worker is one GPU or one CPU budget); arq's own retries are off because
    the reconciler retries from the database, with a new arq id per attempt.
    """

    class WorkerSettings:
        functions: ClassVar[list[Any]] = [run_training_job]
        on_startup = startup
        on_shutdown = shutdown
        redis_settings = RedisSettings.from_dsn(settings.redis_url)
        queue_name = TRAINING_QUEUE
        max_jobs = 1
        max_tries = 1
        job_timeout = 7 * 24 * 3600
        poll_delay = 0.05
        keep_result = 3600
        ctx: ClassVar[dict[str, Any]] = {"settings": settings, "threads": threads}

    return WorkerSettings


def run_worker(settings: Settings, threads: int = 1) -> None:
    """Runs a worker in the foreground until SIGTERM or SIGINT."""
    from arq.worker import run_worker as arq_run_worker

    configure_logging(settings.log_level)
    arq_run_worker(worker_settings(settings, threads))
