"""Runs one attempt of a training job: claim it, resolve its inputs through the Registry,
supervise the child process, write its events and checkpoints (fenced by attempt), and register
the result through the Registry. The job's rows are written only while this attempt holds the
job's lease.

How an attempt ends decides what happens next: an error caused by the job's input (a dataset or
model the engine refuses, an input deleted since the job was created) fails the job at once; an
infrastructure failure (the training process dies, an unexpected exception, the Registry
unreachable) is retried as a new attempt, from the last checkpoint, up to
`LLMOPS_JOB_MAX_ATTEMPTS`."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import queue as queue_module
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from sqlalchemy.orm import Session

import llmops
from llmops_services.context import Platform
from llmops_services.db.tables import JobRow
from llmops_services.jobs import leases, states
from llmops_services.jobs.events import Event, append_event
from llmops_services.jobs.store import checkpoints_of, record_checkpoint
from llmops_services.runtime.context import job_id_var
from llmops_workers import telemetry
from llmops_workers.child import STOP_CANCEL, STOP_HANDBACK, STOP_NONE, STOP_PAUSE, child_main
from llmops_workers.engines.spec import TrainingResult, TrainingSpec
from llmops_workers.evaluation.spec import EvalSpec
from llmops_workers.merge_job import MergeSpec
from llmops_workers.messages import (
    Checkpoint,
    ChildMessage,
    Error,
    ErrorCause,
    HandedBack,
    LeaseLost,
    Metrics,
    Outcome,
    Result,
    Started,
)
from llmops_workers.registry_link import Inputs, RegistryLink

# Errors that the job's input causes: no new attempt would end differently.
INPUT_ERRORS = (llmops.NotFound, llmops.InvalidArgument, llmops.FailedPrecondition)
# What a FAILED job's error code is, by how its last attempt ended.
ERROR_CODES: dict[ErrorCause, grpc.StatusCode] = {
    "input": grpc.StatusCode.INVALID_ARGUMENT,
    "precondition": grpc.StatusCode.FAILED_PRECONDITION,
    "crash": grpc.StatusCode.INTERNAL,
    "internal": grpc.StatusCode.INTERNAL,
}

log = logging.getLogger("llmops.worker")
T = TypeVar("T")


@dataclass
class Attempt:
    """One attempt at a job, as the worker runs it."""

    job_id: str
    attempt: int
    owner: str
    method: str = ""


def build_spec(
    platform: Platform, job: JobRow, inputs: Inputs, resume: Path | None, threads: int
) -> TrainingSpec:
    """The engine's input: the resolved paths, this attempt's output directory, the values."""
    output = platform.store.workspace(f"jobs/{job.id}/attempt-{job.attempt}")
    return TrainingSpec(
        method=job.method,  # type: ignore[arg-type]
        base_model_dir=inputs.base_model_dir,
        output_dir=output,
        train_file=inputs.train_file,
        validation_file=inputs.validation_file,
        template=inputs.template,
        hyperparameters=dict(job.resolved_hyperparameters),
        teacher_model_dir=inputs.teacher_model_dir,
        teacher_adapter_dir=inputs.teacher_adapter_dir,
        parent_adapter_dir=inputs.parent_adapter_dir,
        resume_from=resume,
        threads=threads,
        trust_remote_code=inputs.trust_remote_code,
        teacher_trust_remote_code=inputs.teacher_trust_remote_code,
        run_name=job.id,
        gpus=job.gpu_count,
        strategy=job.distributed_strategy,  # type: ignore[arg-type]
        processes_on_cpu=platform.settings.worker_distributed_on_cpu,
    )


def last_checkpoint(platform: Platform, job_id: str) -> Path | None:
    """Where the newest complete checkpoint of the job is, if any (downloaded from a remote
    store: the attempt that wrote it may have run on another machine)."""
    done = platform.db.run_sync(lambda s: checkpoints_of(s, job_id))
    return platform.store.local_path(done[-1].uri) if done else None


def _beat_every(platform: Platform) -> float:
    # at least every second: the heartbeat is also how a cancel reaches the child, and a user
    # who cancels should not wait a quarter of the lease for it (one row update per second)
    return min(max(platform.settings.job_lease_seconds / 4, 0.2), 1.0)


async def holding_lease(platform: Platform, attempt: Attempt, work: Awaitable[T]) -> T:
    """Awaits `work` (an upload, a download) while renewing the attempt's lease, so that a
    slow transfer of a large model does not let the job be taken over as if its worker died.
    A lease lost meanwhile shows in the fenced writes that follow."""
    task = asyncio.ensure_future(work)
    supervisor = Supervisor(platform, attempt)
    while True:
        done, _ = await asyncio.wait({task}, timeout=_beat_every(platform))
        if done:
            return task.result()
        supervisor.heartbeat()


async def publish(platform: Platform, attempt: Attempt, produced: Path) -> str:
    """Uploads what an attempt produced in its workspace to the store (nothing to do on a local
    store) and returns its URI: before the URI is registered anywhere, so that every other
    machine can read what it names."""
    key = platform.store.key_of_local(produced)
    return await holding_lease(platform, attempt, asyncio.to_thread(platform.store.publish, key))


class Supervisor:
    """Writes what the child reports, renews the lease, and passes on cancels."""

    def __init__(self, platform: Platform, attempt: Attempt) -> None:
        self.platform = platform
        self.attempt = attempt
        self.settings = platform.settings
        self._step = 0
        self._tokens = 0.0
        self._publishing: asyncio.Future[None] | None = None

    def _fenced(self, work: Any) -> Any:
        """Runs `work(session, job)` only while this attempt owns the job; None otherwise."""

        def guarded(session: Session) -> Any:
            job = leases.fenced_job(
                session, self.attempt.job_id, self.attempt.attempt, self.attempt.owner
            )
            return None if job is None else work(session, job)

        return self.platform.db.run_sync(guarded)

    def on_message(self, message: Started | Metrics | Checkpoint) -> None:
        """Records one report of the child."""
        if isinstance(message, Started):
            total = message.total_steps
            self._fenced(lambda s, job: setattr(job, "total_steps", total))
        elif isinstance(message, Metrics):
            step, metrics = message.step, message.metrics

            def log_step(session: Session, job: JobRow) -> None:
                job.step, job.total_steps = step, message.total_steps
                job.metrics = {**job.metrics, **metrics}
                append_event(session, job, Event("METRICS", step=step, metrics=metrics))

            self._fenced(log_step)
            self._count(step, metrics)
        else:
            previous = self._publishing
            self._publishing = asyncio.ensure_future(self._checkpoint(message, previous))

    async def _checkpoint(self, message: Checkpoint, previous: Awaitable[None] | None) -> None:
        """Uploads a checkpoint, then records it (in step order, while the loop goes on
        renewing the lease): a recorded checkpoint must be there for an attempt resuming the job
        on another machine. One that could not be uploaded is not recorded; resume takes the one
        before."""
        if previous is not None:
            await previous
        store = self.platform.store
        try:
            key = store.key_of_local(Path(message.path))
            uri = await asyncio.to_thread(store.publish, key)
        except Exception:
            log.exception("could not upload the checkpoint of step %d", message.step)
            return
        self._fenced(lambda s, job: record_checkpoint(s, job, message.step, uri, message.metrics))

    async def published(self) -> None:
        """Waits for the checkpoints reported so far to be uploaded and recorded."""
        if self._publishing is not None:
            await holding_lease(self.platform, self.attempt, self._publishing)

    def _count(self, step: int, metrics: dict[str, float]) -> None:
        """Feeds the worker's Prometheus metrics from a training log."""
        method = self.attempt.method
        if step > self._step:
            telemetry.STEPS.labels(method).inc(step - self._step)
            self._step = step
        seen = metrics.get("num_input_tokens_seen", 0.0)
        if seen > self._tokens:
            telemetry.TOKENS.labels(method).inc(seen - self._tokens)
            self._tokens = seen
        if "tokens_per_second" in metrics:
            telemetry.TOKENS_PER_SECOND.labels(method).set(metrics["tokens_per_second"])

    def heartbeat(self) -> int | None:
        """Renews the lease; returns what the child should do (STOP_NONE, STOP_CANCEL or
        STOP_PAUSE), None if the lease is lost."""

        def renew(session: Session) -> int | None:
            job = leases.heartbeat(
                session,
                self.attempt.job_id,
                self.attempt.attempt,
                self.attempt.owner,
                self.settings.job_lease_seconds,
            )
            if job is None:
                return None
            if job.cancel_requested:
                return STOP_CANCEL
            return STOP_PAUSE if job.pause_requested else STOP_NONE

        result: int | None = self.platform.db.run_sync(renew)
        return result


