# Generated from async_client.py by scripts/unasync.py (make unasync): do not edit.
"""The synchronous SDK: `Client` and its sub-clients, returning the contract's messages
(training jobs and eval runs wrapped in handles that can wait for, watch and cancel them).

```python
from llmops import Client

with Client() as client:  # LLMOPS_ADDRESS / LLMOPS_API_KEY, or arguments
    for template in client.templates.list():
        print(template.template_id)
```

Every call gets the client's default deadline, `authorization` and `x-request-id` metadata,
retries of UNAVAILABLE, and leaves with a typed `LlmopsError` instead of a `grpc.RpcError`.

Generated from `async_client.py`, so both faces take the same arguments and behave the same.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar, Unpack

import grpc

from llmops import _requests as req
from llmops._channel import ConnectionConfig, new_request_id, sync_channel
from llmops._job_base import EventPage, M
from llmops._pagination import paginate
from llmops._sync_jobs import (
    EvalRunHandle,
    JobOps,
    MergeJobHandle,
    TrainingJobHandle,
)
from llmops._version import USER_AGENT
from llmops.errors import REQUEST_ID_KEY, from_rpc_error
from llmops.settings import ClientSettings
from llmops.v1 import (
    eval_service_pb2,
    eval_service_pb2_grpc,
    inference_service_pb2,
    inference_service_pb2_grpc,
    jobs_pb2,
    registry_service_pb2,
    registry_service_pb2_grpc,
    training_service_pb2,
    training_service_pb2_grpc,
)

__all__ = [
    "Client",
    "Datasets",
    "Eval",
    "EvalRunHandle",
    "Inference",
    "MergeJobHandle",
    "Merges",
    "Models",
    "Templates",
    "Training",
    "TrainingJobHandle",
]

Req = TypeVar("Req")
Resp = TypeVar("Resp")
H = TypeVar("H")


class _Transport:
    """Sends calls with the default deadline and a request id, converting failures."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    def unary(
        self,
        method: grpc.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        timeout: float | None = None,
    ) -> Resp:
        request_id = new_request_id()
        try:
            return method(
                request,
                timeout=timeout if timeout is not None else self.timeout,
                metadata=((REQUEST_ID_KEY, request_id),),
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err, request_id=request_id) from err

    def stream_unary(
        self,
        method: grpc.StreamUnaryMultiCallable[Req, Resp],
        requests: Iterator[Req],
        timeout: float,
    ) -> Resp:
        request_id = new_request_id()
        try:
            return method(requests, timeout=timeout, metadata=((REQUEST_ID_KEY, request_id),))
        except grpc.RpcError as err:
            raise from_rpc_error(err, request_id=request_id) from err

    def unary_stream(
        self,
        method: grpc.UnaryStreamMultiCallable[Req, Resp],
        request: Req,
        timeout: float | None,
    ) -> Iterator[Resp]:
        """Yields a server stream's messages; `timeout=None` means no deadline (watches).

        The call starts at the first iteration; failures to start it and failures while
        reading it leave as the same typed errors.
        """
        request_id = new_request_id()
        try:
            call = method(request, timeout=timeout, metadata=((REQUEST_ID_KEY, request_id),))
        except grpc.RpcError as err:
            raise from_rpc_error(err, request_id=request_id) from err
        try:
            yield from call
        except grpc.RpcError as err:
            raise from_rpc_error(err, request_id=request_id) from err
        finally:
            cancel: Callable[[], object] = call.cancel  # untyped in grpc-stubs' sync call
            cancel()  # a caller that stops early must not leave the stream open


