"""Job handles: a training job or eval run that can refresh, wait for, watch and cancel itself.

`client.training.create(...)` and `client.eval.create(...)` return a handle rather than the bare
message, so the result reads as the SDK example in the docs does:

```python
job = client.training.create(method="sft", base_model="llmops-tiny", dataset="demo-sft")
job = job.wait(timeout=900)
run = client.eval.create(model=job.result_model, dataset="demo-eval", gate=True).wait()
```

What both kinds of job answer the same way (get, cancel, events, watch, wait) is written once
here, for the sync and the async client, so the Training and Eval sub-clients cannot drift apart.
A handle reads every field of its latest message (`job.state`, `job.metrics`, ...); `.message`
is the message itself, for `json_format` and anything else that needs a real protobuf.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar

from google.protobuf.message import Message

from llmops import _requests as req
from llmops._pagination import apaginate, paginate
from llmops.enums import short_name
from llmops.errors import Unavailable
from llmops.v1 import eval_service_pb2, jobs_pb2, registry_service_pb2, training_service_pb2

if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp
    from google.rpc import status_pb2

__all__ = [
    "AsyncEvalRunHandle",
    "AsyncJobHandle",
    "AsyncJobOps",
    "AsyncTrainingJobHandle",
    "EvalRunHandle",
    "JobHandle",
    "JobOps",
    "TrainingJobHandle",
    "wait_for",
]

WATCH_RECONNECTS = 10
"""Consecutive failed reconnects after which `watch()` gives up and raises `Unavailable`."""
_BACKOFF_SECONDS = 0.25
_MAX_BACKOFF_SECONDS = 4.0


class JobMessage(Protocol):
    """What a `TrainingJob` and an `EvalRun` have in common."""

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


def _backoff(failures: int) -> float:
    """Seconds before reconnect number `failures`: doubling from 0.25 s, at most 4 s."""
    return float(min(_BACKOFF_SECONDS * 2 ** (failures - 1), _MAX_BACKOFF_SECONDS))


def _check_reconnects(max_reconnects: int) -> int:
    if max_reconnects < 0:
        raise ValueError(f"max_reconnects must be 0 or more, not {max_reconnects!r}")
    return max_reconnects


def wait_for(
    get: Callable[[str], M], job_id: str, timeout: float | None, poll_interval: float
) -> M:
    """Polls `get(job_id)` until a terminal state; TimeoutError after `timeout` seconds."""
    req.check_poll_interval(poll_interval)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        job = get(job_id)
        if req.is_terminal(job):
            return job
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"{job_id} did not finish within {timeout} s")
        pause = poll_interval
        if deadline is not None:
            pause = min(pause, deadline - time.monotonic())
        time.sleep(max(pause, 0.0))


async def await_for(
    get: Callable[[str], Awaitable[M]], job_id: str, timeout: float | None, poll_interval: float
) -> M:
    """The async twin of `wait_for`."""
    req.check_poll_interval(poll_interval)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        job = await get(job_id)
        if req.is_terminal(job):
            return job
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"{job_id} did not finish within {timeout} s")
        pause = poll_interval
        if deadline is not None:
            pause = min(pause, deadline - time.monotonic())
        await asyncio.sleep(max(pause, 0.0))


class JobOps(Generic[M]):
    """The calls one kind of job answers by id, returning messages (the sync client's)."""

    def __init__(
        self,
        *,
        get: Callable[[str], M],
        cancel: Callable[[str], M],
        events_page: Callable[[str, int, str], EventPage],
        watch: Callable[[str, int, float | None], Iterator[jobs_pb2.JobEvent]],
    ) -> None:
        self.get = get
        self.cancel = cancel
        self._events_page = events_page
        self.watch = watch

    def events(self, job_id: str, page_size: int = 0) -> Iterator[jobs_pb2.JobEvent]:
        """The job's events so far, oldest first, across all pages."""
        req.job_id(job_id)  # checks the id now, not at the first iteration
        return paginate(lambda token: self._events_page(job_id, page_size, token))

    def wait(self, job_id: str, timeout: float | None, poll_interval: float) -> M:
        return wait_for(self.get, job_id, timeout, poll_interval)

    def follow(
        self, job_id: str, after_sequence: int, max_reconnects: int = WATCH_RECONNECTS
    ) -> Iterator[jobs_pb2.JobEvent]:
        """Watches the job to its end, reconnecting after the last event seen on UNAVAILABLE.

        The server replays every event after `after_sequence`, so nothing is lost or repeated
        across a dropped connection; `max_reconnects` failures in a row raise the last one.
        """
        req.job_id(job_id)
        _check_reconnects(max_reconnects)
        return self._follow(job_id, after_sequence, max_reconnects)

    def _follow(self, job_id: str, last: int, max_reconnects: int) -> Iterator[jobs_pb2.JobEvent]:
        failures = 0
        while True:
            stream = self.watch(job_id, last, None)
            try:
                for event in stream:
                    if event.sequence <= last:
                        continue
                    last = event.sequence
                    failures = 0
                    yield event
                return
            except Unavailable:
                failures += 1
                if failures > max_reconnects:
                    raise
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()  # a caller that stops early ends the stream now, not at GC
            time.sleep(_backoff(failures))


class AsyncJobOps(Generic[M]):
    """The async twin of `JobOps`."""

    def __init__(
        self,
        *,
        get: Callable[[str], Awaitable[M]],
        cancel: Callable[[str], Awaitable[M]],
        events_page: Callable[[str, int, str], Awaitable[EventPage]],
        watch: Callable[[str, int, float | None], AsyncIterator[jobs_pb2.JobEvent]],
    ) -> None:
        self.get = get
        self.cancel = cancel
        self._events_page = events_page
        self.watch = watch

    def events(self, job_id: str, page_size: int = 0) -> AsyncIterator[jobs_pb2.JobEvent]:
        """The job's events so far, oldest first, across all pages."""
        req.job_id(job_id)
        return apaginate(lambda token: self._events_page(job_id, page_size, token))

    async def wait(self, job_id: str, timeout: float | None, poll_interval: float) -> M:
        return await await_for(self.get, job_id, timeout, poll_interval)

    def follow(
        self, job_id: str, after_sequence: int, max_reconnects: int = WATCH_RECONNECTS
    ) -> AsyncIterator[jobs_pb2.JobEvent]:
        """Watches the job to its end, reconnecting on UNAVAILABLE; see `JobOps.follow`."""
        req.job_id(job_id)
        _check_reconnects(max_reconnects)
        return self._follow(job_id, after_sequence, max_reconnects)

    async def _follow(
        self, job_id: str, last: int, max_reconnects: int
    ) -> AsyncIterator[jobs_pb2.JobEvent]:
        failures = 0
        while True:
            stream = self.watch(job_id, last, None)
            try:
                async for event in stream:
                    if event.sequence <= last:
                        continue
                    last = event.sequence
                    failures = 0
                    yield event
                return
            except Unavailable:
                failures += 1
                if failures > max_reconnects:
                    raise
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()  # async generators are not closed by reference counting
            await asyncio.sleep(_backoff(failures))


# Handles


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


class JobHandle(_Fields[M]):
    """A training job or eval run of the sync client, reading its latest message."""

    def __init__(self, message: M, ops: JobOps[M]) -> None:
        self._message = message
        self._ops = ops

    def refresh(self) -> Self:
        """Reads the job again from the server; returns the handle itself."""
        self._message = self._ops.get(self._message.id)
        return self

    def wait(self, timeout: float | None = None, *, poll_interval: float = 2.0) -> Self:
        """Polls until the job succeeds, fails or is cancelled; TimeoutError after `timeout` s.

        Returns the handle itself, holding the final message (check `state` and `error`).
        """
        self._message = self._ops.wait(self._message.id, timeout, poll_interval)
        return self

    def watch(
        self, after_sequence: int = 0, *, max_reconnects: int = WATCH_RECONNECTS
    ) -> Iterator[jobs_pb2.JobEvent]:
        """Yields the job's events as they happen, from `after_sequence`, until it ends.

        A dropped connection is reopened after the last event seen, so no event is lost or
        repeated; `Unavailable` is raised after `max_reconnects` failed reconnects in a row.
        The handle's message is not updated: `refresh()` reads the job afterwards.
        """
        return self._ops.follow(self._message.id, after_sequence, max_reconnects)

    def events(self, *, page_size: int = 0) -> Iterator[jobs_pb2.JobEvent]:
        """The job's events so far, oldest first."""
        return self._ops.events(self._message.id, page_size)

    def cancel(self) -> Self:
        """Cancels the job (at once when queued or paused, at its next step when running)."""
        self._message = self._ops.cancel(self._message.id)
        return self


class AsyncJobHandle(_Fields[M]):
    """A training job or eval run of the async client; the methods are coroutines."""

    def __init__(self, message: M, ops: AsyncJobOps[M]) -> None:
        self._message = message
        self._ops = ops

    async def refresh(self) -> Self:
        """Reads the job again from the server; returns the handle itself."""
        self._message = await self._ops.get(self._message.id)
        return self

    async def wait(self, timeout: float | None = None, *, poll_interval: float = 2.0) -> Self:
        """Polls until the job ends; TimeoutError after `timeout` s. Returns the handle."""
        self._message = await self._ops.wait(self._message.id, timeout, poll_interval)
        return self

    def watch(
        self, after_sequence: int = 0, *, max_reconnects: int = WATCH_RECONNECTS
    ) -> AsyncIterator[jobs_pb2.JobEvent]:
        """Yields the job's events as they happen until it ends, reconnecting on UNAVAILABLE."""
        return self._ops.follow(self._message.id, after_sequence, max_reconnects)

    def events(self, *, page_size: int = 0) -> AsyncIterator[jobs_pb2.JobEvent]:
        """The job's events so far, oldest first."""
        return self._ops.events(self._message.id, page_size)

    async def cancel(self) -> Self:
        """Cancels the job; returns the handle with the state the server answered."""
        self._message = await self._ops.cancel(self._message.id)
        return self


class TrainingCalls(Protocol):
    """The training-only calls by id, as the sync `Training` sub-client makes them."""

    def pause(self, id: str) -> training_service_pb2.TrainingJob: ...
    def resume(self, id: str) -> training_service_pb2.TrainingJob: ...
    def checkpoints(self, id: str) -> Sequence[jobs_pb2.Checkpoint]: ...
    def register_checkpoint(
        self, id: str, step: int, output_name: str = ""
    ) -> registry_service_pb2.Model: ...


class AsyncTrainingCalls(Protocol):
    """The training-only calls by id, as `AsyncTraining` makes them."""

    async def pause(self, id: str) -> training_service_pb2.TrainingJob: ...
    async def resume(self, id: str) -> training_service_pb2.TrainingJob: ...
    async def checkpoints(self, id: str) -> Sequence[jobs_pb2.Checkpoint]: ...
    async def register_checkpoint(
        self, id: str, step: int, output_name: str = ""
    ) -> registry_service_pb2.Model: ...


class TrainingJobHandle(JobHandle[training_service_pb2.TrainingJob], _TrainingFields):
    """A fine-tuning job: `wait()`, `watch()`, `cancel()`, `pause()`, `resume()`, checkpoints."""

    def __init__(
        self,
        message: training_service_pb2.TrainingJob,
        ops: JobOps[training_service_pb2.TrainingJob],
        calls: TrainingCalls,
    ) -> None:
        super().__init__(message, ops)
        self._calls = calls

    def pause(self) -> Self:
        """Pauses the job: a running one checkpoints and frees its worker."""
        self._message = self._calls.pause(self._message.id)
        return self

    def resume(self) -> Self:
        """Resumes a paused job from its last checkpoint."""
        self._message = self._calls.resume(self._message.id)
        return self

    def checkpoints(self) -> Sequence[jobs_pb2.Checkpoint]:
        """The job's checkpoints, oldest first."""
        return self._calls.checkpoints(self._message.id)

    def register_checkpoint(self, step: int, output_name: str = "") -> registry_service_pb2.Model:
        """Registers the checkpoint at `step` as a model, with lineage to this job."""
        return self._calls.register_checkpoint(self._message.id, step, output_name)


class EvalRunHandle(JobHandle[eval_service_pb2.EvalRun], _EvalFields):
    """An eval run: `wait()`, `watch()`, `cancel()`; metrics and gate verdicts once done."""


class AsyncTrainingJobHandle(AsyncJobHandle[training_service_pb2.TrainingJob], _TrainingFields):
    """The async twin of `TrainingJobHandle`."""

    def __init__(
        self,
        message: training_service_pb2.TrainingJob,
        ops: AsyncJobOps[training_service_pb2.TrainingJob],
        calls: AsyncTrainingCalls,
    ) -> None:
        super().__init__(message, ops)
        self._calls = calls

    async def pause(self) -> Self:
        """Pauses the job: a running one checkpoints and frees its worker."""
        self._message = await self._calls.pause(self._message.id)
        return self

    async def resume(self) -> Self:
        """Resumes a paused job from its last checkpoint."""
        self._message = await self._calls.resume(self._message.id)
        return self

    async def checkpoints(self) -> Sequence[jobs_pb2.Checkpoint]:
        """The job's checkpoints, oldest first."""
        return await self._calls.checkpoints(self._message.id)

    async def register_checkpoint(
        self, step: int, output_name: str = ""
    ) -> registry_service_pb2.Model:
        """Registers the checkpoint at `step` as a model, with lineage to this job."""
        return await self._calls.register_checkpoint(self._message.id, step, output_name)


class AsyncEvalRunHandle(AsyncJobHandle[eval_service_pb2.EvalRun], _EvalFields):
    """The async twin of `EvalRunHandle`."""
