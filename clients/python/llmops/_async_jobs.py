"""The async job handles, and the source of the sync ones: `scripts/unasync.py` writes
`_sync_jobs.py` from this file (`make unasync`), so the two cannot drift apart.

What every kind of job answers the same way (get, cancel, events, watch, wait) is written once
here, so the Training, Eval and Merge sub-clients cannot drift apart either.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
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
from llmops._pagination import apaginate
from llmops.errors import Unavailable
from llmops.v1 import eval_service_pb2, jobs_pb2, registry_service_pb2, training_service_pb2

__all__ = [
    "AsyncEvalRunHandle",
    "AsyncJobHandle",
    "AsyncJobOps",
    "AsyncMergeJobHandle",
    "AsyncTrainingCalls",
    "AsyncTrainingJobHandle",
    "await_for",
]


async def await_for(
    get: Callable[[str], Awaitable[M]], job_id: str, timeout: float | None, poll_interval: float
) -> M:
    """Polls `get(job_id)` until a terminal state; TimeoutError after `timeout` seconds."""
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


class AsyncJobOps(Generic[M]):
    """The calls one kind of job answers by id, returning messages."""

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
        req.job_id(job_id)  # checks the id now, not at the first iteration
        return apaginate(lambda token: self._events_page(job_id, page_size, token))

    async def wait(self, job_id: str, timeout: float | None, poll_interval: float) -> M:
        return await await_for(self.get, job_id, timeout, poll_interval)

    def follow(
        self, job_id: str, after_sequence: int, max_reconnects: int = WATCH_RECONNECTS
    ) -> AsyncIterator[jobs_pb2.JobEvent]:
        """Watches the job to its end, reconnecting after the last event seen on UNAVAILABLE.

        The server replays every event after `after_sequence`, so nothing is lost or repeated
        across a dropped connection; `max_reconnects` failures in a row raise the last one.
        """
        req.job_id(job_id)
        check_reconnects(max_reconnects)
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
                    await aclose()  # a caller that stops early ends the stream now, not at GC
            await asyncio.sleep(backoff(failures))


class AsyncJobHandle(_Fields[M]):
    """A training job, eval run or merge job of the async client, reading its latest message."""

    def __init__(self, message: M, ops: AsyncJobOps[M]) -> None:
        self._message = message
        self._ops = ops

    async def refresh(self) -> Self:
        """Reads the job again from the server; returns the handle itself."""
        self._message = await self._ops.get(self._message.id)
        return self

    async def wait(self, timeout: float | None = None, *, poll_interval: float = 2.0) -> Self:
        """Polls until the job succeeds, fails or is cancelled; TimeoutError after `timeout` s.

        Returns the handle itself, holding the final message (check `state` and `error`).
        """
        self._message = await self._ops.wait(self._message.id, timeout, poll_interval)
        return self

    def watch(
        self, after_sequence: int = 0, *, max_reconnects: int = WATCH_RECONNECTS
    ) -> AsyncIterator[jobs_pb2.JobEvent]:
        """Yields the job's events as they happen, from `after_sequence`, until it ends.

        A dropped connection is reopened after the last event seen, so no event is lost or
        repeated; `Unavailable` is raised after `max_reconnects` failed reconnects in a row.
        The handle's message is not updated: `refresh()` reads the job afterwards.
        """
        return self._ops.follow(self._message.id, after_sequence, max_reconnects)

    def events(self, *, page_size: int = 0) -> AsyncIterator[jobs_pb2.JobEvent]:
        """The job's events so far, oldest first."""
        return self._ops.events(self._message.id, page_size)

    async def cancel(self) -> Self:
        """Cancels the job (at once when queued or paused, at its next step when running).

        Returns the handle itself, holding the state the server answered.
        """
        self._message = await self._ops.cancel(self._message.id)
        return self


class AsyncTrainingCalls(Protocol):
    """The training-only calls by id, as the `AsyncTraining` sub-client makes them."""

    async def pause(self, id: str) -> training_service_pb2.TrainingJob: ...
    async def resume(self, id: str) -> training_service_pb2.TrainingJob: ...
    async def checkpoints(self, id: str) -> Sequence[jobs_pb2.Checkpoint]: ...
    async def register_checkpoint(
        self, id: str, step: int, output_name: str = ""
    ) -> registry_service_pb2.Model: ...


class AsyncTrainingJobHandle(AsyncJobHandle[training_service_pb2.TrainingJob], _TrainingFields):
    """A fine-tuning job: `wait()`, `watch()`, `cancel()`, `pause()`, `resume()`, checkpoints."""

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
    """An eval run: `wait()`, `watch()`, `cancel()`; metrics and gate verdicts once done."""


class AsyncMergeJobHandle(AsyncJobHandle[training_service_pb2.MergeJob], _MergeFields):
    """A merge job: `wait()`, `watch()`, `cancel()`; `result_model` is the merged model once
    it succeeded."""
