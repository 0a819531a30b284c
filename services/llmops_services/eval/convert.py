"""Eval job rows to contract messages.

An eval run's metrics are stored on its job row as `{"<task>/<metric>": {"value", "count"}}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmops.v1 import eval_service_pb2 as pb
from llmops.v1 import jobs_pb2
from llmops_services.db.tables import JobRow
from llmops_services.eval.gates import Verdict
from llmops_services.jobs import convert as job_convert
from llmops_services.registry.convert import timestamp


def metric_key(task: str, metric: str) -> str:
    """How a metric is keyed on the job row."""
    return f"{task}/{metric}"


def task_metrics(row: JobRow) -> list[pb.TaskMetric]:
    """The metrics of a run, ordered by task then metric."""
    found: list[pb.TaskMetric] = []
    for key, entry in sorted(row.metrics.items()):
        task, _, metric = str(key).partition("/")
        if metric and isinstance(entry, Mapping):
            found.append(
                pb.TaskMetric(
                    task=task,
                    metric=metric,
                    value=float(entry.get("value", 0.0)),
                    count=int(entry.get("count", 0)),
                )
            )
    return found


def measured(row: JobRow) -> dict[tuple[str, str], float]:
    """A finished run's metric values by (task, metric)."""
    return {(m.task, m.metric): m.value for m in task_metrics(row)}


def eval_run(row: JobRow, verdicts: list[Verdict] | None = None) -> pb.EvalRun:
    """The message of an eval run; `verdicts` when it is a finished gated run (no gates at all
    is a pass: there is nothing to fail)."""
    settings: dict[str, Any] = row.resolved_hyperparameters
    generation = settings.get("generation", {})
    total = row.total_steps
    judged = verdicts or []
    return pb.EvalRun(
        id=row.id,
        model=row.model_id,
        dataset=row.dataset_id,
        template_id=row.template_id,
        template_version=row.template_version,
        task=str(settings.get("task", "")),
        generation=pb.GenerationConfig(
            max_new_tokens=int(generation.get("max_new_tokens", 0)),
            temperature=float(generation.get("temperature", 0.0)),
            top_p=float(generation.get("top_p", 0.0)),
            batch_size=int(generation.get("batch_size", 0)),
        ),
        limit=int(settings.get("limit", 0)),
        gate=bool(settings.get("gate", False)),
        state=jobs_pb2.JobState.Value(f"JOB_STATE_{row.state}"),
        attempt=row.attempt,
        progress=jobs_pb2.JobProgress(
            step=row.step, total_steps=total, fraction=min(row.step / total, 1.0) if total else 0.0
        ),
        metrics=task_metrics(row),
        gates=[
            pb.GateResult(
                task=v.task,
                metric=v.metric,
                value=v.value,
                threshold=v.threshold,
                passed=v.passed,
                description=v.description,
            )
            for v in judged
        ],
        gate_passed=verdicts is not None and all(v.passed for v in judged),
        report_uri=row.report_uri,
        error=job_convert.error(row),
        create_time=timestamp(row.create_time),
        start_time=timestamp(row.start_time),
        end_time=timestamp(row.end_time),
        idempotency_key=row.idempotency_key or "",
    )
