"""Helpers for the Registry integration tests: rich error details, uploads and model dirs."""

from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import grpc
import pytest
from google.protobuf import message as protobuf_message
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy.orm import Session

from llmops.v1 import registry_service_pb2 as pb
from llmops_services.db.database import Database
from llmops_services.db.tables import JobRow
from tests.conftest import ServerThread

if TYPE_CHECKING:
    # Only the generated .pyi declares the async stub; at run time the plain stub serves both.
    from llmops.v1.registry_service_pb2_grpc import RegistryServiceAsyncStub

Registry: TypeAlias = "RegistryServiceAsyncStub"

STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass
class RpcErrorDetails:
    """What a refused call told the client: code, message and the `google.rpc` details."""

    code: grpc.StatusCode
    message: str
    status: status_pb2.Status
    bad_request: error_details_pb2.BadRequest | None = None
    resource_info: error_details_pb2.ResourceInfo | None = None
    precondition_failure: error_details_pb2.PreconditionFailure | None = None
    request_info: error_details_pb2.RequestInfo | None = None
    error_info: error_details_pb2.ErrorInfo | None = None
    retry_info: error_details_pb2.RetryInfo | None = None
    unknown: list[str] = field(default_factory=list)

    @property
    def fields(self) -> list[str]:
        """The fields named by the BadRequest violations, in order."""
        assert self.bad_request is not None, f"no BadRequest detail in {self.message!r}"
        return [v.field for v in self.bad_request.field_violations]

    @property
    def violations(self) -> dict[str, str]:
        """BadRequest violations as field -> description."""
        assert self.bad_request is not None, f"no BadRequest detail in {self.message!r}"
        return {v.field: v.description for v in self.bad_request.field_violations}

    @property
    def subjects(self) -> list[str]:
        """The subjects of the PreconditionFailure violations, in order."""
        assert self.precondition_failure is not None, f"no PreconditionFailure in {self.message!r}"
        return [v.subject for v in self.precondition_failure.violations]


def parse_rpc_error(error: grpc.aio.AioRpcError) -> RpcErrorDetails:
    """Decodes `grpc-status-details-bin` from an error's trailing metadata."""
    # The stubs type this as the sync API's tuple; grpc.aio hands back its Metadata mapping.
    metadata = cast(grpc.aio.Metadata, error.trailing_metadata())
    raw = metadata.get(STATUS_DETAILS_KEY)
    assert isinstance(raw, bytes), f"{error.code()} {error.details()!r} carries no status details"
    status = status_pb2.Status.FromString(raw)
    assert status.code == error.code().value[0]
    assert status.message == error.details()
    found = RpcErrorDetails(code=error.code(), message=error.details() or "", status=status)
    kinds: Sequence[tuple[str, type[protobuf_message.Message]]] = (
        ("bad_request", error_details_pb2.BadRequest),
        ("resource_info", error_details_pb2.ResourceInfo),
        ("precondition_failure", error_details_pb2.PreconditionFailure),
        ("request_info", error_details_pb2.RequestInfo),
        ("error_info", error_details_pb2.ErrorInfo),
        ("retry_info", error_details_pb2.RetryInfo),
    )
    for detail in status.details:
        for attribute, message_type in kinds:
            if detail.Is(message_type.DESCRIPTOR):
                unpacked = message_type()
                detail.Unpack(unpacked)
                assert getattr(found, attribute) is None, f"two {attribute} details"
                setattr(found, attribute, unpacked)
                break
        else:
            found.unknown.append(detail.type_url)
    return found


