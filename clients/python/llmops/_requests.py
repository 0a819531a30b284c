"""Request builders shared by the sync and async sub-clients.

Argument checking and enum mapping live here once, so `Client` and `AsyncClient` cannot accept
different things; the sub-clients only send what these build.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Protocol, TypedDict

from llmops import enums
from llmops.hyperparameters import hyperparameters_from_dict
from llmops.v1 import (
    eval_service_pb2,
    inference_service_pb2,
    jobs_pb2,
    registry_service_pb2,
    training_service_pb2,
)

DEFAULT_CHUNK_SIZE = 1024 * 1024
TERMINAL_STATES = frozenset(
    {
        jobs_pb2.JOB_STATE_SUCCEEDED,
        jobs_pb2.JOB_STATE_FAILED,
        jobs_pb2.JOB_STATE_CANCELLED,
    }
)

DatasetSource = str | os.PathLike[str] | bytes


class HasState(Protocol):
    """A training job or eval run, as far as waiting for it is concerned."""

    @property
    def state(self) -> int: ...


def is_terminal(job: HasState) -> bool:
    """True once a job or run has succeeded, failed or been cancelled."""
    return job.state in TERMINAL_STATES


def check_poll_interval(poll_interval: float) -> float:
    if not poll_interval > 0:
        raise ValueError(f"poll_interval must be positive, not {poll_interval!r}")
    return poll_interval


def _required(name: str, value: str) -> str:
    """Fails locally on an empty required string, before a round trip for INVALID_ARGUMENT."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} is required")
    return value


def job_id(value: str) -> str:
    """A training job or eval run id, checked to be given."""
    return _required("id", value)


def _optional_state(state: str | None) -> jobs_pb2.JobState.ValueType:
    return enums.job_state(state) if state else jobs_pb2.JOB_STATE_UNSPECIFIED


# Registry: prompt templates


def list_templates(
    page_size: int, page_token: str
) -> registry_service_pb2.ListPromptTemplatesRequest:
    return registry_service_pb2.ListPromptTemplatesRequest(
        page_size=page_size, page_token=page_token
    )


def get_template(template_id: str, version: int) -> registry_service_pb2.GetPromptTemplateRequest:
    return registry_service_pb2.GetPromptTemplateRequest(
        template_id=_required("template_id", template_id), version=version
    )


def template_versions(
    template_id: str, page_size: int, page_token: str
) -> registry_service_pb2.ListPromptTemplateVersionsRequest:
    return registry_service_pb2.ListPromptTemplateVersionsRequest(
        template_id=_required("template_id", template_id),
        page_size=page_size,
        page_token=page_token,
    )


def create_template(
    template_id: str, template: str, description: str, task: str
) -> registry_service_pb2.CreatePromptTemplateRequest:
    return registry_service_pb2.CreatePromptTemplateRequest(
        prompt_template=registry_service_pb2.PromptTemplate(
            template_id=_required("template_id", template_id),
            template=template,
            description=description,
            task=task,
        )
    )


def validate_template(template: str) -> registry_service_pb2.ValidatePromptTemplateRequest:
    return registry_service_pb2.ValidatePromptTemplateRequest(template=template)


# Registry: datasets


def upload_metadata(
    kind: str, name: str, description: str
) -> registry_service_pb2.UploadDatasetRequest:
    """The first message of an upload stream."""
    return registry_service_pb2.UploadDatasetRequest(
        metadata=registry_service_pb2.DatasetUploadMetadata(
            name=name, kind=enums.dataset_kind(kind), description=description
        )
    )


def check_chunk_size(chunk_size: int) -> int:
    if not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive number of bytes, not {chunk_size!r}")
    return chunk_size


def source_size(source: DatasetSource) -> int:
    """Bytes an upload will send; also fails early (FileNotFoundError) on a missing file."""
    if isinstance(source, bytes):
        return len(source)
    return os.stat(source).st_size


def chunk_message(chunk: bytes) -> registry_service_pb2.UploadDatasetRequest:
    return registry_service_pb2.UploadDatasetRequest(chunk=chunk)


def get_dataset(ref: str) -> registry_service_pb2.GetDatasetRequest:
    return registry_service_pb2.GetDatasetRequest(dataset=_required("dataset", ref))


