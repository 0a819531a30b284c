"""Every RPC of the contract, called on a real server with auth on: refused without a key,
refused to every role below the one `runtime/roles.py` gives it, and let through (to answer its
empty request, typically INVALID_ARGUMENT or NOT_FOUND, never INTERNAL) with exactly that role."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor

import llmops
from llmops_services.runtime.auth import ROLES, create_key
from llmops_services.runtime.roles import METHOD_ROLES
from scripts.gen_security_table import contract_methods, full_name
from tests.conftest import ServerThread, make_settings
from tests.integration.helpers import make_base_model_dir

REFUSALS = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
# An empty request must be answered by the real handler's validation or lookup: neither a bug, nor
# a hang, nor a service left unserved.
NEVER = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED,
}
Metadata = tuple[tuple[str, str], ...]


def _empty_requests() -> Iterator[bytes]:
    yield b""  # the request type's default message, serialized


async def _call(
    channel: grpc.aio.Channel, method: MethodDescriptor, metadata: Metadata
) -> tuple[grpc.StatusCode, str]:
    """The status code and message of `method` called with an empty request (one, for a client
    stream), as bytes: no serializers, so any method can be called without its stub."""
    name = full_name(method)
    raw: dict[str, None] = {"request_serializer": None, "response_deserializer": None}
    try:
        if method.client_streaming:
            upload = channel.stream_unary(name, **raw)
            await upload(_empty_requests(), metadata=metadata, timeout=10)
        elif method.server_streaming:
            async for _ in channel.unary_stream(name, **raw)(b"", metadata=metadata, timeout=10):
                pass
        else:
            await channel.unary_unary(name, **raw)(b"", metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


async def test_every_rpc_needs_exactly_its_role(server: ServerThread) -> None:
    platform = server.process.platform
    assert platform is not None
    keys = {role: create_key(platform.db, role, f"{role} of the roles test") for role in ROLES}

    def bearer(role: str) -> Metadata:
        return (("authorization", f"Bearer {keys[role].secret}"),)

    methods = contract_methods()
    assert {full_name(m) for m in methods} == set(METHOD_ROLES)
    wrong: list[str] = []
    async with grpc.aio.insecure_channel(server.address) as channel:
        for method in methods:
            name = full_name(method)
            needed = METHOD_ROLES[name]
            code, details = await _call(channel, method, ())
            if code != grpc.StatusCode.UNAUTHENTICATED:
                wrong.append(f"{name} without a key: {code.name} {details}")
            for role in ROLES[: ROLES.index(needed)]:
                code, details = await _call(channel, method, bearer(role))
                if code != grpc.StatusCode.PERMISSION_DENIED or f"needs {needed}" not in details:
                    wrong.append(f"{name} as {role}: {code.name} {details}")
            code, details = await _call(channel, method, bearer(needed))
            if code in REFUSALS or code in NEVER:
                wrong.append(f"{name} as {needed}: {code.name} {details}")
    assert wrong == [], "\n".join(wrong)


def test_a_protected_alias_is_deleted_by_an_admin_only(data_dir: Path, tmp_path: Path) -> None:
    """Taking `production` needs a passing gate or an admin's force; removing it, and with it
    what `name@production` serves, needs an admin too. Other aliases stay a writer's."""
    server = ServerThread(make_settings(data_dir, protected_aliases=["production"])).start()
    try:
        platform = server.process.platform
        assert platform is not None
        admin = create_key(platform.db, "admin", "admin").secret
        writer = create_key(platform.db, "writer", "writer").secret
        with llmops.Client(server.address, api_key=admin, timeout=30) as as_admin:
            as_admin.models.create("m", str(make_base_model_dir(tmp_path)))
            as_admin.models.set_alias("m", "production", force=True)
            as_admin.models.set_alias("m", "staging")
        with llmops.Client(server.address, api_key=writer, timeout=30) as as_writer:
            with pytest.raises(llmops.PermissionDenied, match="only an admin may delete"):
                as_writer.models.delete_alias("m", "production")
            as_writer.models.delete_alias("m", "staging")
        with llmops.Client(server.address, api_key=admin, timeout=30) as as_admin:
            as_admin.models.delete_alias("m", "production")
            assert [a.alias for a in as_admin.models.aliases("m")] == []
    finally:
        server.stop()


def test_only_an_admin_registers_a_model_whose_code_may_run(data_dir: Path, tmp_path: Path) -> None:
    """trust_remote_code lets a model's own code run in every worker and Inference process that
    loads it, so a writer may register models but not that flag."""
    server = ServerThread(make_settings(data_dir)).start()
    try:
        platform = server.process.platform
        assert platform is not None
        admin = create_key(platform.db, "admin", "admin").secret
        writer = create_key(platform.db, "writer", "writer").secret
        with llmops.Client(server.address, api_key=writer, timeout=30) as as_writer:
            with pytest.raises(llmops.PermissionDenied, match="only an admin may register"):
                as_writer.models.create(
                    "m", str(make_base_model_dir(tmp_path)), trust_remote_code=True
                )
            assert not as_writer.models.create("m", str(tmp_path / "base-model")).trust_remote_code
        with llmops.Client(server.address, api_key=admin, timeout=30) as as_admin:
            assert as_admin.models.create(
                "m", str(tmp_path / "base-model"), trust_remote_code=True
            ).trust_remote_code
            assert [m.version for m in as_admin.models.list(name="m")] == [2, 1]
    finally:
        server.stop()
