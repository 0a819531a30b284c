"""Runs one attempt of a training job: claim it, build the engine's spec from the registry,
supervise the child process, write its events and checkpoints (fenced by attempt), and register
the result. The database is written only while this attempt holds the job's lease."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import queue as queue_module
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from llmops_services.context import Platform
from llmops_services.db.tables import DatasetRow, JobRow, ModelRow, PromptTemplateRow
from llmops_services.registry import models
from llmops_services.runtime.context import job_id_var
from llmops_services.training import jobs
from llmops_workers.child import STOP_CANCEL, STOP_NONE, child_main
from llmops_workers.engines.spec import TrainingResult, TrainingSpec

log = logging.getLogger("llmops.worker")


@dataclass
class Attempt:
    """One attempt at a job, as the worker runs it."""

    job_id: str
    attempt: int
    owner: str


def _local(platform: Platform, uri: str) -> Path:
    """A local path for a model or dataset URI (a store URI or a local directory)."""
    if uri.startswith("store://"):
        return platform.store.local_path(uri)
    return Path(uri)


def build_spec(platform: Platform, session: Session, job: JobRow, threads: int) -> TrainingSpec:
    """The engine's input, resolved from the job's ids."""
    base = session.get(ModelRow, job.model_id)
    dataset = session.get(DatasetRow, job.dataset_id)
    if base is None or dataset is None:
        raise ValueError("the job's base model or dataset no longer exists")
    validation = (
        session.get(DatasetRow, job.validation_dataset_id) if job.validation_dataset_id else None
    )
    teacher = session.get(ModelRow, job.teacher_model_id) if job.teacher_model_id else None
    parent = session.get(ModelRow, job.parent_model_id) if job.parent_model_id else None
    template = (
        session.get(PromptTemplateRow, (job.template_id, job.template_version))
        if job.template_id
        else None
    )
    done = jobs.checkpoints_of(session, job.id)
    resume = _local(platform, done[-1].uri) if done else None
    output = platform.store.path(f"jobs/{job.id}/attempt-{job.attempt}")
    teacher_adapter = None
    if teacher is not None and teacher.kind == "adapter":
        teacher_adapter = _local(platform, teacher.uri)
        teacher = session.get(ModelRow, teacher.base_model_id or "")
        if teacher is None:
            raise ValueError("the teacher adapter's base model no longer exists")
    return TrainingSpec(
        teacher_adapter_dir=teacher_adapter,
        method=job.method,  # type: ignore[arg-type]
        base_model_dir=_local(platform, base.uri),
        output_dir=Path(output),
        train_file=_local(platform, dataset.uri),
        validation_file=_local(platform, validation.uri) if validation else None,
        template=template.template if template else None,
        hyperparameters=dict(job.resolved_hyperparameters),
        teacher_model_dir=_local(platform, teacher.uri) if teacher else None,
        parent_adapter_dir=_local(platform, parent.uri) if parent else None,
        resume_from=resume,
        threads=threads,
    )


class Supervisor:
    """Writes what the child reports, renews the lease, and passes on cancels."""

    def __init__(self, platform: Platform, attempt: Attempt) -> None:
        self.platform = platform
        self.attempt = attempt
        self.settings = platform.settings

    def _fenced(self, work: Any) -> Any:
        """Runs `work(session, job)` only while this attempt owns the job; None otherwise."""

        def guarded(session: Session) -> Any:
            job = jobs.fenced_job(
                session, self.attempt.job_id, self.attempt.attempt, self.attempt.owner
            )
            return None if job is None else work(session, job)

        return self.platform.db.run_sync(guarded)

    def on_message(self, message: tuple[Any, ...]) -> None:
        """Records one report of the child."""
        kind = message[0]
        if kind == "start":
            total = int(message[1])
            self._fenced(lambda s, job: setattr(job, "total_steps", total))
        elif kind == "log":
            _, step, total, metrics = message

            def log_step(session: Session, job: JobRow) -> None:
                job.step, job.total_steps = int(step), int(total)
                job.metrics = {**job.metrics, **metrics}
                jobs.append_event(
                    session, job, jobs.Event("METRICS", step=int(step), metrics=metrics)
                )

            self._fenced(log_step)
        elif kind == "checkpoint":
            _, step, path, metrics = message
            uri = self.platform.store.uri(str(Path(path).relative_to(self.platform.store.root)))
            self._fenced(lambda s, job: jobs.record_checkpoint(s, job, int(step), uri, metrics))

    def heartbeat(self) -> bool | None:
        """Renews the lease; returns whether a cancel was asked for, None if the lease is lost."""

        def renew(session: Session) -> bool | None:
            job = jobs.heartbeat(
                session,
                self.attempt.job_id,
                self.attempt.attempt,
                self.attempt.owner,
                self.settings.job_lease_seconds,
            )
            return None if job is None else job.cancel_requested

        result: bool | None = self.platform.db.run_sync(renew)
        return result


async def supervise(platform: Platform, attempt: Attempt, spec: TrainingSpec) -> tuple[Any, ...]:
    """Runs the child to its end; returns ("result", TrainingResult) or ("error", kind, text)."""
    context = multiprocessing.get_context("spawn")
    reports: Any = context.Queue()
    control: Any = context.Value("i", STOP_NONE)
    child = context.Process(target=child_main, args=(spec, reports, control), daemon=True)
    child.start()
    supervisor = Supervisor(platform, attempt)
    beat_every = max(platform.settings.job_lease_seconds / 4, 0.2)
    next_beat = 0.0
    outcome: tuple[Any, ...] | None = None
    try:
        while outcome is None:
            now = time.monotonic()
            if now >= next_beat:
                cancel = supervisor.heartbeat()
                if cancel is None:
                    log.warning("lost the lease of %s; stopping", attempt.job_id)
                    control.value = STOP_CANCEL
                    outcome = ("lost", None)
                    break
                if cancel:
                    control.value = STOP_CANCEL
                next_beat = now + beat_every
            try:
                message = await asyncio.to_thread(reports.get, True, 0.2)
            except queue_module.Empty:
                if not child.is_alive():
                    outcome = ("error", "crash", f"training process exited with {child.exitcode}")
                continue
            if message[0] in ("result", "error"):
                outcome = ("result", message[1]) if message[0] == "result" else message
            else:
                supervisor.on_message(message)
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
            child.join()
    return outcome


def finish(platform: Platform, attempt: Attempt, outcome: tuple[Any, ...]) -> str:
    """Ends the attempt in the database: register and succeed, fail, cancel, or retry."""
    settings = platform.settings

    def work(session: Session) -> str:
        job = jobs.fenced_job(session, attempt.job_id, attempt.attempt, attempt.owner)
        if job is None:
            return "fenced"
        if outcome[0] == "result":
            result: TrainingResult = outcome[1]
            if result.status == "cancelled":
                jobs.move(session, job, "CANCELLED", f"stopped at step {result.steps}")
                return "cancelled"
            if result.status == "paused":
                job.lease_owner, job.lease_expires = "", None
                jobs.move(session, job, "PAUSED", f"paused at step {result.steps}")
                return "paused"
            return _succeed(platform, session, job, result)
        _, kind, text = outcome
        if kind == "crash" and job.attempt < settings.job_max_attempts:
            jobs.requeue(session, job, text)
            return "retry"
        job.error_code = 3 if kind == "input" else 13
        job.error_message = text.splitlines()[0] if text else "training failed"
        jobs.move(session, job, "FAILED", job.error_message)
        return "failed"

    state: str = platform.db.run_sync(work)
    return state


def _succeed(platform: Platform, session: Session, job: JobRow, result: TrainingResult) -> str:
    produced = result.adapter_dir or result.model_dir
    if produced is None:
        raise ValueError("the engine finished without an adapter or a model")
    key = str(Path(produced).relative_to(platform.store.root))
    dataset = session.get(DatasetRow, job.dataset_id)
    model = models.create_model(
        session,
        platform.store,
        name=job.output_name,
        kind="adapter" if result.adapter_dir else "merged",
        uri=platform.store.uri(key),
        description=f"{job.method} adapter trained by {job.id}",
        base_model=job.model_id,
        parent_model=job.parent_model_id,
        teacher_model=job.teacher_model_id,
        lineage={
            "dataset_id": job.dataset_id,
            "dataset_sha256": dataset.sha256 if dataset else "",
            "method": job.method,
            "hyperparameters": dict(job.resolved_hyperparameters),
            "training_job_id": job.id,
            "attempt": job.attempt,
            "checkpoint_step": 0,
            "template_id": job.template_id,
            "template_version": job.template_version,
        },
        metrics={k: float(v) for k, v in result.metrics.items()},
        idempotency_key=f"training:{job.id}",
    )
    job.result_model_id = model.id
    job.metrics = {**job.metrics, **result.metrics}
    job.step = max(job.step, result.steps)
    jobs.move(session, job, "SUCCEEDED", f"registered {model.name} v{model.version} ({model.id})")
    return "succeeded"


def _note(session: Session, attempt: Attempt, message: str) -> None:
    job = jobs.fenced_job(session, attempt.job_id, attempt.attempt, attempt.owner)
    if job is not None:
        jobs.append_event(session, job, jobs.Event("MESSAGE", message=message))


async def run_attempt(
    platform: Platform, job_id: str, attempt: int, owner: str, threads: int
) -> str:
    """The whole attempt; returns how it ended."""
    job_id_var.set(job_id)
    claimed = platform.db.run_sync(
        lambda s: jobs.claim(s, job_id, attempt, owner, platform.settings.job_lease_seconds)
    )
    if claimed is None:
        return "skipped"
    this = Attempt(job_id, attempt, owner)
    try:
        spec = platform.db.run_sync(
            lambda s: build_spec(platform, s, jobs.get_job(s, job_id), threads)
        )
    except ValueError as error:
        return finish(platform, this, ("error", "input", str(error)))
    if spec.resume_from is not None:
        message = f"attempt {attempt} resumes from {spec.resume_from.name}"
        log.info(message)
        platform.db.run_sync(lambda s: _note(s, this, message))
    outcome = await supervise(platform, this, spec)
    if outcome[0] == "lost":
        return "fenced"
    return finish(platform, this, outcome)