PRELOAD_MODULE = "llmops_workers.preload"


def job_process_context() -> multiprocessing.context.ForkServerContext:
    """Where each job's process comes from: forked from a fork server that has imported the ML
    stack once (llmops_workers.preload), rather than started and importing it again per job."""
    context = multiprocessing.get_context("forkserver")
    assert isinstance(context, multiprocessing.context.ForkServerContext)
    context.set_forkserver_preload([PRELOAD_MODULE])
    return context


_stopping = threading.Event()


def stop_taking_jobs() -> None:
    """Called on SIGTERM: the running attempt hands its job back (`HandedBack`) rather than
    being cut off when the worker exits."""
    _stopping.set()


def hand_back(platform: Platform, attempt: Attempt, steps: int) -> bool:
    """Queues the job again for another worker after its child stopped for the worker's
    shutdown; a hand-back uses none of the job's retries. False when the attempt was fenced."""

    def work(session: Session) -> bool:
        job = leases.fenced_job(session, attempt.job_id, attempt.attempt, attempt.owner)
        if job is None:
            return False
        job.step = max(job.step, steps)
        job.resumes += 1
        at = f" at step {steps}" if steps else ""
        leases.requeue(session, job, f"worker {attempt.owner} stopping: handed back{at}")
        return True

    handed: bool = platform.db.run_sync(work)
    return handed


