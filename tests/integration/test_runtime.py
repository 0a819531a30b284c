"""The service runtime around every RPC: health, reflection, request ids, metrics, auth, errors,
graceful shutdown and data kept across restarts."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from llmops.v1 import (
    inference_service_pb2,
    inference_service_pb2_grpc,
)
from llmops.v1 import registry_service_pb2 as pb
from llmops.v1 import registry_service_pb2_grpc as pb_grpc
from llmops_services.errors import ServiceError
from llmops_services.runtime.auth import create_key, list_keys, revoke_key
from llmops_services.runtime.server import GrpcServer, ServiceBinding
from llmops_services.unimplemented import unimplemented_bindings
from tests.conftest import ServerThread, make_settings

SERVICES = [
    "llmops.v1.RegistryService",
    "llmops.v1.TrainingService",
    "llmops.v1.EvalService",
    "llmops.v1.InferenceService",
]


def _details(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    metadata = cast(Iterable[tuple[str, bytes]], error.trailing_metadata() or ())
    for key, value in metadata:
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no rich status details")


def _metric(url: str, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_health_reports_every_service_serving(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ["", *SERVICES]:
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


def test_reflection_lists_the_four_services(server: ServerThread) -> None:
    with grpc.insecure_channel(server.address) as sync_channel:
        database = ProtoReflectionDescriptorDatabase(sync_channel)
        names = set(database.get_services())
        pool = descriptor_pool.DescriptorPool(database)
        registry = pool.FindServiceByName("llmops.v1.RegistryService")
    assert set(SERVICES) <= names
    assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    assert "UploadDataset" in registry.methods_by_name


async def test_a_service_this_server_does_not_serve_answers_unimplemented(
    data_dir: Path,
) -> None:
    server = GrpcServer(make_settings(data_dir), unimplemented_bindings(), keys=None)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Generate(inference_service_pb2.GenerateRequest(prompt="hi"))
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "InferenceService.Generate is not available" in (caught.value.details() or "")
            stream = stub.StreamGenerate(inference_service_pb2.StreamGenerateRequest())
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stream.read()
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop()


async def test_request_id_is_taken_or_made_and_returned(
    registry: pb_grpc.RegistryServiceAsyncStub,
) -> None:
    call = registry.GetPromptTemplate(
        pb.GetPromptTemplateRequest(template_id="extraction"),
        metadata=(("x-request-id", "req-abc.123"),),
    )
    await call
    assert ("x-request-id", "req-abc.123") in tuple(await call.trailing_metadata())

    call = registry.GetPromptTemplate(pb.GetPromptTemplateRequest(template_id="extraction"))
    await call
    made = dict(await call.trailing_metadata())["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", str(made))

    call = registry.GetPromptTemplate(
        pb.GetPromptTemplateRequest(template_id="nope"),
        metadata=(("x-request-id", "bad id with spaces"),),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    replaced = dict(await call.trailing_metadata())["x-request-id"]
    assert replaced != "bad id with spaces"
    info = error_details_pb2.RequestInfo()
    assert any(d.Unpack(info) for d in _details(caught.value).details)
    assert info.request_id == replaced


async def test_metrics_count_calls_by_method_and_code(
    server: ServerThread, registry: pb_grpc.RegistryServiceAsyncStub
) -> None:
    labels = {"grpc_service": "llmops.v1.RegistryService", "grpc_method": "GetPromptTemplate"}
    url = server.metrics_url
    ok_before = _metric(url, "grpc_server_handled_total", grpc_code="OK", **labels)
    missing_before = _metric(url, "grpc_server_handled_total", grpc_code="NOT_FOUND", **labels)
    started_before = _metric(url, "grpc_server_started_total", **labels)
    await registry.GetPromptTemplate(pb.GetPromptTemplateRequest(template_id="extraction"))
    with pytest.raises(grpc.aio.AioRpcError):
        await registry.GetPromptTemplate(pb.GetPromptTemplateRequest(template_id="nope"))
    assert _metric(url, "grpc_server_handled_total", grpc_code="OK", **labels) == ok_before + 1
    assert (
        _metric(url, "grpc_server_handled_total", grpc_code="NOT_FOUND", **labels)
        == missing_before + 1
    )
    assert _metric(url, "grpc_server_started_total", **labels) == started_before + 2
    assert _metric(url, "grpc_server_handling_seconds_count", **labels) >= 2


async def test_api_keys_and_roles(server: ServerThread, channel: grpc.aio.Channel) -> None:
    platform = server.process.platform
    assert platform is not None
    registry = pb_grpc.RegistryServiceStub(channel)
    read = pb.GetPromptTemplateRequest(template_id="extraction")
    write = pb.CreatePromptTemplateRequest(
        prompt_template=pb.PromptTemplate(template_id="qa", template="Q: {text}\nA:")
    )
    assert (await registry.GetPromptTemplate(read)).template_id == "extraction"  # auth off

    reader = create_key(platform.db, "reader", "dashboards")
    writer = create_key(platform.db, "writer")

    def bearer(secret: str) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {secret}"),)

    for metadata, fragment in [
        ((), "missing API key"),
        (bearer("llmops_wrong"), "invalid or revoked"),
        ((("authorization", "Basic abc"),), "malformed"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await registry.GetPromptTemplate(read, metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert fragment in (caught.value.details() or "")

    assert (await registry.GetPromptTemplate(read, metadata=bearer(reader.secret))).version == 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await registry.CreatePromptTemplate(write, metadata=bearer(reader.secret))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "needs writer" in (caught.value.details() or "")
    created = await registry.CreatePromptTemplate(write, metadata=bearer(writer.secret))
    assert created.version == 1

    health = health_pb2_grpc.HealthStub(channel)
    assert (await health.Check(health_pb2.HealthCheckRequest())).status == (
        health_pb2.HealthCheckResponse.SERVING
    )

    revoke_key(platform.db, reader.key_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await registry.GetPromptTemplate(read, metadata=bearer(reader.secret))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert [k.revoked for k in list_keys(platform.db)] == [True, False]


async def test_alias_moves_record_the_calling_key(
    server: ServerThread, channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    platform = server.process.platform
    assert platform is not None
    admin = create_key(platform.db, "admin")
    metadata = (("authorization", f"Bearer {admin.secret}"),)
    registry = pb_grpc.RegistryServiceStub(channel)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (model_dir / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    model = await registry.CreateModel(
        pb.CreateModelRequest(
            model=pb.Model(name="tiny", kind=pb.MODEL_KIND_BASE, uri=str(model_dir))
        ),
        metadata=metadata,
    )
    await registry.SetModelAlias(
        pb.SetModelAliasRequest(model=model.id, alias="staging"), metadata=metadata
    )
    history = await registry.ListAliasHistory(
        pb.ListAliasHistoryRequest(model_name="tiny", alias="staging"), metadata=metadata
    )
    assert [m.actor for m in history.moves] == [admin.key_id]


def test_create_key_refuses_unknown_role(server: ServerThread) -> None:
    assert server.process.platform is not None
    with pytest.raises(ServiceError) as caught:
        create_key(server.process.platform.db, "root")
    assert "unknown role" in caught.value.message


class _Broken(Exception):
    pass


async def test_a_bug_answers_internal_without_traceback(data_dir: Path) -> None:
    """An exception that is not a domain error leaves as INTERNAL with a request id only."""

    async def explode(request: bytes, context: object) -> bytes:
        raise _Broken("secret detail from deep inside")

    def add(server: grpc.aio.Server) -> None:
        handler = grpc.method_handlers_generic_handler(
            "test.Broken", {"Explode": grpc.unary_unary_rpc_method_handler(explode)}
        )
        server.add_generic_rpc_handlers((handler,))

    settings = make_settings(data_dir)
    server = GrpcServer(settings, [ServiceBinding("test.Broken", add)], keys=None)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            explode_call = channel.unary_unary(
                "/test.Broken/Explode", request_serializer=None, response_deserializer=None
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await explode_call(b"")
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        details = caught.value.details() or ""
        assert "request_id" in details
        assert "secret detail" not in details and "Traceback" not in details
    finally:
        await server.stop(0)


async def _until_not_serving(address: str) -> None:
    """Polls a fresh channel until the server reports NOT_SERVING or refuses new calls."""
    async with grpc.aio.insecure_channel(address) as probe:
        health = health_pb2_grpc.HealthStub(probe)
        for _ in range(500):
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.aio.AioRpcError:
                return
            if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                return
            await asyncio.sleep(0.01)
    raise AssertionError("server kept serving after stop began")


async def test_graceful_shutdown_finishes_an_in_flight_upload(data_dir: Path) -> None:
    """Stopping refuses new calls but lets a streaming upload that already began complete."""
    running = ServerThread(make_settings(data_dir)).start()
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            registry = pb_grpc.RegistryServiceStub(channel)
            upload: Any = registry.UploadDataset()  # type: ignore[call-arg]
            await upload.write(
                pb.UploadDatasetRequest(
                    metadata=pb.DatasetUploadMetadata(name="late", kind=pb.DATASET_KIND_EVAL)
                )
            )
            await upload.write(pb.UploadDatasetRequest(chunk=b'{"prompt": "a", "refer'))
            stopping = running.stop_async()
            await _until_not_serving(running.address)
            await upload.write(pb.UploadDatasetRequest(chunk=b'ence": "b"}\n'))
            await upload.done_writing()
            reply = await upload
            assert reply.dataset.row_count == 1
            stopping.result(30)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await registry.GetDataset(pb.GetDatasetRequest(dataset="late"), timeout=2)
            assert caught.value.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
    finally:
        running.stop()
    again = ServerThread(make_settings(data_dir)).start()
    try:
        async with grpc.aio.insecure_channel(again.address) as channel:
            found = await pb_grpc.RegistryServiceStub(channel).GetDataset(
                pb.GetDatasetRequest(dataset="late")
            )
        assert found.row_count == 1
    finally:
        again.stop()
