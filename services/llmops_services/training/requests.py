"""Checks a CreateTrainingJob request against the registry before anything is queued: every
reference resolves, the dataset's kind fits the method, the values are in range."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from llmops.v1 import training_service_pb2 as pb
from llmops_services.db.tables import DatasetRow, ModelRow
from llmops_services.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PreconditionViolation,
)
from llmops_services.registry import datasets, models, templates
from llmops_services.registry.names import check_name
from llmops_services.training import gpus, hyperparameters

METHOD_NAMES = {
    pb.TRAINING_METHOD_SFT: "sft",
    pb.TRAINING_METHOD_QLORA: "qlora",
    pb.TRAINING_METHOD_DPO: "dpo",
    pb.TRAINING_METHOD_DISTILL: "distill",
}
METHODS = {name: value for value, name in METHOD_NAMES.items()}
DATASET_KIND_FOR = {"sft": "sft", "qlora": "sft", "dpo": "preference", "distill": "sft"}


@dataclass(frozen=True)
class CheckedJob:
    """A request with every reference resolved to an id and every hyperparameter filled in."""

    method: str
    base_model: ModelRow
    dataset: DatasetRow
    validation_dataset: DatasetRow | None
    teacher_model: ModelRow | None
    parent_model: ModelRow | None
    template_id: str
    template_version: int
    requested: dict[str, object]
    resolved: pb.Hyperparameters
    output_name: str
    auto_notes: tuple[str, ...] = ()
    gpu_count: int = 0
    distributed_strategy: str = ""


def _required(request: pb.CreateTrainingJobRequest, method: str) -> list[FieldViolation]:
    missing = [
        FieldViolation(name, "required")
        for name in ("base_model", "dataset")
        if not getattr(request, name)
    ]
    if method == "distill" and not request.teacher_model:
        missing.append(FieldViolation("teacher_model", "required for DISTILL"))
    if method != "distill" and request.teacher_model:
        missing.append(FieldViolation("teacher_model", "only DISTILL takes a teacher"))
    return missing


def _dataset(session: Session, field: str, ref: str, method: str) -> DatasetRow:
    row = datasets.find_dataset(session, ref)
    wanted = DATASET_KIND_FOR[method]
    if row.kind != wanted:
        raise InvalidArgument(
            f"{method} trains on {wanted} datasets; {row.name} is {row.kind}",
            violations=[FieldViolation(field, f"must be a {wanted} dataset, not {row.kind}")],
        )
    return row


def check(session: Session, request: pb.CreateTrainingJobRequest) -> CheckedJob:
    """Resolves and checks a request; raises the error a client should see."""
    method = METHOD_NAMES.get(request.method)
    if method is None:
        raise InvalidArgument(
            "method is required",
            violations=[FieldViolation("method", "must be SFT, QLORA, DPO or DISTILL")],
        )
    missing = _required(request, method)
    if missing:
        raise InvalidArgument("the request is incomplete", violations=missing)
    if request.output_name:
        check_name("output_name", request.output_name)
    gpu_count, strategy = gpus.check_request(request, method)
    given = hyperparameters.check(method, request.hyperparameters)  # range errors come first
    base = models.find_model(session, request.base_model)
    if base.kind == "adapter":
        raise InvalidArgument(
            f"{base.name} is an adapter; train on its base model and pass it as parent_model",
            violations=[FieldViolation("base_model", "must be a base or merged model")],
        )
    dataset = _dataset(session, "dataset", request.dataset, method)
    validation = (
        _dataset(session, "validation_dataset", request.validation_dataset, method)
        if request.validation_dataset
        else None
    )
    template_version = 0
    if request.template_id:
        template_version = templates.get_template(
            session, request.template_id, request.template_version
        ).version
    teacher = models.find_model(session, request.teacher_model) if request.teacher_model else None
    if teacher is not None and teacher.tokenizer_sha256 != base.tokenizer_sha256:
        raise FailedPrecondition(
            f"teacher {teacher.name} and student {base.name} do not share a tokenizer",
            violations=[
                PreconditionViolation(
                    "TOKENIZER_MISMATCH", f"models/{teacher.id}", "tokenizer differs from student's"
                )
            ],
        )
    parent = models.find_model(session, request.parent_model) if request.parent_model else None
    if parent is not None and (parent.kind != "adapter" or parent.base_model_id != base.id):
        raise InvalidArgument(
            f"{parent.name} is not an adapter of {base.name}",
            violations=[FieldViolation("parent_model", "must be an adapter of base_model")],
        )
    facts = hyperparameters.Facts(dataset.row_count, dataset.approx_tokens, base.size_bytes)
    picked = hyperparameters.auto_values(method, given, facts)
    resolved = hyperparameters.fill(method, given, picked)
    notes = tuple(f"{name}={value} ({why})" for name, (value, why) in picked.items())
    return CheckedJob(
        method=method,
        base_model=base,
        dataset=dataset,
        validation_dataset=validation,
        teacher_model=teacher,
        parent_model=parent,
        template_id=request.template_id,
        template_version=template_version,
        requested=given,
        resolved=resolved,
        output_name=request.output_name or f"{base.name}-{method}",
        auto_notes=notes,
        gpu_count=gpu_count,
        distributed_strategy=strategy,
    )
