"""A server process hosting some or all of the four services on one gRPC port."""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from llmops_services import seed
from llmops_services.context import Platform
from llmops_services.registry import service as registry_service
from llmops_services.runtime.auth import ApiKeyCache
from llmops_services.runtime.logs import configure_logging
from llmops_services.runtime.metrics import start_metrics_server
from llmops_services.runtime.server import GrpcServer, ServiceBinding, run_until_signalled
from llmops_services.settings import Settings
from llmops_services.unimplemented import unimplemented_bindings

log = logging.getLogger("llmops.app")

SERVICE_NAMES = ("registry", "training", "eval", "inference")


@dataclass
class Addresses:
    """Where a running process listens; written to `<data_dir>/stack.json` for workers and tools."""

    grpc: str
    metrics: str = ""
    extra: dict[str, str] = field(default_factory=dict)


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

    def _bindings(self, platform: Platform) -> list[ServiceBinding]:
        bindings = []
        if "registry" in self.services:
            bindings.append(registry_service.binding(platform))
        wanted = {f"llmops.v1.{name.capitalize()}Service" for name in self.services}
        bindings += [b for b in unimplemented_bindings() if b.full_name in wanted]
        return bindings

    async def start(self) -> Addresses:
        """Migrates, seeds, binds the gRPC and metrics ports; returns the addresses."""
        platform = Platform.open(self.settings)
        self.platform = platform
        if self.settings.seed_sample_data and "registry" in self.services:
            seed.seed(platform)
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
        (self.settings.data_dir / "stack.json").write_text(
            json.dumps({"grpc": addresses.grpc, "metrics": addresses.metrics}, indent=2)
        )
        return addresses

    async def stop(self) -> None:
        """Stops serving within the grace period and closes the database."""
        if self.server is not None:
            await self.server.stop()
        if self.platform is not None:
            self.platform.close()


async def serve(settings: Settings, services: Sequence[str] = SERVICE_NAMES) -> None:
    """Runs a process until SIGTERM or SIGINT, printing where it listens."""
    configure_logging(settings.log_level)
    process = PlatformProcess(settings, services)

    async def start() -> None:
        addresses = await process.start()
        print(f"gRPC     {addresses.grpc}  ({', '.join(process.services)})", flush=True)
        if addresses.metrics:
            print(f"metrics  {addresses.metrics}", flush=True)

    await run_until_signalled(start, process.stop)
