"""What the sync and the async job handles share: the job message's fields read through the
handle, and the reconnect policy of `watch()`. The handles themselves are in `_async_jobs` (the
source) and `_sync_jobs` (generated from it by `scripts/unasync.py`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from google.protobuf.message import Message

from llmops import _requests as req
from llmops.enums import short_name
from llmops.v1 import eval_service_pb2, jobs_pb2, training_service_pb2

if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp
    from google.rpc import status_pb2

WATCH_RECONNECTS = 10
"""Consecutive failed reconnects after which `watch()` gives up and raises `Unavailable`."""
_BACKOFF_SECONDS = 0.25
_MAX_BACKOFF_SECONDS = 4.0


class JobMessage(Protocol):
    """What a `TrainingJob`, an `EvalRun` and a `MergeJob` have in common."""

    @property
    def id(self) -> str: ...
    @property
    def state(self) -> jobs_pb2.JobState.ValueType: ...
    @property
    def attempt(self) -> int: ...
    @property
    def progress(self) -> jobs_pb2.JobProgress: ...
    @property
    def error(self) -> status_pb2.Status: ...
    @property
    def create_time(self) -> Timestamp: ...
    @property
    def start_time(self) -> Timestamp: ...
    @property
    def end_time(self) -> Timestamp: ...
    @property
    def idempotency_key(self) -> str: ...


M = TypeVar("M", bound=JobMessage)
EventPage = tuple[Sequence[jobs_pb2.JobEvent], str]


def backoff(failures: int) -> float:
    """Seconds before reconnect number `failures`: doubling from 0.25 s, at most 4 s."""
    return float(min(_BACKOFF_SECONDS * 2 ** (failures - 1), _MAX_BACKOFF_SECONDS))


def check_reconnects(max_reconnects: int) -> int:
    if max_reconnects < 0:
        raise ValueError(f"max_reconnects must be 0 or more, not {max_reconnects!r}")
    return max_reconnects


class _Fields(Generic[M]):
    """The latest message of a job, read through the handle (`job.state`, `job.metrics`)."""

    _message: M

    @property
    def message(self) -> M:
        """The job's latest message, for `json_format` and other protobuf APIs."""
        return self._message

    def __getattr__(self, name: str) -> Any:
        # Only reached for names the handle lacks; private names never go to the message, so
        # a half-built handle (copy, pickle) fails cleanly instead of recursing.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._message, name)

    def __setattr__(self, name: str, value: object) -> None:
        # Assigning `job.output_name = ...` would silently shadow the message and change nothing
        # on the server; refuse it.
        if not name.startswith("_"):
            raise AttributeError(f"{type(self).__name__} is read-only; {name!r} is the server's")
        object.__setattr__(self, name, value)

    def __dir__(self) -> list[str]:
        fields = [f.name for f in self._as_message().DESCRIPTOR.fields]
        return sorted(set(super().__dir__()) | set(fields))

    def __eq__(self, other: object) -> bool:
        """Equal to another handle or a message holding the same message."""
        if isinstance(other, _Fields):
            return bool(self._message == other._message)
        if isinstance(other, Message):
            return bool(self._as_message() == other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like the messages themselves

    def __repr__(self) -> str:
        state = short_name(jobs_pb2.JobState.Name(self._message.state))
        return f"{type(self).__name__}(id={self._message.id!r}, state={state!r})"

    def _as_message(self) -> Message:
        message = self._message
        assert isinstance(message, Message)
        return message

    @property
    def id(self) -> str:
        return self._message.id

    @property
    def state(self) -> jobs_pb2.JobState.ValueType:
        return self._message.state

    @property
    def attempt(self) -> int:
        return self._message.attempt

    @property
    def progress(self) -> jobs_pb2.JobProgress:
        return self._message.progress

    @property
    def error(self) -> status_pb2.Status:
        return self._message.error

    @property
    def create_time(self) -> Timestamp:
        return self._message.create_time

    @property
    def start_time(self) -> Timestamp:
        return self._message.start_time

    @property
    def end_time(self) -> Timestamp:
        return self._message.end_time

    @property
    def idempotency_key(self) -> str:
        return self._message.idempotency_key

    @property
    def done(self) -> bool:
        """True once the job has succeeded, failed or been cancelled (as of the last read)."""
        return req.is_terminal(self._message)


class _TrainingFields(_Fields[training_service_pb2.TrainingJob]):
    @property
    def method(self) -> training_service_pb2.TrainingMethod.ValueType:
        return self._message.method

    @property
    def base_model(self) -> str:
        return self._message.base_model

    @property
    def dataset(self) -> str:
        return self._message.dataset

    @property
    def output_name(self) -> str:
        return self._message.output_name

    @property
    def hyperparameters(self) -> training_service_pb2.Hyperparameters:
        return self._message.hyperparameters

    @property
    def resolved_hyperparameters(self) -> training_service_pb2.Hyperparameters:
        return self._message.resolved_hyperparameters

    @property
    def metrics(self) -> Mapping[str, float]:
        return self._message.metrics

    @property
    def result_model(self) -> str:
        return self._message.result_model


class _EvalFields(_Fields[eval_service_pb2.EvalRun]):
    @property
    def model(self) -> str:
        return self._message.model

    @property
    def dataset(self) -> str:
        return self._message.dataset

    @property
    def gate(self) -> bool:
        return self._message.gate

    @property
    def gate_passed(self) -> bool:
        return self._message.gate_passed

    @property
    def gates(self) -> Sequence[eval_service_pb2.GateResult]:
        return self._message.gates

    @property
    def metrics(self) -> Sequence[eval_service_pb2.TaskMetric]:
        return self._message.metrics

    @property
    def report_uri(self) -> str:
        return self._message.report_uri


class _MergeFields(_Fields[training_service_pb2.MergeJob]):
    @property
    def model(self) -> str:
        return self._message.model

    @property
    def base_model(self) -> str:
        return self._message.base_model

    @property
    def output_name(self) -> str:
        return self._message.output_name

    @property
    def result_model(self) -> str:
        return self._message.result_model