def _ended(exitcode: int | None) -> str:
    """How a job process ended, for the job's events: `was killed by SIGKILL (-9)` says more
    than an exit code (SIGKILL: out of memory or killed; SIGXFSZ: a file grew past its limit)."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name} ({exitcode})"
        except ValueError:
            pass
    return f"exited with {exitcode}"


def _reap(child: Any) -> None:
    child.join(30)
    if child.is_alive():
        child.kill()
        child.join()


async def supervise(
    platform: Platform,
    attempt: Attempt,
    spec: TrainingSpec | EvalSpec | MergeSpec,
    exiting: list[Any],
) -> Outcome:
    """Runs the child to its end: its Result or Error, or LeaseLost; or HandedBack when the
    worker began stopping meanwhile and the child stopped for it.

    A child that sent its result is left to exit on its own and put in `exiting`: the shutdown
    of a process with torch loaded takes a second or two, which the job need not wait for.
    """
    context = job_process_context()
    reports: Any = context.Queue()
    control: Any = context.Value("i", STOP_NONE)
    child = context.Process(target=child_main, args=(spec, reports, control), daemon=True)
    # started from a thread, with the heartbeat going meanwhile: the first job of a new worker
    # waits for its fork server to finish importing the ML stack (seconds), longer than a lease
    starting = asyncio.ensure_future(asyncio.to_thread(child.start))
    supervisor = Supervisor(platform, attempt)
    beat_every = _beat_every(platform)
    next_beat = 0.0
    outcome: Outcome | None = None
    handing_back = False
    try:
        while outcome is None:
            if _stopping.is_set() and control.value == STOP_NONE:
                log.info("worker stopping: handing %s back", attempt.job_id)
                control.value = STOP_HANDBACK
                handing_back = True
            now = time.monotonic()
            if now >= next_beat:
                stop = supervisor.heartbeat()
                if stop is None:
                    log.warning("lost the lease of %s; stopping", attempt.job_id)
                    control.value = STOP_CANCEL
                    outcome = LeaseLost()
                    break
                if stop != STOP_NONE and control.value != STOP_CANCEL:
                    control.value = stop
                next_beat = now + beat_every
            if not starting.done():
                await asyncio.wait({starting}, timeout=0.2)
                continue
            if starting.exception() is not None:
                outcome = Error(
                    "crash", f"could not start the job's process: {starting.exception()}"
                )
                break
            try:
                message: ChildMessage = await asyncio.to_thread(reports.get, True, 0.2)
            except queue_module.Empty:
                if not child.is_alive():
                    outcome = Error("crash", f"the job's process {_ended(child.exitcode)}")
                continue
            if isinstance(message, Result | Error):
                outcome = message
            else:
                supervisor.on_message(message)
    finally:
        await supervisor.published()
        await asyncio.wait({starting})
        if starting.exception() is None:  # otherwise there is no process to stop
            if isinstance(outcome, Result):
                exiting.append(child)
            else:
                await asyncio.to_thread(_reap, child)
    if handing_back and isinstance(outcome, Result) and outcome.result.status != "completed":
        steps = outcome.result.steps if isinstance(outcome.result, TrainingResult) else 0
        return HandedBack() if hand_back(platform, attempt, steps) else LeaseLost()
    return outcome


def finish(
    platform: Platform,
    attempt: Attempt,
    outcome: Result | Error,
    model: llmops.v1.registry_service_pb2.Model | None = None,
) -> str:
    """Ends the attempt in the job's row: succeed (with the model registered), fail, cancel,
    pause, or queue the next attempt."""
    settings = platform.settings

    def work(session: Session) -> str:
        job = leases.fenced_job(session, attempt.job_id, attempt.attempt, attempt.owner)
        if job is None:
            return "fenced"
        if isinstance(outcome, Result):
            result = outcome.result
            if not isinstance(result, TrainingResult):
                raise TypeError(f"a training attempt ended with {type(result).__name__}")
            if result.status == "cancelled":
                states.move(session, job, "CANCELLED", f"stopped at step {result.steps}")
                observe_end(job)
                return "cancelled"
            if result.status == "paused":
                job.lease_owner, job.lease_expires = "", None
                job.pause_requested = False
                job.step = max(job.step, result.steps)
                held = result.last_checkpoint
                note = f"; resume continues from {held.name}" if held is not None else ""
                states.move(session, job, "PAUSED", f"paused at step {result.steps}{note}")
                return "paused"
            if model is None:
                raise ValueError("a completed attempt ends with its registered model")
            job.result_model_id = model.id
            job.metrics = {**job.metrics, **result.metrics}
            job.step = max(job.step, result.steps)
            states.move(session, job, "SUCCEEDED", f"registered {model.name} v{model.version}")
            observe_end(job)
            return "succeeded"
        return end_with_error(session, job, outcome, settings.job_max_attempts)

    state: str = platform.db.run_sync(work)
    return state


def end_with_error(session: Session, job: JobRow, outcome: Error, attempts: int) -> str:
    """Fails the job, or queues its next attempt when the error was infrastructure's."""
    text = outcome.text
    first_line = text.splitlines()[0] if text else f"{job.kind} failed"
    if outcome.cause in ("crash", "internal") and leases.retries_used(job) < attempts:
        leases.requeue(session, job, f"attempt {job.attempt} failed ({first_line})")
        return "retry"
    states.fail(session, job, ERROR_CODES[outcome.cause], first_line)
    observe_end(job)
    return "failed"


