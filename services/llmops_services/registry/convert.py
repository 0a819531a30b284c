"""Database rows to contract messages."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from llmops.v1 import registry_service_pb2 as pb
from llmops_services.db.tables import (
    AliasMoveRow,
    DatasetRow,
    ModelAliasRow,
    ModelRow,
    PromptTemplateRow,
)

DATASET_KINDS = {
    "sft": pb.DATASET_KIND_SFT,
    "preference": pb.DATASET_KIND_PREFERENCE,
    "eval": pb.DATASET_KIND_EVAL,
}
DATASET_KIND_NAMES = {v: k for k, v in DATASET_KINDS.items()}
MODEL_KINDS = {
    "base": pb.MODEL_KIND_BASE,
    "adapter": pb.MODEL_KIND_ADAPTER,
    "merged": pb.MODEL_KIND_MERGED,
}
MODEL_KIND_NAMES = {v: k for k, v in MODEL_KINDS.items()}


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp from a stored datetime (SQLite hands back naive UTC values)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def prompt_template(row: PromptTemplateRow) -> pb.PromptTemplate:
    """The message of one template version."""
    return pb.PromptTemplate(
        template_id=row.template_id,
        version=row.version,
        template=row.template,
        description=row.description,
        task=row.task,
        create_time=timestamp(row.create_time),
    )


def dataset(row: DatasetRow) -> pb.Dataset:
    """The message of a dataset."""
    return pb.Dataset(
        id=row.id,
        name=row.name,
        kind=DATASET_KINDS[row.kind],
        description=row.description,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        row_count=row.row_count,
        approx_tokens=row.approx_tokens,
        task_counts={str(k): int(v) for k, v in row.task_counts.items()},
        uri=row.uri,
        create_time=timestamp(row.create_time),
    )


def model(row: ModelRow, aliases: list[str]) -> pb.Model:
    """The message of a model, with the aliases that point at it."""
    hyperparameters = struct_pb2.Struct()
    if row.hyperparameters:
        json_format.ParseDict(row.hyperparameters, hyperparameters)
    return pb.Model(
        id=row.id,
        name=row.name,
        version=row.version,
        kind=MODEL_KINDS[row.kind],
        description=row.description,
        uri=row.uri,
        origin=pb.ModelOrigin(
            base_model=row.base_model_id or "",
            dataset=row.dataset_id or "",
            dataset_sha256=row.dataset_sha256,
            method=row.method,
            hyperparameters=hyperparameters,
            training_job=row.training_job_id,
            attempt=row.attempt,
            checkpoint_step=row.checkpoint_step,
            template_id=row.template_id,
            template_version=row.template_version,
            teacher_model=row.teacher_model_id or "",
            parent_model=row.parent_model_id or "",
            merge_job=row.merge_job_id,
        ),
        metrics={str(k): float(v) for k, v in row.metrics.items()},
        aliases=sorted(aliases),
        architecture=row.architecture,
        tokenizer_sha256=row.tokenizer_sha256,
        trust_remote_code=row.trust_remote_code,
        size_bytes=row.size_bytes,
        create_time=timestamp(row.create_time),
    )


def model_alias(row: ModelAliasRow) -> pb.ModelAlias:
    """The message of an alias."""
    return pb.ModelAlias(
        model_name=row.model_name,
        alias=row.alias,
        model=row.model_id,
        update_time=timestamp(row.update_time),
        updated_by=row.updated_by,
    )


def alias_move(row: AliasMoveRow) -> pb.AliasMove:
    """The message of one alias move."""
    return pb.AliasMove(
        model_name=row.model_name,
        alias=row.alias,
        from_model=row.from_model,
        to_model=row.to_model,
        actor=row.actor,
        create_time=timestamp(row.create_time),
        reason=row.reason,
        eval_run=row.eval_run,
        forced=row.forced,
    )