class Templates:
    """Prompt templates in the registry (versioned; each must contain `{text}`)."""

    def __init__(self, transport: _Transport, stub: registry_service_pb2_grpc.RegistryServiceStub):
        self._t = transport
        self._stub = stub

    def list(self, *, page_size: int = 0) -> Iterator[registry_service_pb2.PromptTemplate]:
        """The latest version of every template, ordered by id, across all pages."""

        def fetch(token: str) -> tuple[Sequence[registry_service_pb2.PromptTemplate], str]:
            resp = self._t.unary(
                self._stub.ListPromptTemplates, req.list_templates(page_size, token)
            )
            return resp.prompt_templates, resp.next_page_token

        return paginate(fetch)

    def get(self, template_id: str, version: int = 0) -> registry_service_pb2.PromptTemplate:
        """One template: its latest version, or `version`."""
        request = req.get_template(template_id, version)
        return self._t.unary(self._stub.GetPromptTemplate, request)

    def versions(
        self, template_id: str, *, page_size: int = 0
    ) -> Iterator[registry_service_pb2.PromptTemplate]:
        """Every version of one template, newest first."""
        request = req.template_versions(template_id, page_size, "")

        def fetch(token: str) -> tuple[Sequence[registry_service_pb2.PromptTemplate], str]:
            request.page_token = token
            resp = self._t.unary(self._stub.ListPromptTemplateVersions, request)
            return resp.prompt_templates, resp.next_page_token

        return paginate(fetch)

    def create(
        self, template_id: str, template: str, description: str = "", task: str = ""
    ) -> registry_service_pb2.PromptTemplate:
        """Creates a template, or the next version of an existing one."""
        request = req.create_template(template_id, template, description, task)
        return self._t.unary(self._stub.CreatePromptTemplate, request)

    def validate(self, template: str) -> registry_service_pb2.ValidatePromptTemplateResponse:
        """Asks the server whether a template text is valid, without storing it."""
        request = req.validate_template(template)
        return self._t.unary(self._stub.ValidatePromptTemplate, request)


def _read_chunks(source: req.DatasetSource, chunk_size: int) -> Iterator[bytes]:
    """Chunks of the upload, read as they are sent."""
    if isinstance(source, bytes):
        for start in range(0, len(source), chunk_size):
            yield source[start : start + chunk_size]
        return
    with open(source, "rb") as f:
        while chunk := f.read(chunk_size):
            yield chunk


class Datasets:
    """JSONL datasets: uploaded in chunks, validated and content-hashed by the server."""

    def __init__(self, transport: _Transport, stub: registry_service_pb2_grpc.RegistryServiceStub):
        self._t = transport
        self._stub = stub

    def upload(
        self,
        path_or_bytes: str | os.PathLike[str] | bytes,
        kind: str,
        name: str = "",
        description: str = "",
        chunk_size: int = req.DEFAULT_CHUNK_SIZE,
        *,
        timeout: float | None = None,
    ) -> registry_service_pb2.UploadDatasetResponse:
        """Uploads a JSONL file (or its bytes) as a dataset of `kind` (sft, preference, eval).

        An identical upload returns the existing dataset (`already_existed`). `timeout=None`
        gives the default deadline plus one second per MiB, so big files are not cut off.
        """
        first = req.upload_metadata(kind, name, description)
        chunk_size = req.check_chunk_size(chunk_size)
        size = req.source_size(path_or_bytes)
        deadline = timeout if timeout is not None else self._t.timeout + size / (1024 * 1024)

        def messages() -> Iterator[registry_service_pb2.UploadDatasetRequest]:
            yield first
            for chunk in _read_chunks(path_or_bytes, chunk_size):
                yield req.chunk_message(chunk)

        return self._t.stream_unary(self._stub.UploadDataset, messages(), deadline)

    def get(self, ref: str) -> registry_service_pb2.Dataset:
        """A dataset by id or name."""
        return self._t.unary(self._stub.GetDataset, req.get_dataset(ref))

    def list(
        self, kind: str | None = None, *, page_size: int = 0
    ) -> Iterator[registry_service_pb2.Dataset]:
        """Every dataset (of `kind`, when given), newest first, across all pages."""
        req.list_datasets(kind, page_size, "")  # checks `kind` now, not at first iteration

        def fetch(token: str) -> tuple[Sequence[registry_service_pb2.Dataset], str]:
            resp = self.list_page(page_size, token, kind)
            return resp.datasets, resp.next_page_token

        return paginate(fetch)

    def list_page(
        self, page_size: int = 0, page_token: str = "", kind: str | None = None
    ) -> registry_service_pb2.ListDatasetsResponse:
        """One page of datasets, for callers that keep the page token themselves."""
        request = req.list_datasets(kind, page_size, page_token)
        return self._t.unary(self._stub.ListDatasets, request)

    def delete(self, ref: str) -> None:
        """Deletes a dataset; refused (FailedPrecondition) while a job uses it."""
        self._t.unary(self._stub.DeleteDataset, req.delete_dataset(ref))


