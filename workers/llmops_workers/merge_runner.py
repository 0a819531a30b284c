"""Runs one attempt of a merge job: resolve the adapter and its base through the Registry, merge
in a child process (`merge_job.run_merge`), and register the merged model through the Registry
with lineage to the adapter. Every write is fenced by attempt, as for training.

The merged files go to `models/merged/<job>` in the store: a second attempt replaces what a dead
one left there (the merge writes beside it and renames), and registration is idempotent per job,
so a retry after a lost registration reply registers nothing twice."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

import llmops
from llmops_services.context import Platform
from llmops_services.db.tables import JobRow
from llmops_services.jobs import leases, states
from llmops_workers import telemetry
from llmops_workers.merge_job import MergeResult, MergeSpec
from llmops_workers.messages import Error, HandedBack, LeaseLost, Result
from llmops_workers.registry_link import RegistryLink
from llmops_workers.runner import (
    INPUT_ERRORS,
    Attempt,
    end_with_error,
    observe_end,
    publish,
    supervise,
)

log = logging.getLogger("llmops.worker")


def output_dir(platform: Platform, job: JobRow) -> Path:
    """Where the job's merged model is written (in the store, or the workspace of a remote one
    until published)."""
    return platform.store.workspace(f"models/merged/{job.id}")


def finish_merge(
    platform: Platform,
    attempt: Attempt,
    outcome: Result | Error,
    model: llmops.v1.registry_service_pb2.Model | None = None,
) -> str:
    """Ends the attempt: succeed with the registered model, cancel, fail or queue a retry."""

    def work(session: Session) -> str:
        job = leases.fenced_job(session, attempt.job_id, attempt.attempt, attempt.owner)
        if job is None:
            return "fenced"
        if isinstance(outcome, Error):
            return end_with_error(session, job, outcome, platform.settings.job_max_attempts)
        result = outcome.result
        if not isinstance(result, MergeResult):
            raise TypeError(f"a merge attempt ended with {type(result).__name__}")
        if result.status == "cancelled":
            states.move(session, job, "CANCELLED", "cancelled before the merge was registered")
            observe_end(job)
            return "cancelled"
        if model is None:
            raise ValueError("a completed merge ends with its registered model")
        job.result_model_id = model.id
        job.step = job.total_steps = 1
        job.metrics = {"merge_seconds": result.seconds}
        states.move(session, job, "SUCCEEDED", f"registered {model.name} v{model.version}")
        observe_end(job)
        return "succeeded"

    state: str = platform.db.run_sync(work)
    return state


def _cancel_requested(platform: Platform, attempt: Attempt) -> bool:
    def read(session: Session) -> bool:
        job = leases.fenced_job(session, attempt.job_id, attempt.attempt, attempt.owner)
        return job is not None and job.cancel_requested

    found: bool = platform.db.run_sync(read)
    return found


async def merge_attempt(
    platform: Platform,
    registry: RegistryLink,
    this: Attempt,
    job: JobRow,
    threads: int,
    exiting: list[Any],
) -> str:
    """The body of a merge attempt (see `runner.run_attempt`): resolve, merge, register."""
    try:
        with telemetry.phase("resolve_inputs"):
            inputs = await registry.merge_inputs(job)
    except (*INPUT_ERRORS, ValueError) as error:
        return finish_merge(platform, this, Error("input", f"an input of the job: {error}"))
    except Exception as error:
        log.exception("could not resolve the inputs of %s", job.id)
        return finish_merge(platform, this, Error("internal", f"resolving inputs: {error}"))
    target = output_dir(platform, job)
    spec = MergeSpec(inputs.base_dir, inputs.adapter_dir, target, threads, inputs.trust_remote_code)
    with telemetry.phase("merge"):
        outcome = await supervise(platform, this, spec, exiting)
    if isinstance(outcome, LeaseLost | HandedBack):
        return outcome.ended
    if isinstance(outcome, Error) or not isinstance(outcome.result, MergeResult):
        return finish_merge(platform, this, outcome)
    result = outcome.result
    if result.status == "completed" and _cancel_requested(platform, this):
        # cancelled while merging: the merge is not interrupted half way, its output is dropped
        shutil.rmtree(target, ignore_errors=True)
        cancelled = Result(MergeResult("cancelled", None, result.seconds))
        return finish_merge(platform, this, cancelled)
    if result.status != "completed" or result.model_dir is None:
        return finish_merge(platform, this, outcome)
    try:
        with telemetry.phase("register"):
            uri = await publish(platform, this, result.model_dir)
            model = await registry.register_merged(job, uri, inputs.adapter)
    except INPUT_ERRORS as error:
        return finish_merge(platform, this, Error("input", f"registering the model: {error}"))
    except Exception as error:
        log.exception("could not register the merged model of %s", job.id)
        return finish_merge(platform, this, Error("internal", f"registering the model: {error}"))
    return finish_merge(platform, this, outcome, model)
