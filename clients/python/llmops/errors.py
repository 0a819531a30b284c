"""Typed exceptions for failed calls, carrying the parsed `google.rpc` details.

Every `grpc.RpcError` that leaves the SDK is converted here, so callers catch `NotFound`,
`InvalidArgument`, ... instead of inspecting status codes, and see each bad field at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "ErrorInfo",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "LlmopsError",
    "NotFound",
    "PermissionDenied",
    "PreconditionViolation",
    "ResourceExhausted",
    "ResourceInfo",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "from_rpc_error",
]

STATUS_DETAILS_KEY = "grpc-status-details-bin"
REQUEST_ID_KEY = "x-request-id"

# Beyond this many violations the one-line message is cut, so a rejected upload of a huge file
# still prints a readable line; the full list stays on the exception.
_MAX_LISTED_VIOLATIONS = 10


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request (`google.rpc.BadRequest.FieldViolation`)."""

    field: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description}" if self.field else self.description


@dataclass(frozen=True)
class PreconditionViolation:
    """One unmet precondition (`google.rpc.PreconditionFailure.Violation`)."""

    type: str
    subject: str
    description: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.description}" if self.subject else self.description


@dataclass(frozen=True)
class ResourceInfo:
    """The resource an error is about (`google.rpc.ResourceInfo`)."""

    type: str
    name: str
    description: str = ""


@dataclass(frozen=True)
class ErrorInfo:
    """A machine-readable reason for an error (`google.rpc.ErrorInfo`)."""

    reason: str
    domain: str
    metadata: dict[str, str] = field(default_factory=dict)


class LlmopsError(Exception):
    """A failed call: the gRPC code, the server's message and the parsed rich details."""

    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        field_violations: Iterable[FieldViolation] = (),
        precondition_violations: Iterable[PreconditionViolation] = (),
        resource_info: ResourceInfo | None = None,
        error_info: ErrorInfo | None = None,
        request_id: str | None = None,
        status: status_pb2.Status | None = None,
        retry_delay: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code: grpc.StatusCode = code if code is not None else self.grpc_code
        self.message = message
        self.field_violations: list[FieldViolation] = list(field_violations)
        self.precondition_violations: list[PreconditionViolation] = list(precondition_violations)
        self.resource_info = resource_info
        self.error_info = error_info
        self.request_id = request_id
        self.status = status
        """The raw `google.rpc.Status`, for details this class does not parse."""
        self.retry_delay = retry_delay
        """Seconds the server asks to wait before retrying (`google.rpc.RetryInfo`), if it said."""

    @property
    def reason(self) -> str:
        """The `ErrorInfo` reason, or an empty string when the server sent none."""
        return self.error_info.reason if self.error_info else ""

    def __str__(self) -> str:
        line = f"{self.code.name}: {self.message}" if self.message else self.code.name
        problems = [str(v) for v in self.field_violations]
        problems += [str(v) for v in self.precondition_violations]
        if problems:
            shown = problems[:_MAX_LISTED_VIOLATIONS]
            if len(problems) > len(shown):
                shown.append(f"and {len(problems) - len(shown)} more")
            line = f"{line}: {'; '.join(shown)}"
        return " ".join(line.split("\n"))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code.name}, message={self.message!r}, "
            f"field_violations={self.field_violations!r}, request_id={self.request_id!r})"
        )


class InvalidArgument(LlmopsError):
    """The request is malformed; `field_violations` names each bad field."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(LlmopsError):
    """A referenced resource does not exist; `resource_info` says which."""

    grpc_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(LlmopsError):
    """A resource with that identity exists already."""

    grpc_code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(LlmopsError):
    """The system's state does not allow the call (a dependency, a gate, a job state)."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(LlmopsError):
    """The API key's role does not allow the call."""

    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(LlmopsError):
    """No valid API key came with a call that needs one."""

    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class Unavailable(LlmopsError):
    """The server cannot be reached or is overloaded (after the SDK's own retries)."""

    grpc_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(LlmopsError):
    """The call's deadline passed before the server answered."""

    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