class Models:
    """Registered models (base, adapter, merged), their aliases and lineage; `merge` folds an
    adapter into its base as a job (`client.merges` gets, lists and waits for those)."""

    def __init__(
        self,
        transport: _Transport,
        stub: registry_service_pb2_grpc.RegistryServiceStub,
        merges: Merges,
    ):
        self._t = transport
        self._stub = stub
        self._merges = merges

    def create(
        self,
        name: str,
        uri: str,
        kind: str = "base",
        description: str = "",
        *,
        base_model: str = "",
        origin: registry_service_pb2.ModelOrigin | None = None,
        metrics: Mapping[str, float] | None = None,
        idempotency_key: str = "",
        trust_remote_code: bool = False,
    ) -> registry_service_pb2.Model:
        """Registers a model from a Hugging Face model directory, URL or hub id.

        `trust_remote_code` lets the code the model ships (its config's `auto_map`) run
        wherever it is loaded; only an admin key may set it."""
        request = req.create_model(
            name=name,
            uri=uri,
            kind=kind,
            description=description,
            base_model=base_model,
            origin=origin,
            metrics=metrics,
            idempotency_key=idempotency_key,
            trust_remote_code=trust_remote_code,
        )
        return self._t.unary(self._stub.CreateModel, request)

    def get(self, ref: str) -> registry_service_pb2.Model:
        """A model by id, name (its newest version) or `name@alias`."""
        return self._t.unary(self._stub.GetModel, req.get_model(ref))

    def list(
        self,
        kind: str | None = None,
        name: str | None = None,
        *,
        base_model: str | None = None,
        page_size: int = 0,
    ) -> Iterator[registry_service_pb2.Model]:
        """Every model matching the filters, newest first, across all pages."""
        request = req.list_models(kind, name, base_model, page_size, "")

        def fetch(token: str) -> tuple[Sequence[registry_service_pb2.Model], str]:
            request.page_token = token
            resp = self._t.unary(self._stub.ListModels, request)
            return resp.models, resp.next_page_token

        return paginate(fetch)

    def delete(self, ref: str) -> None:
        """Deletes a model; refused while an alias or another model depends on it."""
        self._t.unary(self._stub.DeleteModel, req.delete_model(ref))

    def set_alias(
        self, model: str, alias: str, reason: str = "", force: bool = False
    ) -> registry_service_pb2.ModelAlias:
        """Points `alias` of the model's name at the model (moving it if it exists)."""
        request = req.set_alias(model, alias, reason, force)
        return self._t.unary(self._stub.SetModelAlias, request)

    def delete_alias(self, model_name: str, alias: str) -> None:
        """Removes an alias."""
        self._t.unary(self._stub.DeleteModelAlias, req.delete_alias(model_name, alias))

    def aliases(
        self, model_name: str | None = None, *, page_size: int = 0
    ) -> Iterator[registry_service_pb2.ModelAlias]:
        """The aliases of one model name, or of every name."""

        def fetch(token: str) -> tuple[Sequence[registry_service_pb2.ModelAlias], str]:
            request = req.list_aliases(model_name, page_size, token)
            resp = self._t.unary(self._stub.ListModelAliases, request)
            return resp.aliases, resp.next_page_token

        return paginate(fetch)

    def alias_history(
        self, model_name: str, alias: str, *, page_size: int = 0
    ) -> Iterator[registry_service_pb2.AliasMove]:
        """Every move of an alias, newest first."""
        request = req.alias_history(model_name, alias, page_size, "")

        def fetch(token: str) -> tuple[Sequence[registry_service_pb2.AliasMove], str]:
            request.page_token = token
            resp = self._t.unary(self._stub.ListAliasHistory, request)
            return resp.moves, resp.next_page_token

        return paginate(fetch)

    def rollback(
        self, model_name: str, alias: str, reason: str = "", force: bool = False
    ) -> registry_service_pb2.ModelAlias:
        """Moves an alias back to where it pointed before its last move."""
        request = req.rollback_alias(model_name, alias, reason, force)
        return self._t.unary(self._stub.RollbackModelAlias, request)

    def lineage(self, ref: str) -> registry_service_pb2.ModelLineage:
        """Where a model came from and what became of it."""
        return self._t.unary(self._stub.GetModelLineage, req.model_lineage(ref))

    def merge(
        self,
        model: str,
        output_name: str = "",
        description: str = "",
        *,
        idempotency_key: str = "",
    ) -> MergeJobHandle:
        """Queues a merge of the adapter `model` into its base; returns the job's handle.

        The worker saves the merged weights as safetensors and registers them as a `merged`
        model named `output_name` (default `<adapter name>-merged`) whose lineage points at the
        adapter; `handle.wait().result_model` is its id. The same `idempotency_key`
        returns the same job.
        """
        return self._merges.create(model, output_name, description, idempotency_key=idempotency_key)


