"""Training job rows to contract messages (events and checkpoints: `jobs.convert`)."""

from __future__ import annotations

from google.protobuf import json_format

from llmops.v1 import jobs_pb2
from llmops.v1 import training_service_pb2 as pb
from llmops_services.db.tables import JobRow
from llmops_services.jobs import convert as job_convert
from llmops_services.registry.convert import timestamp
from llmops_services.training.gpus import STRATEGY_VALUES
from llmops_services.training.requests import METHODS


def _hyperparameters(values: dict[str, object]) -> pb.Hyperparameters:
    message = pb.Hyperparameters()
    json_format.ParseDict(values, message)
    return message


def training_job(row: JobRow) -> pb.TrainingJob:
    """The message of a training job."""
    total = row.total_steps
    return pb.TrainingJob(
        id=row.id,
        method=METHODS.get(row.method, pb.TRAINING_METHOD_UNSPECIFIED),
        state=jobs_pb2.JobState.Value(f"JOB_STATE_{row.state}"),
        attempt=row.attempt,
        base_model=row.model_id,
        dataset=row.dataset_id,
        validation_dataset=row.validation_dataset_id,
        template_id=row.template_id,
        template_version=row.template_version,
        teacher_model=row.teacher_model_id,
        hyperparameters=_hyperparameters(row.hyperparameters),
        resolved_hyperparameters=_hyperparameters(row.resolved_hyperparameters),
        output_name=row.output_name,
        progress=jobs_pb2.JobProgress(
            step=row.step, total_steps=total, fraction=min(row.step / total, 1.0) if total else 0.0
        ),
        metrics={str(k): float(v) for k, v in row.metrics.items()},
        error=job_convert.error(row),
        result_model=row.result_model_id,
        create_time=timestamp(row.create_time),
        start_time=timestamp(row.start_time),
        end_time=timestamp(row.end_time),
        idempotency_key=row.idempotency_key or "",
        gpu_count=row.gpu_count,
        distributed_strategy=STRATEGY_VALUES.get(
            row.distributed_strategy, pb.DISTRIBUTED_STRATEGY_UNSPECIFIED
        ),
    )
