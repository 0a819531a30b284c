"""Runs one attempt of an eval run: resolve the model and dataset through the Registry, evaluate
in a child process, and record the metrics and the report's location on the run (fenced by
attempt, as for training). Gates are judged by the Eval service when asked, not here."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from llmops_services.context import Platform
from llmops_services.db.tables import JobRow
from llmops_services.jobs import leases, states
from llmops_workers import telemetry
from llmops_workers.evaluation.spec import EvalResult, EvalSpec
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


def _metrics(result: EvalResult) -> dict[str, dict[str, float]]:
    """The run's metrics as the job row keeps them: `task/metric` -> value and count."""
    return {
        f"{m.task}/{m.metric}": {"value": float(m.value), "count": int(m.count)}
        for m in result.metrics
    }


def finish_eval(
    platform: Platform, attempt: Attempt, outcome: Result | Error, report_uri: str = ""
) -> str:
    """Ends the attempt: record the metrics and report (published at `report_uri`), cancel,
    fail or queue the next attempt."""

    def work(session: Session) -> str:
        job = leases.fenced_job(session, attempt.job_id, attempt.attempt, attempt.owner)
        if job is None:
            return "fenced"
        if isinstance(outcome, Error):
            return end_with_error(session, job, outcome, platform.settings.job_max_attempts)
        result = outcome.result
        if not isinstance(result, EvalResult):
            raise TypeError(f"an eval attempt ended with {type(result).__name__}")
        if result.status == "cancelled":
            states.move(session, job, "CANCELLED", f"stopped after {job.step} examples")
            observe_end(job)
            return "cancelled"
        job.metrics = _metrics(result)
        job.step = job.total_steps = result.examples
        job.report_uri = report_uri
        states.move(session, job, "SUCCEEDED", f"evaluated {result.examples} examples")
        observe_end(job)
        return "succeeded"

    state: str = platform.db.run_sync(work)
    return state


async def eval_attempt(
    platform: Platform,
    registry: RegistryLink,
    this: Attempt,
    job: JobRow,
    threads: int,
    exiting: list[Any],
) -> str:
    """The body of an eval attempt (see `runner.run_attempt`)."""
    output = platform.store.workspace(f"evals/{job.id}/attempt-{job.attempt}")
    try:
        with telemetry.phase("resolve_inputs"):
            inputs = await registry.eval_inputs(job)
    except INPUT_ERRORS as error:
        failed = Error("input", f"an input of the run: {error}")
        return finish_eval(platform, this, failed)
    except Exception as error:
        log.exception("could not resolve the inputs of %s", job.id)
        return finish_eval(platform, this, Error("internal", f"resolving: {error}"))
    settings = job.resolved_hyperparameters
    generation = settings.get("generation", {})
    spec = EvalSpec(
        model_dir=inputs.model_dir,
        adapter_dir=inputs.adapter_dir,
        eval_file=inputs.dataset_file,
        output_dir=output,
        task=str(settings.get("task", "")),
        template=inputs.template,
        max_new_tokens=int(generation.get("max_new_tokens", 64)),
        temperature=float(generation.get("temperature", 0.0)),
        top_p=float(generation.get("top_p", 1.0)),
        batch_size=int(generation.get("batch_size", 16)),
        limit=int(settings.get("limit", 0)),
        threads=threads,
        trust_remote_code=inputs.trust_remote_code,
    )
    with telemetry.phase("evaluate"):
        outcome = await supervise(platform, this, spec, exiting)
    if isinstance(outcome, LeaseLost | HandedBack):
        return outcome.ended
    if isinstance(outcome, Error) or outcome.result.status != "completed":
        return finish_eval(platform, this, outcome)
    try:
        report_uri = await publish(platform, this, output)
    except Exception as error:
        log.exception("could not upload the report of %s", job.id)
        return finish_eval(platform, this, Error("internal", f"uploading the report: {error}"))
    return finish_eval(platform, this, outcome, report_uri)