class _AsyncJobCalls(ABC, Generic[M, H]):
    """The calls by id that training jobs, eval runs and merge jobs answer the same way."""

    _jobs: JobOps[M]

    @abstractmethod
    def _handle(self, message: M) -> H: ...

    def get(self, id: str) -> H:
        """One job or run, with its state, progress and latest results, as a handle."""
        return self._handle(self._jobs.get(id))

    def cancel(self, id: str) -> M:
        """Cancels it: a queued or paused one at once, a running one at its next step."""
        return self._jobs.cancel(id)

    def events(self, id: str, *, page_size: int = 0) -> Iterator[jobs_pb2.JobEvent]:
        """Its events so far, oldest first."""
        return self._jobs.events(id, page_size)

    def watch(
        self, id: str, after_sequence: int = 0, *, timeout: float | None = None
    ) -> Iterator[jobs_pb2.JobEvent]:
        """Follows its events live until it ends; no deadline unless `timeout` is given.

        One stream: resume a broken watch with `after_sequence` set to the last event's
        `sequence`, or use `get(id).watch()`, which reconnects by itself.
        """
        return self._jobs.watch(id, after_sequence, timeout)

    def wait(self, id: str, timeout: float | None = None, *, poll_interval: float = 2.0) -> M:
        """Polls until it succeeds, fails or is cancelled, and returns its message."""
        return self._jobs.wait(id, timeout, poll_interval)


