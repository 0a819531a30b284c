"""The gRPC server every service process runs: health, reflection, interceptors, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from llmops_services.runtime.auth import ApiKeyCache
from llmops_services.runtime.calls import CallWrapper, WrappingRegistrar
from llmops_services.runtime.logs import AccessLog
from llmops_services.runtime.tracing import configure_tracing, shutdown_tracing
from llmops_services.settings import Settings

log = logging.getLogger("llmops.server")


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service to host: its full name and how to add its servicer to a server."""

    full_name: str
    add_to_server: Callable[[grpc.aio.Server], None]


class GrpcServer:
    """A grpc.aio server with health, reflection and the call interceptor around `services`."""

    def __init__(
        self, settings: Settings, services: Sequence[ServiceBinding], keys: ApiKeyCache | None
    ) -> None:
        self.settings = settings
        self.services = list(services)
        interceptors: list[grpc.aio.ServerInterceptor] = []  # type: ignore[type-arg]
        if settings.otlp_endpoint:
            # Spans cost a fifth of a cheap call's CPU, so they are made only when exported;
            # without tracing, log lines still carry the caller's trace id from `traceparent`.
            provider = configure_tracing(settings.service_name, settings.otlp_endpoint)
            interceptors.append(aio_server_interceptor(tracer_provider=provider))  # type: ignore[no-untyped-call]
        options = [
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self.server = grpc.aio.server(
            interceptors=interceptors,
            options=options,
        )
        self.access_log = AccessLog()
        registrar: Any = WrappingRegistrar(self.server, CallWrapper(keys, self.access_log))
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, registrar)
        for service in self.services:
            service.add_to_server(registrar)
        names = [s.full_name for s in self.services]
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(  # type: ignore[attr-defined]
                [*names, health.SERVICE_NAME, reflection.SERVICE_NAME]
            ),
            registrar,
        )
        self.port = 0

    async def start(self) -> int:
        """Binds, starts and marks every service SERVING; returns the bound port."""
        address = f"{self.settings.grpc_host}:{self.settings.grpc_port}"
        self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"could not bind gRPC to {address}")
        await self.server.start()
        for name in ["", *(s.full_name for s in self.services)]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("grpc server started", extra={"address": f"{self.settings.grpc_host}:{self.port}"})
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Reports NOT_SERVING, refuses new calls and lets in-flight ones finish within `grace`."""
        await self.health.enter_graceful_shutdown()
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        await self.server.stop(grace)
        self.access_log.flush()
        shutdown_tracing()
        log.info("grpc server stopped")


async def run_until_signalled(start: Callable[[], object], stop: Callable[[], object]) -> None:
    """Starts, then waits for SIGTERM or SIGINT and stops: the process's whole life."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        result = start()
        if asyncio.iscoroutine(result):
            await result
        await stopping.wait()
        log.info("signal received, shutting down")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        result = stop()
        if asyncio.iscoroutine(result):
            await result
