"""Parsing failed calls into typed errors, from real `google.rpc.Status` details."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc
import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from llmops import errors
from llmops.errors import (
    FieldViolation,
    InvalidArgument,
    LlmopsError,
    NotFound,
    ResourceInfo,
    from_rpc_error,
)

Pairs = Sequence[tuple[str, str | bytes]]


class FakeCallError(grpc.RpcError, grpc.Call):
    """What a sync stub raises: an `RpcError` that is also a finished `grpc.Call`."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: Pairs = ()) -> None:
        super().__init__(details)
        self._code = code
        self._details = details
        self._trailing = tuple(trailing)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Pairs:  # type: ignore[override]
        return self._trailing

    def initial_metadata(self) -> Pairs:  # type: ignore[override]
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _status(code: int, message: str, *details: Message) -> status_pb2.Status:
    return status_pb2.Status(code=code, message=message, details=[_pack(d) for d in details])


def _bad_request(*violations: tuple[str, str]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
            for f, d in violations
        ]
    )


def _trailing(status: status_pb2.Status, request_id: str | None = None) -> Pairs:
    pairs: list[tuple[str, str | bytes]] = [("grpc-status-details-bin", status.SerializeToString())]
    if request_id:
        pairs.append(("x-request-id", request_id))
    return pairs


def _aio_error(code: grpc.StatusCode, details: str, trailing: Pairs) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code=code,
        initial_metadata=grpc.aio.Metadata(),
        trailing_metadata=grpc.aio.Metadata(*trailing),
        details=details,
        debug_error_string=None,
    )


MESSAGE = "dataset upload refused (2 problems)"
UPLOAD_STATUS = _status(
    code_pb2.INVALID_ARGUMENT,
    MESSAGE,
    _bad_request(("line 2 prompt", "missing"), ("line 5", "not JSON")),
    error_details_pb2.ResourceInfo(
        resource_type="dataset", resource_name="demo-sft", description="the upload"
    ),
    error_details_pb2.ErrorInfo(reason="ROWS_INVALID", domain="llmops.dev", metadata={"n": "2"}),
)


def _make_sync(code: grpc.StatusCode, details: str, trailing: Pairs) -> grpc.RpcError:
    return FakeCallError(code, details, trailing)


@pytest.mark.parametrize("make", [_make_sync, _aio_error], ids=["sync", "aio"])
def test_bad_request_and_resource_info_are_parsed(
    make: Callable[[grpc.StatusCode, str, Pairs], grpc.RpcError],
) -> None:
    err = from_rpc_error(
        make(grpc.StatusCode.INVALID_ARGUMENT, MESSAGE, _trailing(UPLOAD_STATUS, "req-42")),
        request_id="sent-id",
    )
    assert isinstance(err, InvalidArgument)
    assert isinstance(err, LlmopsError)
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert err.message == MESSAGE
    assert err.field_violations == [
        FieldViolation("line 2 prompt", "missing"),
        FieldViolation("line 5", "not JSON"),
    ]
    assert err.resource_info == ResourceInfo("dataset", "demo-sft", "the upload")
    assert err.error_info is not None
    assert err.error_info.reason == "ROWS_INVALID"
    assert err.error_info.domain == "llmops.dev"
    assert err.error_info.metadata == {"n": "2"}
    assert err.reason == "ROWS_INVALID"
    assert err.request_id == "req-42"  # the server's id wins over the one the SDK sent
    assert err.status is not None and err.status.code == code_pb2.INVALID_ARGUMENT
    assert str(err) == (
        "INVALID_ARGUMENT: dataset upload refused (2 problems): "
        "line 2 prompt: missing; line 5: not JSON"
    )


def test_not_found_with_resource_info_and_request_info() -> None:
    status = _status(
        code_pb2.NOT_FOUND,
        "model 'nope' not found",
        error_details_pb2.ResourceInfo(resource_type="model", resource_name="nope"),
        error_details_pb2.RequestInfo(request_id="from-status"),
    )
    err = from_rpc_error(
        _aio_error(grpc.StatusCode.NOT_FOUND, status.message, _trailing(status)),
        request_id="sent",
    )
    assert isinstance(err, NotFound)
    assert err.resource_info == ResourceInfo("model", "nope", "")
    assert err.request_id == "from-status"
    assert str(err) == "NOT_FOUND: model 'nope' not found"