async def expect_error(call: Awaitable[Any], code: grpc.StatusCode) -> RpcErrorDetails:
    """Awaits a call that must fail with `code`; returns its parsed details.

    Every refusal must carry the request id (RequestInfo) and the detail that belongs to its code.
    """
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    assert error.code() == code, f"expected {code}, got {error.code()}: {error.details()}"
    details = parse_rpc_error(error)
    assert details.unknown == []
    assert details.request_info is not None and details.request_info.request_id
    expected_detail = {
        grpc.StatusCode.INVALID_ARGUMENT: details.bad_request,
        grpc.StatusCode.NOT_FOUND: details.resource_info,
        grpc.StatusCode.ALREADY_EXISTS: details.resource_info,
        grpc.StatusCode.FAILED_PRECONDITION: details.precondition_failure,
        grpc.StatusCode.RESOURCE_EXHAUSTED: details.retry_info,
    }
    if code in expected_detail:
        assert expected_detail[code] is not None, f"{code} without its detail: {details}"
    return details


# The server's database, for what the Registry cannot create itself (jobs)


def db_of(server: ServerThread) -> Database:
    """The metadata database of a running test server."""
    assert server.process.platform is not None
    return server.process.platform.db


def add_job(db: Database, job: JobRow) -> None:
    """Inserts a job row, as the Training service will."""

    def work(session: Session) -> None:
        session.add(job)

    db.run_sync(work)


def set_job_state(db: Database, job_id: str, state: str) -> None:
    """Moves a job row to `state`."""

    def work(session: Session) -> None:
        row = session.get(JobRow, job_id)
        assert row is not None
        row.state = state

    db.run_sync(work)


# Datasets


def jsonl(rows: Iterable[dict[str, Any]]) -> bytes:
    """Rows as JSONL bytes, one object a line."""
    return b"".join(json.dumps(row, ensure_ascii=False).encode() + b"\n" for row in rows)


def chunked(data: bytes, size: int) -> list[bytes]:
    """`data` cut into chunks of `size` bytes."""
    return [data[i : i + size] for i in range(0, len(data), size)]


async def upload_requests(
    metadata: pb.DatasetUploadMetadata | None, chunks: Iterable[bytes]
) -> AsyncIterator[pb.UploadDatasetRequest]:
    """An upload stream: the metadata message (when given), then one message per chunk."""
    if metadata is not None:
        yield pb.UploadDatasetRequest(metadata=metadata)
    for chunk in chunks:
        yield pb.UploadDatasetRequest(chunk=chunk)


def upload(
    registry: Registry,
    data: bytes,
    kind: pb.DatasetKind.ValueType,
    name: str = "",
    description: str = "",
    chunk_size: int = 64,
) -> Awaitable[pb.UploadDatasetResponse]:
    """Uploads `data` in chunks of `chunk_size` bytes."""
    metadata = pb.DatasetUploadMetadata(name=name, kind=kind, description=description)
    call: Awaitable[pb.UploadDatasetResponse] = registry.UploadDataset(
        upload_requests(metadata, chunked(data, chunk_size))
    )
    return call


# Model directories


def safetensors_bytes() -> bytes:
    """A real, minimal safetensors file: one F32 tensor `w` of shape [2]."""
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, separators=(",", ":")
    ).encode()
    return struct.pack("<Q", len(header)) + header + struct.pack("<2f", 1.0, 2.0)


def make_base_model_dir(root: Path, name: str = "base-model", tokenizer: str = "tok-a") -> Path:
    """A fake but well-formed local Hugging Face causal LM directory."""
    path = root / name
    path.mkdir(parents=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2}
    (path / "config.json").write_text(json.dumps(config))
    (path / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": tokenizer}))
    (path / "model.safetensors").write_bytes(safetensors_bytes())
    return path


def make_adapter_dir(root: Path, name: str = "adapter") -> Path:
    """A fake but well-formed PEFT LoRA adapter directory."""
    path = root / name
    path.mkdir(parents=True)
    config = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}
    (path / "adapter_config.json").write_text(json.dumps(config))
    (path / "adapter_model.safetensors").write_bytes(safetensors_bytes())
    return path


def base_model(name: str, uri: Path | str, description: str = "") -> pb.CreateModelRequest:
    """A request registering a base model."""
    return pb.CreateModelRequest(
        model=pb.Model(name=name, kind=pb.MODEL_KIND_BASE, uri=str(uri), description=description)
    )