def observe_end(job: JobRow) -> None:
    """Records how long a job that just ended ran, in the worker's job duration histogram."""
    if job.start_time is not None and job.end_time is not None:
        # SQLite gives back naive UTC times, the row just written holds aware ones
        end, start = job.end_time.replace(tzinfo=None), job.start_time.replace(tzinfo=None)
        seconds = (end - start).total_seconds()
        telemetry.JOB_SECONDS.labels(job.method, job.state).observe(seconds)


def _note(session: Session, attempt: Attempt, message: str) -> None:
    job = leases.fenced_job(session, attempt.job_id, attempt.attempt, attempt.owner)
    if job is not None:
        append_event(session, job, Event("MESSAGE", message=message))


AttemptBody = Callable[[Platform, RegistryLink, "Attempt", JobRow, int, list[Any]], Awaitable[str]]
"""What one kind of job does once claimed: resolve, run the child, end the attempt."""


async def run_attempt(
    platform: Platform,
    registry: RegistryLink,
    job_id: str,
    attempt: int,
    owner: str,
    threads: int,
    body: AttemptBody,
) -> str:
    """The whole attempt of a job, `body` doing what its kind does; returns how it ended."""
    job_id_var.set(job_id)
    claimed: JobRow | None = platform.db.run_sync(
        lambda s: leases.claim(s, job_id, attempt, owner, platform.settings.job_lease_seconds)
    )
    if claimed is None:
        return "skipped"
    label = claimed.method or claimed.kind
    this = Attempt(job_id, attempt, owner, label)
    began = time.monotonic()
    telemetry.BUSY.set(1)
    exiting: list[Any] = []
    with telemetry.attempt_span(claimed.traceparent, claimed, attempt):
        try:
            ended = await body(platform, registry, this, claimed, threads, exiting)
        finally:
            for child in exiting:  # the worker takes no new job before its child is gone
                await asyncio.to_thread(_reap, child)
            telemetry.BUSY.set(0)
            telemetry.TOKENS_PER_SECOND.labels(label).set(0)
    telemetry.ATTEMPT_SECONDS.labels(label, ended).observe(time.monotonic() - began)
    return ended


