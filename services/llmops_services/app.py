"""A server process hosting some or all of the four services on one gRPC port."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from llmops_services import seed
from llmops_services.context import Platform
from llmops_services.eval import service as eval_service
from llmops_services.gateway import GatewayError, GatewayProcess, find_binary
from llmops_services.inference.service import InferenceService
from llmops_services.jobs import metrics as jobs_metrics
from llmops_services.jobs.private_redis import PrivateRedis
from llmops_services.jobs.queue import JobQueue
from llmops_services.jobs.reconciler import Reconciler
from llmops_services.jobs.signals import Announcer
from llmops_services.registry import service as registry_service
from llmops_services.runtime.auth import ApiKeyCache
from llmops_services.runtime.logs import configure_logging
from llmops_services.runtime.metrics import start_metrics_server
from llmops_services.runtime.server import GrpcServer, ServiceBinding, run_until_signalled
from llmops_services.settings import Settings
from llmops_services.training import service as training_service
from llmops_services.unimplemented import unimplemented_bindings
from llmops_services.webhooks.dispatcher import Dispatcher

log = logging.getLogger("llmops.app")

SERVICE_NAMES = ("registry", "training", "eval", "inference")


@dataclass
class Addresses:
    """Where a running process listens; written to `<data_dir>/stack.json` for workers and tools."""

    grpc: str
    metrics: str = ""


class PlatformProcess:
    """Opens the platform, seeds it, and serves the chosen services until stopped."""

    def __init__(self, settings: Settings, services: Sequence[str] = SERVICE_NAMES) -> None:
        unknown = sorted(set(services) - set(SERVICE_NAMES))
        if unknown:
            raise ValueError(
                f"unknown service(s) {', '.join(unknown)}; choose from {SERVICE_NAMES}"
            )
        self.settings = settings
        self.services = list(services)
        self.platform: Platform | None = None
        self.server: GrpcServer | None = None
        self.addresses: Addresses | None = None
        self.redis: PrivateRedis | None = None
        self.queue: JobQueue | None = None
        self.announcer: Announcer | None = None
        self.reconciler: Reconciler | None = None
        self.dispatcher: Dispatcher | None = None
        self.inference: InferenceService | None = None
        self._stack: dict[str, str] = {}

    def _bindings(self, platform: Platform) -> list[ServiceBinding]:
        bindings = []
        if "registry" in self.services:
            bindings.append(registry_service.binding(platform))
        if self.queue is not None and "training" in self.services:
            bindings.append(training_service.binding(platform, self.queue))
        if self.queue is not None and "eval" in self.services:
            bindings.append(eval_service.binding(platform, self.queue))
        if "inference" in self.services:
            self.inference = InferenceService(platform)
            bindings.append(self.inference.binding())
        wanted = {f"llmops.v1.{name.capitalize()}Service" for name in self.services}
        served = {b.full_name for b in bindings}
        bindings += [b for b in unimplemented_bindings() if b.full_name in wanted - served]
        return bindings

    async def start(self) -> Addresses:
        """Migrates, seeds, binds the gRPC and metrics ports; returns the addresses."""
        platform = Platform.open(self.settings)
        self.platform = platform
        if self.settings.seed_sample_data and "registry" in self.services:
            seed.seed(platform)
        if {"training", "eval"} & set(self.services):  # the services that queue jobs
            if not self.settings.redis_url:
                self.redis = PrivateRedis(self.settings.data_dir / "redis").start()
                self.settings.redis_url = self.redis.url
            self.queue = JobQueue(self.settings.redis_url)
            self.announcer = Announcer(self.settings.redis_url).install(platform.db)
            self.reconciler = Reconciler(platform, self.queue)
            if self.settings.webhook_urls:
                self.dispatcher = Dispatcher(platform)
            jobs_metrics.register(platform.db)
        keys = ApiKeyCache(platform.db, self.settings.auth_cache_seconds)
        self.server = GrpcServer(self.settings, self._bindings(platform), keys)
        port = await self.server.start()
        host = self.settings.grpc_host
        addresses = Addresses(grpc=f"{host}:{port}")
        if self.settings.metrics_port >= 0:
            metrics_port = start_metrics_server(self.settings.metrics_port, host)
            addresses.metrics = f"http://{host}:{metrics_port}/metrics"
        self.addresses = addresses
        # Startup leaves hundreds of thousands of long-lived objects (SQLAlchemy, pydantic,
        # protobuf descriptors); freezing them keeps every later GC pass from walking them again.
        gc.collect()
        gc.freeze()
        if self.reconciler is not None:
            self.reconciler.start()
        if self.dispatcher is not None:
            self.dispatcher.start()
        self._stack = {
            "grpc": addresses.grpc,
            "metrics": addresses.metrics,
            "redis": self.settings.redis_url,
        }
        self.advertise()
        return addresses

    def advertise(self, **entries: str) -> None:
        """Writes the stack's addresses, with `entries` added, to `<data_dir>/stack.json`, where
        workers and tools find them (the REST gateway's is added once it has started)."""
        self._stack.update(entries)
        (self.settings.data_dir / "stack.json").write_text(json.dumps(self._stack, indent=2))

    async def stop(self) -> None:
        """Stops serving within the grace period and closes the database."""
        if self.reconciler is not None:
            await self.reconciler.stop()
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        if self.server is not None:
            await self.server.stop()
        if self.inference is not None:
            await self.inference.close()
        if self.queue is not None:
            jobs_metrics.unregister()
            await self.queue.close()
        if self.announcer is not None:
            self.announcer.close()
        if self.redis is not None:
            self.redis.stop()
        if self.platform is not None:
            self.platform.close()


class WorkerProcesses:
    """Workers started beside the services (`llmops up --workers N`), each its own process,
    running `threads` torch threads per job."""

    def __init__(self, settings: Settings, count: int, threads: int = 1) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.settings = settings
        self.count = count
        self.threads = threads
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        """Starts `count` workers on the stack's Redis and data dir."""
        env = {**os.environ, "LLMOPS_REDIS_URL": self.settings.redis_url}
        command = [sys.executable, "-m", "llmops", "worker"]
        command += ["--data-dir", str(self.settings.data_dir), "--threads", str(self.threads)]
        for _ in range(self.count):
            self.processes.append(subprocess.Popen(command, env=env))

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, then SIGKILL for any worker still running after `timeout` seconds."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def serve(
    settings: Settings,
    services: Sequence[str] = SERVICE_NAMES,
    workers: int = 0,
    threads: int = 1,
    gateway: bool = False,
) -> None:
    """Runs a process until SIGTERM or SIGINT, printing where it listens; with `gateway`, the
    REST gateway too (on `settings.http_port`, unless -1), as a child process."""
    configure_logging(settings.log_level)
    process = PlatformProcess(settings, services)
    pool = WorkerProcesses(settings, workers, threads)
    rest: GatewayProcess | None = None

    async def start() -> None:
        nonlocal rest
        addresses = await process.start()
        print(f"gRPC     {addresses.grpc}  ({', '.join(process.services)})", flush=True)
        if gateway and settings.http_port >= 0:
            try:
                binary = find_binary(settings.gateway_binary)
            except GatewayError as error:
                print(f"REST     not started: {error}", flush=True)
            else:
                listen = f"{settings.grpc_host}:{settings.http_port}"
                rest = GatewayProcess(
                    binary, addresses.grpc, listen, settings.shutdown_grace_seconds
                )
                url = await asyncio.to_thread(rest.start)
                process.advertise(rest=url)
                print(f"REST     {url}  (gateway to {addresses.grpc})", flush=True)
        if addresses.metrics:
            print(f"metrics  {addresses.metrics}", flush=True)
        if settings.redis_url:
            print(f"redis    {settings.redis_url}", flush=True)
        if workers:
            pool.start()
            print(f"workers  {workers} ({threads} torch threads per job)", flush=True)

    async def stop() -> None:
        if rest is not None:  # first, so that no new REST calls arrive while the rest stops
            await asyncio.to_thread(rest.stop)
        pool.stop()
        await process.stop()

    await run_until_signalled(start, stop)
