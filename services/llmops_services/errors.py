"""Domain errors and the one place that turns them into gRPC statuses with `google.rpc` details.

Handlers raise these; the call interceptor converts them. Anything else that escapes a handler
is a bug and leaves as INTERNAL without its traceback.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "llmops.dev"
REQUEST_ID_KEY = "x-request-id"
MAX_TEXT_CHARS = 300
"""Longest text an error carries in one place (its message, a field, a resource name): errors
travel in gRPC trailers, which clients refuse past 16 KiB (`grpc-message` percent-encoded,
the details base64), and they often quote what the caller sent, which may be huge."""


def clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """`text`, cut to `limit` characters with a note of how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request, named by its path (`model.uri`, `rows[3].prompt`)."""

    field: str
    description: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "field", clip(self.field))
        object.__setattr__(self, "description", clip(self.description))


@dataclass(frozen=True)
class PreconditionViolation:
    """One unmet precondition: what kind, about which subject, and why."""

    type: str
    subject: str
    description: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "subject", clip(self.subject))
        object.__setattr__(self, "description", clip(self.description))


@dataclass(eq=False)
class ServiceError(Exception):
    """Base of the errors a handler may raise on purpose."""

    message: str
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    reason: str = ""

    def __post_init__(self) -> None:
        self.message = clip(self.message, 2 * MAX_TEXT_CHARS)
        super().__init__(self.message)

    def details(self) -> list[any_pb2.Any]:
        """The `google.rpc` detail messages this error carries."""
        if not self.reason:
            return []
        return [_pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN))]


@dataclass(eq=False)
class InvalidArgument(ServiceError):
    """The request is malformed; `violations` name each bad field."""

    violations: Sequence[FieldViolation] = field(default_factory=list)
    code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT

    def details(self) -> list[any_pb2.Any]:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in self.violations
            ]
        )
        return [*super().details(), _pack(bad)]


@dataclass(eq=False)
class _ResourceError(ServiceError):
    """An error about one resource, named in a `ResourceInfo` detail."""

    resource_type: str = ""
    resource_name: str = ""

    def details(self) -> list[any_pb2.Any]:
        info = error_details_pb2.ResourceInfo(
            resource_type=self.resource_type, resource_name=clip(self.resource_name)
        )
        return [*super().details(), _pack(info)]


@dataclass(eq=False)
class NotFound(_ResourceError):
    """A referenced resource does not exist."""

    code: grpc.StatusCode = grpc.StatusCode.NOT_FOUND


@dataclass(eq=False)
class AlreadyExists(_ResourceError):
    """A resource with that identity exists already."""

    code: grpc.StatusCode = grpc.StatusCode.ALREADY_EXISTS


@dataclass(eq=False)
class FailedPrecondition(ServiceError):
    """The system is not in a state that allows the call (a dependency, a gate, a state)."""

    violations: Sequence[PreconditionViolation] = field(default_factory=list)
    code: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION

    def details(self) -> list[any_pb2.Any]:
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type=v.type, subject=v.subject, description=v.description
                )
                for v in self.violations
            ]
        )
        return [*super().details(), _pack(failure)]


@dataclass(eq=False)
class Unauthenticated(ServiceError):
    """No valid API key came with a call that needs one."""

    code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED


@dataclass(eq=False)
class PermissionDenied(ServiceError):
    """The caller's role does not allow the call."""

    code: grpc.StatusCode = grpc.StatusCode.PERMISSION_DENIED


@dataclass(eq=False)
class Unimplemented(ServiceError):
    """The RPC is part of the contract but not served by this release."""

    code: grpc.StatusCode = grpc.StatusCode.UNIMPLEMENTED


@dataclass(eq=False)
class ResourceExhausted(ServiceError):
    """A rate or capacity limit was hit; `retry_after` seconds (when set) becomes a
    `google.rpc.RetryInfo` hint."""

    retry_after: float | None = None
    code: grpc.StatusCode = grpc.StatusCode.RESOURCE_EXHAUSTED

    def details(self) -> list[any_pb2.Any]:
        return [*super().details(), *_retry_info(self.retry_after)]


@dataclass(eq=False)
class Unavailable(ServiceError):
    """The service cannot answer now (it is stopping, or its database is down); the call may
    be retried, after `retry_after` seconds when set (a `google.rpc.RetryInfo` hint)."""

    retry_after: float | None = None
    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE

    def details(self) -> list[any_pb2.Any]:
        return [*super().details(), *_retry_info(self.retry_after)]


DATABASE_RETRY_SECONDS = 1.0


def infrastructure_error(exc: BaseException) -> ServiceError | None:
    """The domain error for a failure of what the services stand on, or None for a bug: the
    database unreachable, restarting or locked (SQLAlchemy's OperationalError, or a connection
    it found dead) is UNAVAILABLE with a retry hint, since the same call succeeds once it is
    back and the failed transaction was rolled back whole."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    if isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        cause = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else ""
        reason = f" ({cause})" if cause else ""
        return Unavailable(
            f"the database is unavailable{reason}; nothing was changed, retry the call",
            retry_after=DATABASE_RETRY_SECONDS,
        )
    return None


def _retry_info(seconds: float | None) -> list[any_pb2.Any]:
    if seconds is None:
        return []
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(seconds * 1e9))
    return [_pack(error_details_pb2.RetryInfo(retry_delay=delay))]


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


class _Status(
    collections.namedtuple("_Status", ("code", "details", "trailing_metadata")), grpc.Status
):
    """A status with extra trailing metadata (the request id) beside the rich details."""


def _with_request_id(proto: status_pb2.Status, request_id: str) -> grpc.Status:
    if request_id:
        proto.details.append(_pack(error_details_pb2.RequestInfo(request_id=request_id)))
    status = rpc_status.to_status(proto)
    extra = ((REQUEST_ID_KEY, request_id),) if request_id else ()
    return _Status(status.code, status.details, (*status.trailing_metadata, *extra))


def to_status(error: ServiceError, request_id: str = "") -> grpc.Status:
    """The gRPC status, with rich details in `grpc-status-details-bin`, for a domain error."""
    proto = status_pb2.Status(
        code=error.code.value[0], message=error.message, details=error.details()
    )
    return _with_request_id(proto, request_id)


def internal_status(request_id: str) -> grpc.Status:
    """The status for a bug: a fixed message that points at the server log, never a traceback."""
    message = f"internal error; the server log has the details under request_id {request_id}"
    proto = status_pb2.Status(code=code_pb2.INTERNAL, message=message)
    return _with_request_id(proto, request_id)