async def training_attempt(
    platform: Platform,
    registry: RegistryLink,
    this: Attempt,
    job: JobRow,
    threads: int,
    exiting: list[Any],
) -> str:
    """The body of a training attempt (see `run_attempt`): resolve, train, register."""
    try:
        with telemetry.phase("resolve_inputs"):
            inputs = await registry.inputs(job)
    except INPUT_ERRORS as error:
        return finish(platform, this, Error("input", f"an input of the job: {error}"))
    except Exception as error:
        log.exception("could not resolve the inputs of %s", job.id)
        return finish(platform, this, Error("internal", f"resolving inputs: {error}"))
    resume = await holding_lease(
        platform, this, asyncio.to_thread(last_checkpoint, platform, job.id)
    )
    spec = build_spec(platform, job, inputs, resume, threads)
    if resume is not None:
        message = f"attempt {this.attempt} resumes from {resume.name}"
        log.info(message)
        platform.db.run_sync(lambda s: _note(s, this, message))
    with telemetry.phase("train"):
        outcome = await supervise(platform, this, spec, exiting)
    if isinstance(outcome, LeaseLost | HandedBack):
        return outcome.ended
    if isinstance(outcome, Error) or outcome.result.status != "completed":
        return finish(platform, this, outcome)
    result = outcome.result
    if not isinstance(result, TrainingResult):
        return finish(platform, this, Error("internal", "the engine gave no training result"))
    produced = result.adapter_dir or result.model_dir
    if produced is None:
        return finish(platform, this, Error("internal", "the engine saved no model"))
    metrics = {k: float(v) for k, v in result.metrics.items()}
    try:
        with telemetry.phase("register"):
            uri = await publish(platform, this, produced)
            model = await registry.register(
                job, uri, result.adapter_dir is not None, metrics, inputs.dataset_sha256
            )
    except INPUT_ERRORS as error:
        return finish(platform, this, Error("input", f"registering the model: {error}"))
    except Exception as error:
        log.exception("could not register the model of %s", job.id)
        return finish(platform, this, Error("internal", f"registering the model: {error}"))
    return finish(platform, this, outcome, model)
