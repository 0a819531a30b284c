"""Services of the contract that this release does not serve yet: every RPC answers UNIMPLEMENTED
with a message naming it, instead of the generated stubs' NotImplementedError."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from llmops.v1 import (
    eval_service_pb2,
    eval_service_pb2_grpc,
    inference_service_pb2,
    inference_service_pb2_grpc,
    training_service_pb2,
    training_service_pb2_grpc,
)
from llmops_services.errors import Unimplemented
from llmops_services.runtime.context import Context
from llmops_services.runtime.server import ServiceBinding


def _refusal(method: MethodDescriptor) -> Any:
    message = f"{method.containing_service.name}.{method.name} is not available on this server yet"

    if method.server_streaming:

        async def stream(self: object, request: object, context: Context) -> AsyncIterator[Any]:
            raise Unimplemented(message)
            yield  # pragma: no cover - makes this an async generator

        return stream

    async def unary(self: object, request: object, context: Context) -> Any:
        raise Unimplemented(message)

    return unary


def _servicer(base: type, service: ServiceDescriptor) -> object:
    methods = {m.name: _refusal(m) for m in service.methods}
    return type(f"Unimplemented{service.name}", (base,), methods)()


def _adder(
    add: Callable[[object, grpc.aio.Server], None], servicer: object
) -> Callable[[grpc.aio.Server], None]:
    return lambda server: add(servicer, server)


def unimplemented_bindings() -> list[ServiceBinding]:
    """Training, Eval and Inference, answering UNIMPLEMENTED on every RPC."""
    specs = [
        (training_service_pb2, training_service_pb2_grpc, "TrainingService"),
        (eval_service_pb2, eval_service_pb2_grpc, "EvalService"),
        (inference_service_pb2, inference_service_pb2_grpc, "InferenceService"),
    ]
    bindings = []
    for module, grpc_module, name in specs:
        service = module.DESCRIPTOR.services_by_name[name]
        servicer = _servicer(getattr(grpc_module, f"{name}Servicer"), service)
        add = getattr(grpc_module, f"add_{name}Servicer_to_server")
        bindings.append(ServiceBinding(service.full_name, _adder(add, servicer)))
    return bindings
