# Generated from _async_jobs.py by scripts/unasync.py (make unasync): do not edit.
"""The sync job handles, generated from `_async_jobs.py`.

What every kind of job answers the same way (get, cancel, events, watch, wait) is written once
here, so the Training, Eval and Merge sub-clients cannot drift apart either.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, Protocol, Self

from llmops import _requests as req
from llmops._job_base import (
    WATCH_RECONNECTS,
    EventPage,
    M,
    _EvalFields,
    _Fields,
    _MergeFields,
    _TrainingFields,
    backoff,
    check_reconnects,
)
from llmops._pagination import paginate
from llmops.errors import Unavailable
from llmops.v1 import eval_service_pb2, jobs_pb2, registry_service_pb2, training_service_pb2

__all__ = [
    "EvalRunHandle",
    "JobHandle",
    "JobOps",
    "MergeJobHandle",
    "TrainingCalls",
    "TrainingJobHandle",
    "wait_for",
]


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


class JobOps(Generic[M]):
    """The calls one kind of job answers by id, returning messages."""

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
        check_reconnects(max_reconnects)
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
            time.sleep(backoff(failures))


class JobHandle(_Fields[M]):
    """A training job, eval run or merge job of the sync client, reading its latest message."""

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
        """Cancels the job (at once when queued or paused, at its next step when running).

        Returns the handle itself, holding the state the server answered.
        """
        self._message = self._ops.cancel(self._message.id)
        return self


class TrainingCalls(Protocol):
    """The training-only calls by id, as the `Training` sub-client makes them."""

    def pause(self, id: str) -> training_service_pb2.TrainingJob: ...
    def resume(self, id: str) -> training_service_pb2.TrainingJob: ...
    def checkpoints(self, id: str) -> Sequence[jobs_pb2.Checkpoint]: ...
    def register_checkpoint(
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


class MergeJobHandle(JobHandle[training_service_pb2.MergeJob], _MergeFields):
    """A merge job: `wait()`, `watch()`, `cancel()`; `result_model` is the merged model once
    it succeeded."""