def list_datasets(
    kind: str | None, page_size: int, page_token: str
) -> registry_service_pb2.ListDatasetsRequest:
    return registry_service_pb2.ListDatasetsRequest(
        page_size=page_size,
        page_token=page_token,
        kind=enums.dataset_kind(kind) if kind else registry_service_pb2.DATASET_KIND_UNSPECIFIED,
    )


def delete_dataset(ref: str) -> registry_service_pb2.DeleteDatasetRequest:
    return registry_service_pb2.DeleteDatasetRequest(dataset=_required("dataset", ref))


# Registry: models


def create_model(
    *,
    name: str,
    uri: str,
    kind: str,
    description: str,
    base_model: str,
    origin: registry_service_pb2.ModelOrigin | None,
    metrics: Mapping[str, float] | None,
    idempotency_key: str,
    trust_remote_code: bool = False,
) -> registry_service_pb2.CreateModelRequest:
    model = registry_service_pb2.Model(
        name=_required("name", name),
        uri=_required("uri", uri),
        kind=enums.model_kind(kind),
        description=description,
        metrics=dict(metrics or {}),
        trust_remote_code=trust_remote_code,
    )
    if origin is not None:
        model.origin.CopyFrom(origin)
    if base_model:
        model.origin.base_model = base_model
    return registry_service_pb2.CreateModelRequest(model=model, idempotency_key=idempotency_key)


def get_model(ref: str) -> registry_service_pb2.GetModelRequest:
    return registry_service_pb2.GetModelRequest(model=_required("model", ref))


def list_models(
    kind: str | None, name: str | None, base_model: str | None, page_size: int, page_token: str
) -> registry_service_pb2.ListModelsRequest:
    return registry_service_pb2.ListModelsRequest(
        page_size=page_size,
        page_token=page_token,
        kind=enums.model_kind(kind) if kind else registry_service_pb2.MODEL_KIND_UNSPECIFIED,
        name=name or "",
        base_model=base_model or "",
    )


def delete_model(ref: str) -> registry_service_pb2.DeleteModelRequest:
    return registry_service_pb2.DeleteModelRequest(model=_required("model", ref))


def set_alias(
    model: str, alias: str, reason: str, force: bool
) -> registry_service_pb2.SetModelAliasRequest:
    return registry_service_pb2.SetModelAliasRequest(
        model=_required("model", model), alias=_required("alias", alias), reason=reason, force=force
    )


def delete_alias(model_name: str, alias: str) -> registry_service_pb2.DeleteModelAliasRequest:
    return registry_service_pb2.DeleteModelAliasRequest(
        model_name=_required("model_name", model_name), alias=_required("alias", alias)
    )


def list_aliases(
    model_name: str | None, page_size: int, page_token: str
) -> registry_service_pb2.ListModelAliasesRequest:
    return registry_service_pb2.ListModelAliasesRequest(
        model_name=model_name or "", page_size=page_size, page_token=page_token
    )


def alias_history(
    model_name: str, alias: str, page_size: int, page_token: str
) -> registry_service_pb2.ListAliasHistoryRequest:
    return registry_service_pb2.ListAliasHistoryRequest(
        model_name=_required("model_name", model_name),
        alias=_required("alias", alias),
        page_size=page_size,
        page_token=page_token,
    )


def rollback_alias(
    model_name: str, alias: str, reason: str, force: bool
) -> registry_service_pb2.RollbackModelAliasRequest:
    return registry_service_pb2.RollbackModelAliasRequest(
        model_name=_required("model_name", model_name),
        alias=_required("alias", alias),
        reason=reason,
        force=force,
    )


def model_lineage(ref: str) -> registry_service_pb2.GetModelLineageRequest:
    return registry_service_pb2.GetModelLineageRequest(model=_required("model", ref))


# Training


def create_training_job(
    *,
    method: str,
    base_model: str,
    dataset: str,
    template_id: str,
    template_version: int,
    hyperparameters: Mapping[str, object] | training_service_pb2.Hyperparameters | None,
    validation_dataset: str,
    teacher_model: str,
    output_name: str,
    idempotency_key: str,
    parent_model: str,
    gpu_count: int = 0,
    distributed_strategy: str = "",
) -> training_service_pb2.CreateTrainingJobRequest:
    method_value = enums.training_method(method)
    if method_value == training_service_pb2.TRAINING_METHOD_DISTILL and not teacher_model:
        raise ValueError("teacher_model is required for method 'distill'")
    if isinstance(hyperparameters, training_service_pb2.Hyperparameters):
        hp = hyperparameters
    else:
        hp = hyperparameters_from_dict(hyperparameters)
    return training_service_pb2.CreateTrainingJobRequest(
        method=method_value,
        base_model=_required("base_model", base_model),
        dataset=_required("dataset", dataset),
        validation_dataset=validation_dataset,
        template_id=template_id,
        template_version=template_version,
        teacher_model=teacher_model,
        hyperparameters=hp,
        output_name=output_name,
        idempotency_key=idempotency_key,
        parent_model=parent_model,
        gpu_count=gpu_count,
        distributed_strategy=enums.distributed_strategy(distributed_strategy),
    )


