"""The gRPC server every service process runs: health, reflection, interceptors, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
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


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' PEM files (mutual TLS with a client CA), or None for
    plaintext. A file that cannot be read fails the start, naming its setting."""
    if settings.server_tls_cert_file is None or settings.server_tls_key_file is None:
        return None
    cert = _read_pem("LLMOPS_SERVER_TLS_CERT_FILE", settings.server_tls_cert_file)
    key = _read_pem("LLMOPS_SERVER_TLS_KEY_FILE", settings.server_tls_key_file)
    client_ca = None
    if settings.server_tls_client_ca_file is not None:
        client_ca = _read_pem(
            "LLMOPS_SERVER_TLS_CLIENT_CA_FILE", settings.server_tls_client_ca_file
        )
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _read_pem(setting: str, path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise OSError(f"{setting}={path}: {error.strerror or error}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{setting}={path}: not a PEM file")
    return data


def is_loopback(host: str) -> bool:
    """Whether binding `host` exposes the port to this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warnings(host: str, *, tls: bool, auth: bool) -> list[str]:
    """What to warn about when a port bound to `host` is reachable from other machines: calls
    in plaintext, or calls nobody has to authenticate (the embedded defaults, made for
    localhost)."""
    if is_loopback(host):
        return []
    warnings = []
    if not tls:
        warnings.append(
            f"gRPC bound to {host} without TLS: calls and API keys cross the network in "
            "plaintext (set LLMOPS_SERVER_TLS_CERT_FILE and LLMOPS_SERVER_TLS_KEY_FILE)"
        )
    if not auth:
        warnings.append(
            f"gRPC bound to {host} with no API key: every caller is admin "
            "(make one with `llmops keys create --role admin`)"
        )
    return warnings


class GrpcServer:
    """A grpc.aio server with health, reflection and the call interceptor around `services`."""

    def __init__(
        self, settings: Settings, services: Sequence[ServiceBinding], keys: ApiKeyCache | None
    ) -> None:
        self.settings = settings
        self.services = list(services)
        self.keys = keys
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
        credentials = server_credentials(self.settings)
        if credentials is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, credentials)
        if self.port == 0:
            raise OSError(f"could not bind gRPC to {address}")
        if self.keys is not None:
            await self.keys.refresh()
        for warning in exposure_warnings(
            self.settings.grpc_host,
            tls=credentials is not None,
            auth=bool(self.keys and self.keys.enabled),
        ):
            log.warning(warning, extra={"address": address})
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