class ResourceExhausted(LlmopsError):
    """A size, count or rate limit was hit."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Aborted(LlmopsError):
    """The call lost a race with another one (for example a concurrent alias move)."""

    grpc_code = grpc.StatusCode.ABORTED


class Cancelled(LlmopsError):
    """The call was cancelled, usually by the caller."""

    grpc_code = grpc.StatusCode.CANCELLED


class Unimplemented(LlmopsError):
    """The server does not serve this RPC (yet)."""

    grpc_code = grpc.StatusCode.UNIMPLEMENTED


class Internal(LlmopsError):
    """A server bug; the server log has the details under `request_id`."""

    grpc_code = grpc.StatusCode.INTERNAL


_CLASS_BY_CODE: dict[grpc.StatusCode, type[LlmopsError]] = {
    cls.grpc_code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        PermissionDenied,
        Unauthenticated,
        Unavailable,
        DeadlineExceeded,
        ResourceExhausted,
        Aborted,
        Cancelled,
        Unimplemented,
        Internal,
    )
}


def error_class(code: grpc.StatusCode) -> type[LlmopsError]:
    """The exception class for a status code; `LlmopsError` for codes without their own."""
    return _CLASS_BY_CODE.get(code, LlmopsError)


def from_rpc_error(err: grpc.RpcError, *, request_id: str | None = None) -> LlmopsError:
    """Converts a failed call (sync `grpc.Call` or `grpc.aio.AioRpcError`) to a typed error.

    `request_id` is the id the SDK sent; the server's own (trailing `x-request-id`, or a
    `RequestInfo` detail) wins when there is one.
    """
    code = _call_value(err, "code")
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    details = _call_value(err, "details")
    message = details if isinstance(details, str) else ""
    metadata = _metadata_pairs(_call_value(err, "trailing_metadata"))
    status = _rich_status(err, metadata)
    return build_error(code, message, status, metadata, request_id=request_id)


def build_error(
    code: grpc.StatusCode,
    message: str,
    status: status_pb2.Status | None,
    trailing_metadata: Iterable[tuple[str, str | bytes]] = (),
    *,
    request_id: str | None = None,
) -> LlmopsError:
    """Builds the typed error from a code, a message and an optional rich status.

    The one place both the sync and the async paths end in, so they cannot drift apart.
    """
    violations: list[FieldViolation] = []
    preconditions: list[PreconditionViolation] = []
    resource: ResourceInfo | None = None
    info: ErrorInfo | None = None
    retry_delay: float | None = None
    status_request_id = ""
    if status is not None:
        message = message or status.message
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
            elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
                failure = error_details_pb2.PreconditionFailure()
                detail.Unpack(failure)
                preconditions += [
                    PreconditionViolation(v.type, v.subject, v.description)
                    for v in failure.violations
                ]
            elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
                res = error_details_pb2.ResourceInfo()
                detail.Unpack(res)
                resource = ResourceInfo(res.resource_type, res.resource_name, res.description)
            elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                ei = error_details_pb2.ErrorInfo()
                detail.Unpack(ei)
                info = ErrorInfo(ei.reason, ei.domain, dict(ei.metadata))
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_delay = retry.retry_delay.ToNanoseconds() / 1e9
            elif detail.Is(error_details_pb2.RequestInfo.DESCRIPTOR):
                ri = error_details_pb2.RequestInfo()
                detail.Unpack(ri)
                status_request_id = ri.request_id
    header_request_id = ""
    for key, value in trailing_metadata:
        if key == REQUEST_ID_KEY:
            header_request_id = value.decode() if isinstance(value, bytes) else value
    return error_class(code)(
        message,
        code=code,
        field_violations=violations,
        precondition_violations=preconditions,
        resource_info=resource,
        error_info=info,
        request_id=header_request_id or status_request_id or request_id,
        status=status,
        retry_delay=retry_delay,
    )


def status_from_metadata(
    trailing_metadata: Iterable[tuple[str, str | bytes]],
) -> status_pb2.Status | None:
    """The `google.rpc.Status` in `grpc-status-details-bin`, or None (also when unparsable)."""
    for key, value in trailing_metadata:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except Exception:  # a garbled detail must not hide the error itself
                return None
    return None


def _rich_status(
    err: grpc.RpcError, metadata: list[tuple[str, str | bytes]]
) -> status_pb2.Status | None:
    """The rich status of a failed call.

    Sync errors are `grpc.Call`s, which `rpc_status.from_call` reads (and checks against the
    call's code). `AioRpcError` is no `grpc.Call` and its accessors are plain methods, so
    there the trailing metadata is read directly. Either way a broken detail falls back to
    the plain code and message.
    """
    if isinstance(err, grpc.Call) and not isinstance(err, grpc.aio.AioRpcError):
        try:
            status: Any = rpc_status.from_call(err)
        except Exception:  # inconsistent or garbled details: keep the plain status
            return status_from_metadata(metadata)
        return status if isinstance(status, status_pb2.Status) else None
    return status_from_metadata(metadata)


def _call_value(err: grpc.RpcError, name: str) -> object:
    """Calls `err.<name>()` if it exists; a bare `RpcError` has none of the call accessors."""
    method = getattr(err, name, None)
    if not callable(method):
        return None
    try:
        return method()
    except Exception:  # an accessor of a half-built call must not mask the error
        return None


def _metadata_pairs(metadata: object) -> list[tuple[str, str | bytes]]:
    """Trailing metadata as (key, value) pairs, whatever container gRPC handed over."""
    if metadata is None:
        return []
    pairs: list[tuple[str, str | bytes]] = []
    try:
        items = list(metadata)  # type: ignore[call-overload]
    except TypeError:
        return []
    for item in items:
        key, value = getattr(item, "key", None), getattr(item, "value", None)
        if key is None and isinstance(item, tuple) and len(item) == 2:
            key, value = item
        if isinstance(key, str) and isinstance(value, str | bytes):
            pairs.append((key, value))
    return pairs