def get_training_job(job_id: str) -> training_service_pb2.GetTrainingJobRequest:
    return training_service_pb2.GetTrainingJobRequest(id=_required("id", job_id))


def list_training_jobs(
    state: str | None, method: str | None, page_size: int, page_token: str
) -> training_service_pb2.ListTrainingJobsRequest:
    return training_service_pb2.ListTrainingJobsRequest(
        page_size=page_size,
        page_token=page_token,
        state=_optional_state(state),
        method=enums.training_method(method)
        if method
        else training_service_pb2.TRAINING_METHOD_UNSPECIFIED,
    )


def cancel_training_job(job_id: str) -> training_service_pb2.CancelTrainingJobRequest:
    return training_service_pb2.CancelTrainingJobRequest(id=_required("id", job_id))


def pause_training_job(job_id: str) -> training_service_pb2.PauseTrainingJobRequest:
    return training_service_pb2.PauseTrainingJobRequest(id=_required("id", job_id))


def resume_training_job(job_id: str) -> training_service_pb2.ResumeTrainingJobRequest:
    return training_service_pb2.ResumeTrainingJobRequest(id=_required("id", job_id))


def training_job_events(
    job_id: str, page_size: int, page_token: str
) -> training_service_pb2.ListTrainingJobEventsRequest:
    return training_service_pb2.ListTrainingJobEventsRequest(
        id=_required("id", job_id), page_size=page_size, page_token=page_token
    )


def watch_training_job(
    job_id: str, after_sequence: int
) -> training_service_pb2.WatchTrainingJobRequest:
    return training_service_pb2.WatchTrainingJobRequest(
        id=_required("id", job_id), after_sequence=after_sequence
    )


def training_job_checkpoints(
    job_id: str,
) -> training_service_pb2.ListTrainingJobCheckpointsRequest:
    return training_service_pb2.ListTrainingJobCheckpointsRequest(id=_required("id", job_id))


def register_checkpoint(
    job_id: str, step: int, output_name: str
) -> training_service_pb2.RegisterCheckpointRequest:
    return training_service_pb2.RegisterCheckpointRequest(
        id=_required("id", job_id), step=step, output_name=output_name
    )


# Eval


def create_eval_run(
    *,
    model: str,
    dataset: str,
    gate: bool,
    template_id: str,
    template_version: int,
    task: str,
    limit: int,
    generation: eval_service_pb2.GenerationConfig | None,
    idempotency_key: str,
) -> eval_service_pb2.CreateEvalRunRequest:
    if limit < 0:
        raise ValueError(f"limit must be 0 (all) or positive, not {limit}")
    return eval_service_pb2.CreateEvalRunRequest(
        model=_required("model", model),
        dataset=_required("dataset", dataset),
        template_id=template_id,
        template_version=template_version,
        task=task,
        generation=generation,
        limit=limit,
        gate=gate,
        idempotency_key=idempotency_key,
    )


def get_eval_run(run_id: str) -> eval_service_pb2.GetEvalRunRequest:
    return eval_service_pb2.GetEvalRunRequest(id=_required("id", run_id))


def list_eval_runs(
    model: str | None, state: str | None, page_size: int, page_token: str
) -> eval_service_pb2.ListEvalRunsRequest:
    return eval_service_pb2.ListEvalRunsRequest(
        page_size=page_size,
        page_token=page_token,
        model=model or "",
        state=_optional_state(state),
    )


def cancel_eval_run(run_id: str) -> eval_service_pb2.CancelEvalRunRequest:
    return eval_service_pb2.CancelEvalRunRequest(id=_required("id", run_id))