class Training(_AsyncJobCalls[training_service_pb2.TrainingJob, TrainingJobHandle]):
    """Fine-tuning jobs (LoRA SFT, QLoRA, DPO, distillation), run by workers.

    `create` and `get` return `TrainingJobHandle`s and `list` yields them (they refresh,
    wait, watch, cancel, pause and resume themselves); the calls by id return the plain
    `TrainingJob` message.
    """

    def __init__(self, transport: _Transport, stub: training_service_pb2_grpc.TrainingServiceStub):
        self._t = transport
        self._stub = stub

        def events_page(id: str, size: int, token: str) -> EventPage:
            request = req.training_job_events(id, size, token)
            resp = transport.unary(stub.ListTrainingJobEvents, request)
            return resp.events, resp.next_page_token

        self._jobs: JobOps[training_service_pb2.TrainingJob] = JobOps(
            get=lambda id: transport.unary(stub.GetTrainingJob, req.get_training_job(id)),
            cancel=lambda id: transport.unary(stub.CancelTrainingJob, req.cancel_training_job(id)),
            events_page=events_page,
            watch=lambda id, after, timeout: transport.unary_stream(
                stub.WatchTrainingJob, req.watch_training_job(id, after), timeout
            ),
        )

    def _handle(self, message: training_service_pb2.TrainingJob) -> TrainingJobHandle:
        return TrainingJobHandle(message, self._jobs, self)

    def create(
        self,
        method: str,
        base_model: str,
        dataset: str,
        template_id: str = "",
        hyperparameters: Mapping[str, object] | training_service_pb2.Hyperparameters | None = None,
        validation_dataset: str = "",
        teacher_model: str = "",
        output_name: str = "",
        idempotency_key: str = "",
        parent_model: str = "",
        *,
        template_version: int = 0,
        gpu_count: int = 0,
        distributed_strategy: str = "",
    ) -> TrainingJobHandle:
        """Queues a job; `method` is sft, qlora, dpo or distill. Returns its handle.

        `hyperparameters` is a dict with the libraries' names (`max_steps`, `lora_r`, ...);
        unset or `"auto"` values are chosen by the platform. Unknown names raise ValueError
        before anything is sent. The same `idempotency_key` returns the same job.
        `gpu_count` above 1 trains on that many GPUs of one worker (`distributed_strategy`
        "ddp", the default, or "fsdp" for bases too large for one GPU).
        """
        request = req.create_training_job(
            method=method,
            base_model=base_model,
            dataset=dataset,
            template_id=template_id,
            template_version=template_version,
            hyperparameters=hyperparameters,
            validation_dataset=validation_dataset,
            teacher_model=teacher_model,
            output_name=output_name,
            idempotency_key=idempotency_key,
            parent_model=parent_model,
            gpu_count=gpu_count,
            distributed_strategy=distributed_strategy,
        )
        return self._handle(self._t.unary(self._stub.CreateTrainingJob, request))

    def list(
        self, state: str | None = None, method: str | None = None, *, page_size: int = 0
    ) -> Iterator[TrainingJobHandle]:
        """Every job matching the filters, newest first, as handles."""
        request = req.list_training_jobs(state, method, page_size, "")

        def fetch(token: str) -> tuple[Sequence[TrainingJobHandle], str]:
            request.page_token = token
            resp = self._t.unary(self._stub.ListTrainingJobs, request)
            return [self._handle(m) for m in resp.training_jobs], resp.next_page_token

        return paginate(fetch)

    def pause(self, id: str) -> training_service_pb2.TrainingJob:
        """Pauses a job: a running one checkpoints and frees its worker."""
        return self._t.unary(self._stub.PauseTrainingJob, req.pause_training_job(id))

    def resume(self, id: str) -> training_service_pb2.TrainingJob:
        """Resumes a paused job from its last checkpoint."""
        return self._t.unary(self._stub.ResumeTrainingJob, req.resume_training_job(id))

    def checkpoints(self, id: str) -> Sequence[jobs_pb2.Checkpoint]:
        """The job's checkpoints, oldest first."""
        request = req.training_job_checkpoints(id)
        resp = self._t.unary(self._stub.ListTrainingJobCheckpoints, request)
        return tuple(resp.checkpoints)

    def register_checkpoint(
        self, id: str, step: int, output_name: str = ""
    ) -> registry_service_pb2.Model:
        """Registers one checkpoint of the job as a model, with lineage to the job and step."""
        request = req.register_checkpoint(id, step, output_name)
        return self._t.unary(self._stub.RegisterCheckpoint, request)


class Eval(_AsyncJobCalls[eval_service_pb2.EvalRun, EvalRunHandle]):
    """Evaluation runs against held-out data, optionally judged by the gates.

    `create` and `get` return `EvalRunHandle`s and `list` yields them; the calls by id
    return the `EvalRun`.
    """

    def __init__(self, transport: _Transport, stub: eval_service_pb2_grpc.EvalServiceStub):
        self._t = transport
        self._stub = stub

        def events_page(id: str, size: int, token: str) -> EventPage:
            request = req.eval_run_events(id, size, token)
            resp = transport.unary(stub.ListEvalRunEvents, request)
            return resp.events, resp.next_page_token

        self._jobs: JobOps[eval_service_pb2.EvalRun] = JobOps(
            get=lambda id: transport.unary(stub.GetEvalRun, req.get_eval_run(id)),
            cancel=lambda id: transport.unary(stub.CancelEvalRun, req.cancel_eval_run(id)),
            events_page=events_page,
            watch=lambda id, after, timeout: transport.unary_stream(
                stub.WatchEvalRun, req.watch_eval_run(id, after), timeout
            ),
        )

    def _handle(self, message: eval_service_pb2.EvalRun) -> EvalRunHandle:
        return EvalRunHandle(message, self._jobs)

    def create(
        self,
        model: str,
        dataset: str,
        gate: bool = False,
        template_id: str = "",
        task: str = "",
        limit: int = 0,
        idempotency_key: str = "",
        *,
        template_version: int = 0,
        generation: eval_service_pb2.GenerationConfig | None = None,
    ) -> EvalRunHandle:
        """Queues an eval run of `model` on `dataset`; `gate=True` judges it by the gates."""
        request = req.create_eval_run(
            model=model,
            dataset=dataset,
            gate=gate,
            template_id=template_id,
            template_version=template_version,
            task=task,
            limit=limit,
            generation=generation,
            idempotency_key=idempotency_key,
        )
        return self._handle(self._t.unary(self._stub.CreateEvalRun, request))

    def list(
        self, model: str | None = None, state: str | None = None, *, page_size: int = 0
    ) -> Iterator[EvalRunHandle]:
        """Every run matching the filters, newest first, as handles."""
        request = req.list_eval_runs(model, state, page_size, "")

        def fetch(token: str) -> tuple[Sequence[EvalRunHandle], str]:
            request.page_token = token
            resp = self._t.unary(self._stub.ListEvalRuns, request)
            return [self._handle(m) for m in resp.eval_runs], resp.next_page_token

        return paginate(fetch)

    def compare(self, first: str, second: str) -> eval_service_pb2.CompareEvalRunsResponse:
        """Two runs side by side, per task and metric (`second - first` as delta)."""
        request = req.compare_eval_runs(first, second)
        return self._t.unary(self._stub.CompareEvalRuns, request)


