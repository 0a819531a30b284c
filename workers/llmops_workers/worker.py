"""The arq worker: takes attempts of every kind of job from Redis and runs them
(`llmops worker`)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing.forkserver
import os
import signal
import socket
from typing import Any, ClassVar

from arq.connections import RedisSettings
from arq.worker import Function, func
from redis.exceptions import RedisError

from llmops_services.context import Platform
from llmops_services.jobs.adverts import advertise, withdraw
from llmops_services.jobs.kinds import JobKind
from llmops_services.jobs.queue import JOB_QUEUE, enqueue_attempt
from llmops_services.jobs.signals import Announcer
from llmops_services.runtime.logs import configure_logging
from llmops_services.runtime.metrics import start_metrics_server
from llmops_services.runtime.tracing import configure_tracing, shutdown_tracing
from llmops_services.settings import Settings
from llmops_workers import capabilities
from llmops_workers.registry_link import RegistryLink
from llmops_workers.runner import job_process_context, run_attempt, stop_taking_jobs
from llmops_workers.runners import RUNNERS

log = logging.getLogger("llmops.worker")

ADVERTISE_EVERY = 5.0


def job_function(kind: JobKind) -> Function:
    """The arq function that runs attempts of `kind` (the arq job carries only the id and the
    attempt); a retry is queued at once, rather than at the reconciler's next sweep."""

    async def run_job(ctx: dict[str, Any], job_id: str, attempt: int) -> str:
        platform: Platform = ctx["platform"]
        ended = await run_attempt(
            platform, ctx["registry"], job_id, attempt, ctx["owner"], ctx["threads"], RUNNERS[kind]
        )
        if ended == "retry":
            try:
                await enqueue_attempt(ctx["redis"], job_id, attempt + 1, kind)
            except (RedisError, OSError) as error:  # the row says QUEUED: the reconciler queues it
                log.warning("could not queue %s attempt %d: %s", job_id, attempt + 1, error)
        return ended

    return func(run_job, name=kind.function)


async def _advertise_forever(ctx: dict[str, Any]) -> None:
    """Probes what this worker can run, then keeps its advertisement alive in Redis."""
    found: dict[str, Any] = {"probing": True}
    probing = asyncio.create_task(capabilities.probe())
    while True:
        if probing.done() and "probing" in found:
            found = probing.result()
        advert = {
            **found,
            "methods": capabilities.methods(found),
            "metrics": ctx["metrics"],
            "distributed_on_cpu": ctx["settings"].worker_distributed_on_cpu,
        }
        try:
            await advertise(ctx["redis"], ctx["owner"], advert, ttl=ADVERTISE_EVERY * 3)
        except Exception:
            log.exception("could not advertise this worker")
        await asyncio.sleep(1.0 if "probing" in found else ADVERTISE_EVERY)


async def startup(ctx: dict[str, Any]) -> None:
    """Opens the platform and the Registry client, and starts advertising."""
    settings: Settings = ctx["settings"]
    ctx["owner"] = f"{socket.gethostname()}:{os.getpid()}"
    if settings.otlp_endpoint:
        configure_tracing(f"{settings.service_name}-worker", settings.otlp_endpoint)
    ctx["metrics"] = ""
    if settings.worker_metrics_port >= 0:
        port = start_metrics_server(settings.worker_metrics_port, settings.grpc_host)
        ctx["metrics"] = f"http://{settings.grpc_host}:{port}/metrics"
    # the fork server imports the ML stack while the worker waits for its first job
    job_process_context()
    multiprocessing.forkserver.ensure_running()
    platform = Platform.open(settings)
    ctx["platform"] = platform
    ctx["announcer"] = Announcer(settings.redis_url).install(platform.db)
    registry = RegistryLink.open(platform, ctx["owner"])
    ctx["registry"] = registry
    await registry.ready()
    ctx["advertiser"] = asyncio.create_task(_advertise_forever(ctx))
    log.info("worker started", extra={"owner": ctx["owner"], "metrics": ctx["metrics"]})


async def shutdown(ctx: dict[str, Any]) -> None:
    """Withdraws the advertisement and closes what startup opened."""
    advertiser: asyncio.Task[None] | None = ctx.get("advertiser")
    if advertiser is not None:
        advertiser.cancel()
        await asyncio.gather(advertiser, return_exceptions=True)
        await withdraw(ctx["redis"], ctx["owner"])
    registry: RegistryLink | None = ctx.get("registry")
    if registry is not None:
        await registry.close()
    platform: Platform | None = ctx.get("platform")
    if platform is not None:
        platform.close()
    announcer: Announcer | None = ctx.get("announcer")
    if announcer is not None:
        announcer.close()
    shutdown_tracing()


def worker_settings(settings: Settings, threads: int = 1) -> type:
    """An arq WorkerSettings class bound to these settings.

    One job at a time (a worker is one GPU or one CPU budget); arq's own retries are off because
    retries are decided from the database, with a new arq id per attempt.
    """

    class WorkerSettings:
        functions: ClassVar[list[Any]] = [job_function(kind) for kind in JobKind]
        on_startup = startup
        on_shutdown = shutdown
        redis_settings = RedisSettings.from_dsn(settings.redis_url)
        queue_name = JOB_QUEUE
        max_jobs = 1
        max_tries = 1
        job_timeout = 7 * 24 * 3600
        job_completion_wait = settings.worker_stop_grace_seconds
        poll_delay = 0.05
        keep_result = 3600
        ctx: ClassVar[dict[str, Any]] = {"settings": settings, "threads": threads}

    return WorkerSettings


def run_worker(settings: Settings, threads: int = 1) -> None:
    """Runs a worker in the foreground until SIGTERM or SIGINT: it then takes no new job, and
    its running job hands back (`stop_taking_jobs`) within `worker_stop_grace_seconds`."""
    from arq.worker import create_worker

    configure_logging(settings.log_level)
    worker = create_worker(worker_settings(settings, threads))
    grace = settings.worker_stop_grace_seconds

    def on_signal(signum: signal.Signals) -> None:
        stop_taking_jobs()
        if grace:
            worker.handle_sig_wait_for_completion(signum)
        else:
            worker.handle_sig(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        worker.loop.add_signal_handler(signum, on_signal, signum)
    worker.run()
