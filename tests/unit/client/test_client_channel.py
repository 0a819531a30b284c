"""The clients' channel against a real `grpc.aio` server that serves only grpc_health.

Checks what no fake can: the interceptors' metadata on the wire for every call shape, the
typed error of a real failed call, and a quick `Unavailable` from a closed port.
"""

from __future__ import annotations

import asyncio
import importlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmops import AsyncClient, Client, Unavailable, Unimplemented, request_id_scope

if TYPE_CHECKING:
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor

# grpc_health's type stubs lack its asyncio servicer.
HealthServicer: Any = importlib.import_module("grpc_health.v1.health").aio.HealthServicer


@dataclass
class Seen(_ServerInterceptor):
    """Records the method and metadata of every call the server receives."""

    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        metadata = {str(k): str(v) for k, v in handler_call_details.invocation_metadata}
        self.calls.append((handler_call_details.method, metadata))
        return await continuation(handler_call_details)

    def last(self, method_suffix: str) -> dict[str, str]:
        matching = [md for method, md in self.calls if method.endswith(method_suffix)]
        assert matching, f"no call to {method_suffix} in {[m for m, _ in self.calls]}"
        return matching[-1]


@dataclass
class HealthServer:
    address: str
    seen: Seen


@pytest_asyncio.fixture
async def server() -> AsyncIterator[HealthServer]:
    seen = Seen()
    srv = grpc.aio.server(interceptors=[seen])
    servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, srv)
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    try:
        yield HealthServer(f"127.0.0.1:{port}", seen)
    finally:
        await srv.stop(None)


@pytest.mark.asyncio
async def test_sync_client_sends_auth_and_request_ids(server: HealthServer) -> None:
    def calls() -> tuple[str, str | None]:
        with Client(server.address, api_key="sk-test", timeout=5) as client:
            stub = health_pb2_grpc.HealthStub(client.channel)
            status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
            with pytest.raises(Unimplemented):
                client.datasets.upload(b'{"prompt": "a", "completion": "b"}\n', "sft")
            with pytest.raises(Unimplemented):
                list(client.training.watch("ftjob-1"))
            try:
                list(client.templates.list())
            except Unimplemented as err:
                return health_pb2.HealthCheckResponse.ServingStatus.Name(status), err.request_id
            raise AssertionError("the health-only server should not serve templates")

    status, request_id = await asyncio.to_thread(calls)
    assert status == "SERVING"
    check = server.seen.last("/Check")
    assert check["authorization"] == "Bearer sk-test"
    assert len(check["x-request-id"]) == 32
    listed = server.seen.last("/ListPromptTemplates")
    assert listed["authorization"] == "Bearer sk-test"
    assert listed["x-request-id"] == request_id  # the id on the error is the one sent
    assert "llmops-python/" in listed["user-agent"]
    for suffix in ("/UploadDataset", "/WatchTrainingJob"):
        assert server.seen.last(suffix)["authorization"] == "Bearer sk-test", suffix


@pytest.mark.asyncio
async def test_async_client_every_call_shape(server: HealthServer) -> None:
    async with AsyncClient(server.address, api_key="sk-aio", timeout=5) as client:
        stub = health_pb2_grpc.HealthStub(client.channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))
        first = await watch.read()
        watch.cancel()
        assert first.status == health_pb2.HealthCheckResponse.SERVING

        with request_id_scope("caller-chosen"), pytest.raises(Unimplemented) as info:
            await client.models.get("extractor@production")
        assert info.value.request_id == "caller-chosen"
        with pytest.raises(Unimplemented):
            await client.datasets.upload(b'{"prompt": "a", "completion": "b"}\n', "sft")
        with pytest.raises(Unimplemented):
            async for _ in client.training.watch("ftjob-1"):
                pass

    for suffix in ("/Check", "/Watch", "/GetModel", "/UploadDataset", "/WatchTrainingJob"):
        metadata = server.seen.last(suffix)
        assert metadata["authorization"] == "Bearer sk-aio", suffix
        assert metadata["x-request-id"], suffix
    assert server.seen.last("/GetModel")["x-request-id"] == "caller-chosen"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_closed_port_is_unavailable_quickly() -> None:
    start = time.monotonic()
    with Client(f"127.0.0.1:{_closed_port()}", timeout=10) as client, pytest.raises(Unavailable):
        client.models.get("anything")
    assert time.monotonic() - start < 5  # retried a few times, but never waits out the deadline


@pytest.mark.asyncio
async def test_closed_port_is_unavailable_quickly_async() -> None:
    start = time.monotonic()
    async with AsyncClient(f"127.0.0.1:{_closed_port()}", timeout=10) as client:
        with pytest.raises(Unavailable) as info:
            await client.datasets.get("anything")
    assert time.monotonic() - start < 5
    assert info.value.request_id