class Merges(_AsyncJobCalls[training_service_pb2.MergeJob, MergeJobHandle]):
    """Merge jobs, which fold an adapter into its base and register the merged model.

    `create` (also `client.models.merge`) and `get` return `MergeJobHandle`s and `list`
    yields them; the calls by id return the `MergeJob` message.
    """

    def __init__(self, transport: _Transport, stub: training_service_pb2_grpc.TrainingServiceStub):
        self._t = transport
        self._stub = stub

        def events_page(id: str, size: int, token: str) -> EventPage:
            request = req.merge_job_events(id, size, token)
            resp = transport.unary(stub.ListMergeJobEvents, request)
            return resp.events, resp.next_page_token

        self._jobs: JobOps[training_service_pb2.MergeJob] = JobOps(
            get=lambda id: transport.unary(stub.GetMergeJob, req.get_merge_job(id)),
            cancel=lambda id: transport.unary(stub.CancelMergeJob, req.cancel_merge_job(id)),
            events_page=events_page,
            watch=lambda id, after, timeout: transport.unary_stream(
                stub.WatchMergeJob, req.watch_merge_job(id, after), timeout
            ),
        )

    def _handle(self, message: training_service_pb2.MergeJob) -> MergeJobHandle:
        return MergeJobHandle(message, self._jobs)

    def create(
        self,
        model: str,
        output_name: str = "",
        description: str = "",
        *,
        idempotency_key: str = "",
    ) -> MergeJobHandle:
        """Queues a merge of the adapter `model` (id, name or `name@alias`) into its base."""
        request = req.merge_adapter(
            model=model,
            output_name=output_name,
            description=description,
            idempotency_key=idempotency_key,
        )
        return self._handle(self._t.unary(self._stub.MergeAdapter, request))

    def list(
        self, model: str | None = None, state: str | None = None, *, page_size: int = 0
    ) -> Iterator[MergeJobHandle]:
        """Every merge job matching the filters (the adapter, the state), newest first."""
        request = req.list_merge_jobs(model, state, page_size, "")

        def fetch(token: str) -> tuple[Sequence[MergeJobHandle], str]:
            request.page_token = token
            resp = self._t.unary(self._stub.ListMergeJobs, request)
            return [self._handle(m) for m in resp.merge_jobs], resp.next_page_token

        return paginate(fetch)


