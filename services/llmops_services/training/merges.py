"""Merge jobs: MergeAdapter's checks, and their rows as contract messages.

A merge job is a job of its own kind (`JobKind.MERGE`) in the same table, state machine, queue
and event log as training jobs; its row keeps the adapter in `model_id`, the name to register
the result under in `output_name`, and the adapter's base and the description in
`resolved_hyperparameters` (what the worker runs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from llmops.v1 import jobs_pb2
from llmops.v1 import training_service_pb2 as pb
from llmops_services.db.tables import JobRow, ModelRow
from llmops_services.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PreconditionViolation,
)
from llmops_services.jobs import convert as job_convert
from llmops_services.registry import models
from llmops_services.registry.convert import timestamp
from llmops_services.registry.names import check_name

# ids of the other resources, which a caller may pass by mistake (a dataset is no adapter)
_OTHER_IDS = re.compile(r"^(ds|ftjob|eval|merge)-[0-9a-f]{12}$")
_OTHER_NAMES = {
    "ds": "a dataset",
    "ftjob": "a training job",
    "eval": "an eval run",
    "merge": "a merge job",
}


@dataclass(frozen=True)
class CheckedMerge:
    """A MergeAdapter request that passed every check, its adapter and base resolved."""

    adapter: ModelRow
    base: ModelRow
    output_name: str
    description: str


def check(session: Session, request: pb.MergeAdapterRequest) -> CheckedMerge:
    """Resolves and checks a request; raises the error a client should see."""
    if not request.model:
        raise InvalidArgument("model is required", violations=[FieldViolation("model", "required")])
    other = _OTHER_IDS.match(request.model)
    if other:
        raise InvalidArgument(
            f"{request.model} is {_OTHER_NAMES[other.group(1)]}, not an adapter",
            violations=[FieldViolation("model", "must be an adapter's id, name or name@alias")],
        )
    if request.output_name:
        check_name("output_name", request.output_name)
    adapter = models.find_model(session, request.model)
    if adapter.kind != "adapter":
        raise InvalidArgument(
            f"{adapter.name} v{adapter.version} is a {adapter.kind} model; only an adapter "
            "can be merged into its base",
            violations=[FieldViolation("model", f"must be an adapter, not a {adapter.kind} model")],
        )
    base = session.get(ModelRow, adapter.base_model_id) if adapter.base_model_id else None
    if base is None:
        raise FailedPrecondition(
            f"adapter {adapter.id} has no base model to merge into",
            violations=[
                PreconditionViolation("NO_BASE", f"models/{adapter.id}", "base is missing")
            ],
        )
    return CheckedMerge(
        adapter=adapter,
        base=base,
        output_name=request.output_name or f"{adapter.name}-merged",
        description=request.description,
    )


def draft_row(checked: CheckedMerge, traceparent: str) -> JobRow:
    """The job's own fields (creation adds id, kind, state, attempt and key)."""
    settings: dict[str, Any] = {
        "base_model": checked.base.id,
        "description": checked.description,
    }
    return JobRow(
        model_id=checked.adapter.id,
        output_name=checked.output_name,
        hyperparameters=settings,
        resolved_hyperparameters=settings,
        traceparent=traceparent,
    )


def merge_job(row: JobRow) -> pb.MergeJob:
    """The message of a merge job."""
    settings: dict[str, Any] = row.resolved_hyperparameters
    total = row.total_steps
    return pb.MergeJob(
        id=row.id,
        model=row.model_id,
        base_model=str(settings.get("base_model", "")),
        output_name=row.output_name,
        description=str(settings.get("description", "")),
        state=jobs_pb2.JobState.Value(f"JOB_STATE_{row.state}"),
        attempt=row.attempt,
        progress=jobs_pb2.JobProgress(
            step=row.step, total_steps=total, fraction=min(row.step / total, 1.0) if total else 0.0
        ),
        error=job_convert.error(row),
        result_model=row.result_model_id,
        create_time=timestamp(row.create_time),
        start_time=timestamp(row.start_time),
        end_time=timestamp(row.end_time),
        idempotency_key=row.idempotency_key or "",
    )