def eval_run_events(
    run_id: str, page_size: int, page_token: str
) -> eval_service_pb2.ListEvalRunEventsRequest:
    return eval_service_pb2.ListEvalRunEventsRequest(
        id=_required("id", run_id), page_size=page_size, page_token=page_token
    )


def watch_eval_run(run_id: str, after_sequence: int) -> eval_service_pb2.WatchEvalRunRequest:
    return eval_service_pb2.WatchEvalRunRequest(
        id=_required("id", run_id), after_sequence=after_sequence
    )


def compare_eval_runs(first: str, second: str) -> eval_service_pb2.CompareEvalRunsRequest:
    return eval_service_pb2.CompareEvalRunsRequest(
        first=_required("first", first), second=_required("second", second)
    )


# Merge jobs


def merge_adapter(
    *, model: str, output_name: str, description: str, idempotency_key: str
) -> training_service_pb2.MergeAdapterRequest:
    return training_service_pb2.MergeAdapterRequest(
        model=_required("model", model),
        output_name=output_name,
        description=description,
        idempotency_key=idempotency_key,
    )


def get_merge_job(job: str) -> training_service_pb2.GetMergeJobRequest:
    return training_service_pb2.GetMergeJobRequest(id=_required("id", job))


def list_merge_jobs(
    model: str | None, state: str | None, page_size: int, page_token: str
) -> training_service_pb2.ListMergeJobsRequest:
    return training_service_pb2.ListMergeJobsRequest(
        page_size=page_size,
        page_token=page_token,
        model=model or "",
        state=_optional_state(state),
    )


def cancel_merge_job(job: str) -> training_service_pb2.CancelMergeJobRequest:
    return training_service_pb2.CancelMergeJobRequest(id=_required("id", job))


def merge_job_events(
    job: str, page_size: int, page_token: str
) -> training_service_pb2.ListMergeJobEventsRequest:
    return training_service_pb2.ListMergeJobEventsRequest(
        id=_required("id", job), page_size=page_size, page_token=page_token
    )


def watch_merge_job(job: str, after_sequence: int) -> training_service_pb2.WatchMergeJobRequest:
    return training_service_pb2.WatchMergeJobRequest(
        id=_required("id", job), after_sequence=after_sequence
    )


# Inference


class Sampling(TypedDict, total=False):
    """How to pick the tokens of an answer; unset values take the server's defaults (64 new
    tokens, greedy)."""

    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    n: int
    """How many answers (1..8); with a seed, answer i samples with seed + i."""
    seed: int
    stop: Sequence[str]


ChatMessages = Sequence[Mapping[str, str] | tuple[str, str] | inference_service_pb2.ChatMessage]
"""A conversation: `{"role": ..., "content": ...}` dicts (as OpenAI's), (role, content) pairs,
or `ChatMessage`s."""


def _chat_message(
    message: Mapping[str, str] | tuple[str, str] | inference_service_pb2.ChatMessage,
) -> inference_service_pb2.ChatMessage:
    if isinstance(message, inference_service_pb2.ChatMessage):
        return message
    if isinstance(message, tuple):
        role, content = message
        return inference_service_pb2.ChatMessage(role=role, content=content)
    return inference_service_pb2.ChatMessage(role=message["role"], content=message["content"])


def generate(
    *,
    model: str,
    prompt: str = "",
    template_id: str = "",
    template_version: int = 0,
    text: str = "",
    messages: ChatMessages = (),
    sampling: Sampling,
) -> inference_service_pb2.GenerateRequest:
    if messages and (prompt or template_id or text):
        raise ValueError("give messages, or a prompt or template, not both")
    if not messages and not prompt and not text:
        raise ValueError("give a prompt, a template_id with text, or messages")
    if text and not template_id:
        raise ValueError("text is rendered into a template: give template_id too")
    return inference_service_pb2.GenerateRequest(
        model=model,
        prompt=prompt,
        template_id=template_id,
        template_version=template_version,
        text=text,
        messages=[_chat_message(m) for m in messages],
        sampling=inference_service_pb2.SamplingParams(
            max_new_tokens=sampling.get("max_new_tokens", 0),
            temperature=sampling.get("temperature", 0.0),
            top_p=sampling.get("top_p", 0.0),
            top_k=sampling.get("top_k", 0),
            repetition_penalty=sampling.get("repetition_penalty", 0.0),
            n=sampling.get("n", 0),
            seed=sampling.get("seed", 0),
            stop=list(sampling.get("stop", ())),
        ),
    )