class Inference:
    """Text generation with a base model or adapter, optionally through a prompt template."""

    def __init__(
        self,
        transport: _Transport,
        stub: inference_service_pb2_grpc.InferenceServiceStub,
    ):
        self._t = transport
        self._stub = stub

    def generate(
        self,
        model: str = "",
        prompt: str = "",
        *,
        template_id: str = "",
        text: str = "",
        template_version: int = 0,
        messages: req.ChatMessages = (),
        timeout: float | None = None,
        **sampling: Unpack[req.Sampling],
    ) -> inference_service_pb2.GenerateResponse:
        """A completion for `prompt`, for `text` rendered into `template_id`, or for a
        conversation (`messages`); `n` answers are in `.choices`, the first also in `.text`."""
        request = req.generate(
            model=model,
            prompt=prompt,
            template_id=template_id,
            template_version=template_version,
            text=text,
            messages=messages,
            sampling=sampling,
        )
        return self._t.unary(self._stub.Generate, request, timeout)

    def chat(
        self,
        messages: req.ChatMessages,
        model: str = "",
        *,
        timeout: float | None = None,
        **sampling: Unpack[req.Sampling],
    ) -> inference_service_pb2.GenerateResponse:
        """The assistant's next turn in a conversation, rendered with the model's chat
        template (`[{"role": "user", "content": ...}]`, as OpenAI's API takes it)."""
        return self.generate(model, messages=messages, timeout=timeout, **sampling)

    def stream(
        self,
        model: str = "",
        prompt: str = "",
        *,
        template_id: str = "",
        text: str = "",
        template_version: int = 0,
        messages: req.ChatMessages = (),
        timeout: float | None = None,
        **sampling: Unpack[req.Sampling],
    ) -> Iterator[inference_service_pb2.StreamGenerateResponse]:
        """Like `generate`, yielding text deltas (`.text_delta`, `.index` of the answer) as they
        are produced; the last message carries the finish reason and usage."""
        request = inference_service_pb2.StreamGenerateRequest(
            request=req.generate(
                model=model,
                prompt=prompt,
                template_id=template_id,
                template_version=template_version,
                text=text,
                messages=messages,
                sampling=sampling,
            )
        )
        deadline = timeout if timeout is not None else self._t.timeout
        return self._t.unary_stream(self._stub.StreamGenerate, request, deadline)

    def served_models(
        self, *, timeout: float | None = None
    ) -> inference_service_pb2.ListServedModelsResponse:
        """What the engine has loaded: each base with its adapters (least recently used
        first) and its running and queued requests. This asks the one server the channel reaches
        (`replica` empty); the REST gateway's `GET /v1/served-models`, routing over several
        replicas, lists every replica's bases, each with its `replica`."""
        request = inference_service_pb2.ListServedModelsRequest()
        return self._t.unary(self._stub.ListServedModels, request, timeout)


class Client:
    """Synchronous client for all four services over one channel.

    Arguments left out come from `settings`, by default `ClientSettings.from_env()`
    (`LLMOPS_ADDRESS`, `LLMOPS_API_KEY`, `LLMOPS_TLS`, `LLMOPS_TLS_CA_FILE`, `LLMOPS_TIMEOUT`).
    Close it with `client.close()` or use `with`.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        api_key: str | None = None,
        tls: bool | None = None,
        root_certificates: bytes | None = None,
        timeout: float | None = None,
        settings: ClientSettings | None = None,
        options: Sequence[tuple[str, Any]] | None = None,
    ) -> None:
        self._config = ConnectionConfig.resolve(
            address=address,
            api_key=api_key,
            tls=tls,
            root_certificates=root_certificates,
            timeout=timeout,
            settings=settings,
            options=options,
            user_agent=USER_AGENT,
        )
        self._channel = sync_channel(self._config)
        transport = _Transport(self._config.timeout)
        registry = registry_service_pb2_grpc.RegistryServiceStub(self._channel)
        training = training_service_pb2_grpc.TrainingServiceStub(self._channel)
        self.templates = Templates(transport, registry)
        self.datasets = Datasets(transport, registry)
        self.merges = Merges(transport, training)
        self.models = Models(transport, registry, self.merges)
        self.training = Training(transport, training)
        self.eval = Eval(transport, eval_service_pb2_grpc.EvalServiceStub(self._channel))
        self.inference = Inference(
            transport, inference_service_pb2_grpc.InferenceServiceStub(self._channel)
        )

    @property
    def address(self) -> str:
        """The `host:port` this client talks to."""
        return self._config.address

    @property
    def timeout(self) -> float:
        """The default deadline of every call, in seconds."""
        return self._config.timeout

    @property
    def channel(self) -> grpc.Channel:
        """The underlying channel (with auth, request ids and retries), for other stubs."""
        return self._channel

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(address={self.address!r})"
