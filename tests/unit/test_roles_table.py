"""The roles table (`runtime/roles.py`): one row for exactly every RPC of the contract, enforced
when handlers register, and shown in docs/security.md as generated from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from llmops_services.runtime.auth import ROLES, required_role
from llmops_services.runtime.calls import CallWrapper, WrappingRegistrar, resolve_role
from llmops_services.runtime.logs import AccessLog
from llmops_services.runtime.roles import METHOD_ROLES, MissingRoleError
from llmops_services.runtime.server import GrpcServer, ServiceBinding
from scripts.gen_security_table import DOC, contract_methods, full_name, render, rest_routes
from tests.conftest import make_settings

SERVICES = {
    "llmops.v1.EvalService",
    "llmops.v1.InferenceService",
    "llmops.v1.RegistryService",
    "llmops.v1.TrainingService",
}


def test_every_rpc_of_the_contract_has_exactly_one_row() -> None:
    methods = [full_name(m) for m in contract_methods()]
    assert {m.containing_service.full_name for m in contract_methods()} == SERVICES
    missing = sorted(set(methods) - set(METHOD_ROLES))
    assert missing == [], f"RPCs without a role in runtime/roles.py: {missing}"
    extra = sorted(set(METHOD_ROLES) - set(methods))
    assert extra == [], f"rows of runtime/roles.py for RPCs that do not exist: {extra}"


def test_rows_are_sorted_and_name_known_roles() -> None:
    assert list(METHOD_ROLES) == sorted(METHOD_ROLES)
    assert set(METHOD_ROLES.values()) <= set(ROLES)


def test_the_policy_by_kind_of_rpc() -> None:
    """Spot checks of the policy: reads are `reader`, changes `writer`, deletions that lose
    lineage `admin`, and every RPC with a REST route that changes something is not `reader`."""
    registry = "/llmops.v1.RegistryService/"
    assert METHOD_ROLES[registry + "DeleteModel"] == "admin"
    assert METHOD_ROLES[registry + "DeleteDataset"] == "admin"
    assert METHOD_ROLES[registry + "DeleteModelAlias"] == "writer"
    assert METHOD_ROLES[registry + "ValidatePromptTemplate"] == "reader"
    assert METHOD_ROLES["/llmops.v1.InferenceService/Generate"] == "reader"
    assert METHOD_ROLES["/llmops.v1.InferenceService/ListServedModels"] == "reader"
    for method in contract_methods():
        routes = rest_routes(method)
        assert routes, f"{full_name(method)} has no REST route"
        if any(r.startswith("DELETE ") for r in routes):
            assert METHOD_ROLES[full_name(method)] != "reader"
        if all(r.startswith("GET ") for r in routes):
            assert METHOD_ROLES[full_name(method)] == "reader", full_name(method)


def test_docs_security_table_is_fresh() -> None:
    current = DOC.read_text()
    assert render(current) == current, (
        "docs/security.md is stale: run `python scripts/gen_security_table.py`"
    )


def test_required_role_reads_the_table() -> None:
    assert required_role("/llmops.v1.RegistryService/GetModel") == "reader"
    assert required_role("/llmops.v1.TrainingService/CreateTrainingJob") == "writer"
    assert required_role("/llmops.v1.RegistryService/DeleteModel") == "admin"
    # A method outside the contract (only tests register such) needs the most.
    assert required_role("/test.Broken/GetThing") == "admin"
    with pytest.raises(MissingRoleError, match=r"GetSecrets .*roles\.py"):
        required_role("/llmops.v1.RegistryService/GetSecrets")


def test_health_and_reflection_stay_open() -> None:
    assert resolve_role("/grpc.health.v1.Health/Check") == ""
    assert resolve_role("/grpc.health.v1.Health/Watch") == ""
    assert resolve_role("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") == ""


class _FakeServer:
    """Records what reaches the real server."""

    def __init__(self) -> None:
        self.registered: dict[str, Any] = {}
        self.generic: list[Any] = []

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.registered[service] = handlers

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)


async def _answer(request: bytes, context: object) -> bytes:
    return request


def _registrar() -> tuple[WrappingRegistrar, _FakeServer]:
    fake = _FakeServer()
    registrar = WrappingRegistrar(fake, CallWrapper(None, AccessLog()))  # type: ignore[arg-type]
    return registrar, fake


def test_registering_an_rpc_without_a_role_fails_naming_it_and_the_table() -> None:
    registrar, fake = _registrar()
    handlers = {"PurgeEverything": grpc.unary_unary_rpc_method_handler(_answer)}
    with pytest.raises(MissingRoleError) as caught:
        registrar.add_registered_method_handlers("llmops.v1.RegistryService", handlers)
    message = str(caught.value)
    assert "/llmops.v1.RegistryService/PurgeEverything" in message
    assert "services/llmops_services/runtime/roles.py" in message
    assert fake.registered == {}

    generic = grpc.method_handlers_generic_handler("llmops.v1.RegistryService", handlers)
    with pytest.raises(MissingRoleError, match="PurgeEverything"):
        registrar.add_generic_rpc_handlers((generic,))
    assert fake.generic == []


def test_registering_rpcs_of_the_table_wraps_them() -> None:
    registrar, fake = _registrar()
    handlers = {"GetModel": grpc.unary_unary_rpc_method_handler(_answer)}
    registrar.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("llmops.v1.RegistryService", handlers),)
    )
    registrar.add_registered_method_handlers("llmops.v1.RegistryService", handlers)
    assert list(fake.registered["llmops.v1.RegistryService"]) == ["GetModel"]
    assert len(fake.generic) == 1


async def test_a_server_with_an_rpc_without_a_role_does_not_start(tmp_path: Path) -> None:
    def add(server: grpc.aio.Server) -> None:
        server.add_registered_method_handlers(  # type: ignore[attr-defined]
            "llmops.v1.TrainingService",
            {"DeleteTrainingJob": grpc.unary_unary_rpc_method_handler(_answer)},
        )

    binding = ServiceBinding("llmops.v1.TrainingService", add)
    with pytest.raises(MissingRoleError, match="DeleteTrainingJob"):
        GrpcServer(make_settings(tmp_path / "data"), [binding], keys=None)
