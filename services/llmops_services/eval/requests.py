"""CreateEvalRun's checks, all before anything is stored or queued."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from llmops.v1 import eval_service_pb2 as pb
from llmops_services.db.tables import DatasetRow, ModelRow
from llmops_services.errors import FieldViolation, InvalidArgument
from llmops_services.registry import datasets, models, templates

TASKS = ("summarization", "classification", "extraction", "preference")
EVAL_DATASET_KINDS = ("eval", "preference")
GENERATION_DEFAULTS: dict[str, float] = {
    "max_new_tokens": 64,
    "temperature": 0.0,
    "top_p": 1.0,
    "batch_size": 16,
}


@dataclass(frozen=True)
class CheckedRun:
    """A request that passed every check, with its references resolved."""

    model: ModelRow
    dataset: DatasetRow
    template_id: str
    template_version: int
    settings: dict[str, Any]
    """task, generation (every value filled in), limit and gate: what the worker runs."""


def _generation(given: pb.GenerationConfig) -> dict[str, float]:
    """The generation settings with defaults for unset (zero) values, range-checked."""
    values = {
        "max_new_tokens": given.max_new_tokens or GENERATION_DEFAULTS["max_new_tokens"],
        "temperature": given.temperature,
        "top_p": given.top_p or GENERATION_DEFAULTS["top_p"],
        "batch_size": given.batch_size or GENERATION_DEFAULTS["batch_size"],
    }
    problems = []
    if not 1 <= values["max_new_tokens"] <= 4096:
        problems.append(FieldViolation("generation.max_new_tokens", "must be 1..4096"))
    if not 0 <= values["temperature"] <= 5:
        problems.append(FieldViolation("generation.temperature", "must be 0..5 (0 is greedy)"))
    if not 0 < values["top_p"] <= 1:
        problems.append(FieldViolation("generation.top_p", "must be in (0, 1]"))
    if not 1 <= values["batch_size"] <= 1024:
        problems.append(FieldViolation("generation.batch_size", "must be 1..1024"))
    if problems:
        raise InvalidArgument("generation settings out of range", violations=problems)
    return values


def check(session: Session, request: pb.CreateEvalRunRequest) -> CheckedRun:
    """Resolves and checks a request; raises the error a client should see."""
    required = ("model", "dataset")
    missing = [FieldViolation(f, "required") for f in required if not getattr(request, f)]
    if missing:
        raise InvalidArgument("the request is incomplete", violations=missing)
    if request.task and request.task not in TASKS:
        raise InvalidArgument(
            f"unknown task {request.task!r}",
            violations=[FieldViolation("task", f"must be one of {', '.join(TASKS)}")],
        )
    if request.limit < 0:
        raise InvalidArgument(
            "limit must not be negative",
            violations=[FieldViolation("limit", "must be >= 0 (0 evaluates every row)")],
        )
    generation = _generation(request.generation)
    model = models.find_model(session, request.model)
    dataset = datasets.find_dataset(session, request.dataset)
    if dataset.kind not in EVAL_DATASET_KINDS:
        raise InvalidArgument(
            f"{dataset.name} is a {dataset.kind} dataset; runs take eval or preference datasets",
            violations=[FieldViolation("dataset", "must be an eval or preference dataset")],
        )
    version = 0
    if request.template_id:
        version = templates.get_template(
            session, request.template_id, request.template_version
        ).version
    return CheckedRun(
        model=model,
        dataset=dataset,
        template_id=request.template_id,
        template_version=version,
        settings={
            "task": request.task,
            "generation": generation,
            "limit": int(request.limit),
            "gate": bool(request.gate),
        },
    )