def test_precondition_failure_is_listed() -> None:
    status = _status(
        code_pb2.FAILED_PRECONDITION,
        "dataset in use",
        error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type="IN_USE", subject="ftjob-1", description="training on it"
                )
            ]
        ),
    )
    err = from_rpc_error(
        FakeCallError(grpc.StatusCode.FAILED_PRECONDITION, status.message, _trailing(status))
    )
    assert isinstance(err, errors.FailedPrecondition)
    assert err.precondition_violations == [
        errors.PreconditionViolation("IN_USE", "ftjob-1", "training on it")
    ]
    assert str(err) == "FAILED_PRECONDITION: dataset in use: ftjob-1: training on it"


def test_request_id_falls_back_to_the_sent_one() -> None:
    err = from_rpc_error(FakeCallError(grpc.StatusCode.INTERNAL, "boom"), request_id="sent")
    assert isinstance(err, errors.Internal)
    assert err.request_id == "sent"
    assert err.field_violations == []
    assert err.resource_info is None
    assert err.error_info is None
    assert err.status is None


def test_status_that_disagrees_with_the_call_is_still_parsed() -> None:
    # from_call refuses a Status whose message differs from the call's; the details still count.
    status = _status(code_pb2.INVALID_ARGUMENT, "other text", _bad_request(("name", "empty")))
    err = from_rpc_error(FakeCallError(grpc.StatusCode.INVALID_ARGUMENT, "bad", _trailing(status)))
    assert isinstance(err, InvalidArgument)
    assert err.message == "bad"
    assert err.field_violations == [FieldViolation("name", "empty")]


@pytest.mark.parametrize("make", [_make_sync, _aio_error], ids=["sync", "aio"])
def test_garbled_details_keep_the_plain_error(
    make: Callable[[grpc.StatusCode, str, Pairs], grpc.RpcError],
) -> None:
    trailing: Pairs = [("grpc-status-details-bin", b"\xff\x00garbage")]
    err = from_rpc_error(make(grpc.StatusCode.UNAVAILABLE, "down", trailing))
    assert isinstance(err, errors.Unavailable)
    assert str(err) == "UNAVAILABLE: down"
    assert err.status is None


def test_bare_rpc_error_is_unknown() -> None:
    err = from_rpc_error(grpc.RpcError())
    assert type(err) is LlmopsError
    assert err.code is grpc.StatusCode.UNKNOWN
    assert str(err) == "UNKNOWN"


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, errors.NotFound),
        (grpc.StatusCode.ALREADY_EXISTS, errors.AlreadyExists),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition),
        (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied),
        (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated),
        (grpc.StatusCode.UNAVAILABLE, errors.Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
        (grpc.StatusCode.ABORTED, errors.Aborted),
        (grpc.StatusCode.CANCELLED, errors.Cancelled),
        (grpc.StatusCode.UNIMPLEMENTED, errors.Unimplemented),
        (grpc.StatusCode.INTERNAL, errors.Internal),
        (grpc.StatusCode.DATA_LOSS, errors.LlmopsError),
        (grpc.StatusCode.OUT_OF_RANGE, errors.LlmopsError),
    ],
)
def test_each_code_gets_its_class(code: grpc.StatusCode, cls: type[LlmopsError]) -> None:
    err = from_rpc_error(FakeCallError(code, "x"))
    assert type(err) is cls
    assert err.code is code


def test_long_violation_lists_are_cut_in_the_message_but_kept() -> None:
    status = _status(
        code_pb2.INVALID_ARGUMENT,
        "refused",
        _bad_request(*[(f"line {i}", "bad") for i in range(1, 26)]),
    )
    err = from_rpc_error(
        FakeCallError(grpc.StatusCode.INVALID_ARGUMENT, "refused", _trailing(status))
    )
    assert len(err.field_violations) == 25
    text = str(err)
    assert "line 10: bad" in text
    assert "line 11: bad" not in text
    assert text.endswith("and 15 more")
    assert "\n" not in text


def test_errors_can_be_raised_directly() -> None:
    err = errors.NotFound("no such model", resource_info=ResourceInfo("model", "m"))
    assert err.code is grpc.StatusCode.NOT_FOUND
    assert "NotFound(code=NOT_FOUND" in repr(err)
    with pytest.raises(LlmopsError, match="no such model"):
        raise err
