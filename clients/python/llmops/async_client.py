"""The asyncio SDK: `AsyncClient`, the `grpc.aio` twin of `Client` with the same sub-clients.

```python
from llmops import AsyncClient

async with AsyncClient() as client:  # LLMOPS_ADDRESS / LLMOPS_API_KEY, or arguments
    async for template in client.templates.list():
        print(template.template_id)
```

Every call gets the client's default deadline, `authorization` and `x-request-id` metadata,
retries of UNAVAILABLE, and leaves with a typed `LlmopsError` instead of a `grpc.RpcError`.
Create it inside a running event loop.

This file is the source of the sync client too: `scripts/unasync.py` writes `client.py` from
it (`make unasync`), so both faces take the same arguments and behave the same.
"""

from __future__ import annotations

import asyncio
import os
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar, Unpack

import grpc

from llmops import _requests as req
from llmops._async_jobs import (
    AsyncEvalRunHandle,
    AsyncJobOps,
    AsyncMergeJobHandle,
    AsyncTrainingJobHandle,
)
from llmops._channel import ConnectionConfig, aio_channel, new_request_id
from llmops._job_base import EventPage, M
from llmops._pagination import apaginate
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
    "AsyncClient",
    "AsyncDatasets",
    "AsyncEval",
    "AsyncEvalRunHandle",
    "AsyncInference",
    "AsyncMergeJobHandle",
    "AsyncMerges",
    "AsyncModels",
    "AsyncTemplates",
    "AsyncTraining",
    "AsyncTrainingJobHandle",
]

Req = TypeVar("Req")
Resp = TypeVar("Resp")
H = TypeVar("H")


class _AioTransport:
    """Sends calls with the default deadline and a request id, converting failures."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    async def unary(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        timeout: float | None = None,
    ) -> Resp:
        request_id = new_request_id()
        try:
            return await method(
                request,
                timeout=timeout if timeout is not None else self.timeout,
                metadata=((REQUEST_ID_KEY, request_id),),
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err, request_id=request_id) from err

    async def stream_unary(
        self,
        method: grpc.aio.StreamUnaryMultiCallable[Req, Resp],
        requests: AsyncIterator[Req],
        timeout: float,
    ) -> Resp:
        request_id = new_request_id()
        try:
            return await method(requests, timeout=timeout, metadata=((REQUEST_ID_KEY, request_id),))
        except grpc.RpcError as err:
            raise from_rpc_error(err, request_id=request_id) from err

    async def unary_stream(
        self,
        method: grpc.aio.UnaryStreamMultiCallable[Req, Resp],
        request: Req,
        timeout: float | None,
    ) -> AsyncIterator[Resp]:
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
            async for item in call:
                yield item
        except grpc.RpcError as err:
            raise from_rpc_error(err, request_id=request_id) from err
        finally:
            cancel: Callable[[], object] = call.cancel  # untyped in grpc-stubs' sync call
            cancel()  # a caller that stops early must not leave the stream open


class AsyncTemplates:
    """Prompt templates in the registry (versioned; each must contain `{text}`)."""

    def __init__(
        self, transport: _AioTransport, stub: registry_service_pb2_grpc.RegistryServiceAsyncStub
    ):
        self._t = transport
        self._stub = stub

    def list(self, *, page_size: int = 0) -> AsyncIterator[registry_service_pb2.PromptTemplate]:
        """The latest version of every template, ordered by id, across all pages."""

        async def fetch(token: str) -> tuple[Sequence[registry_service_pb2.PromptTemplate], str]:
            resp = await self._t.unary(
                self._stub.ListPromptTemplates, req.list_templates(page_size, token)
            )
            return resp.prompt_templates, resp.next_page_token

        return apaginate(fetch)

    async def get(self, template_id: str, version: int = 0) -> registry_service_pb2.PromptTemplate:
        """One template: its latest version, or `version`."""
        request = req.get_template(template_id, version)
        return await self._t.unary(self._stub.GetPromptTemplate, request)

    def versions(
        self, template_id: str, *, page_size: int = 0
    ) -> AsyncIterator[registry_service_pb2.PromptTemplate]:
        """Every version of one template, newest first."""
        request = req.template_versions(template_id, page_size, "")

        async def fetch(token: str) -> tuple[Sequence[registry_service_pb2.PromptTemplate], str]:
            request.page_token = token
            resp = await self._t.unary(self._stub.ListPromptTemplateVersions, request)
            return resp.prompt_templates, resp.next_page_token

        return apaginate(fetch)

    async def create(
        self, template_id: str, template: str, description: str = "", task: str = ""
    ) -> registry_service_pb2.PromptTemplate:
        """Creates a template, or the next version of an existing one."""
        request = req.create_template(template_id, template, description, task)
        return await self._t.unary(self._stub.CreatePromptTemplate, request)

    async def validate(self, template: str) -> registry_service_pb2.ValidatePromptTemplateResponse:
        """Asks the server whether a template text is valid, without storing it."""
        request = req.validate_template(template)
        return await self._t.unary(self._stub.ValidatePromptTemplate, request)


async def _read_chunks(source: req.DatasetSource, chunk_size: int) -> AsyncIterator[bytes]:
    """Chunks of the upload; the async client reads them in a thread, so its loop keeps going."""
    if isinstance(source, bytes):
        for start in range(0, len(source), chunk_size):
            yield source[start : start + chunk_size]
        return
    with open(source, "rb") as f:
        while chunk := await asyncio.to_thread(f.read, chunk_size):
            yield chunk


class AsyncDatasets:
    """JSONL datasets: uploaded in chunks, validated and content-hashed by the server."""

    def __init__(
        self, transport: _AioTransport, stub: registry_service_pb2_grpc.RegistryServiceAsyncStub
    ):
        self._t = transport
        self._stub = stub

    async def upload(
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

        async def messages() -> AsyncIterator[registry_service_pb2.UploadDatasetRequest]:
            yield first
            async for chunk in _read_chunks(path_or_bytes, chunk_size):
                yield req.chunk_message(chunk)

        return await self._t.stream_unary(self._stub.UploadDataset, messages(), deadline)

    async def get(self, ref: str) -> registry_service_pb2.Dataset:
        """A dataset by id or name."""
        return await self._t.unary(self._stub.GetDataset, req.get_dataset(ref))

    def list(
        self, kind: str | None = None, *, page_size: int = 0
    ) -> AsyncIterator[registry_service_pb2.Dataset]:
        """Every dataset (of `kind`, when given), newest first, across all pages."""
        req.list_datasets(kind, page_size, "")  # checks `kind` now, not at first iteration

        async def fetch(token: str) -> tuple[Sequence[registry_service_pb2.Dataset], str]:
            resp = await self.list_page(page_size, token, kind)
            return resp.datasets, resp.next_page_token

        return apaginate(fetch)

    async def list_page(
        self, page_size: int = 0, page_token: str = "", kind: str | None = None
    ) -> registry_service_pb2.ListDatasetsResponse:
        """One page of datasets, for callers that keep the page token themselves."""
        request = req.list_datasets(kind, page_size, page_token)
        return await self._t.unary(self._stub.ListDatasets, request)

    async def delete(self, ref: str) -> None:
        """Deletes a dataset; refused (FailedPrecondition) while a job uses it."""
        await self._t.unary(self._stub.DeleteDataset, req.delete_dataset(ref))


class AsyncModels:
    """Registered models (base, adapter, merged), their aliases and lineage; `merge` folds an
    adapter into its base as a job (`client.merges` gets, lists and waits for those)."""

    def __init__(
        self,
        transport: _AioTransport,
        stub: registry_service_pb2_grpc.RegistryServiceAsyncStub,
        merges: AsyncMerges,
    ):
        self._t = transport
        self._stub = stub
        self._merges = merges

    async def create(
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
        return await self._t.unary(self._stub.CreateModel, request)

    async def get(self, ref: str) -> registry_service_pb2.Model:
        """A model by id, name (its newest version) or `name@alias`."""
        return await self._t.unary(self._stub.GetModel, req.get_model(ref))

    def list(
        self,
        kind: str | None = None,
        name: str | None = None,
        *,
        base_model: str | None = None,
        page_size: int = 0,
    ) -> AsyncIterator[registry_service_pb2.Model]:
        """Every model matching the filters, newest first, across all pages."""
        request = req.list_models(kind, name, base_model, page_size, "")

        async def fetch(token: str) -> tuple[Sequence[registry_service_pb2.Model], str]:
            request.page_token = token
            resp = await self._t.unary(self._stub.ListModels, request)
            return resp.models, resp.next_page_token

        return apaginate(fetch)

    async def delete(self, ref: str) -> None:
        """Deletes a model; refused while an alias or another model depends on it."""
        await self._t.unary(self._stub.DeleteModel, req.delete_model(ref))

    async def set_alias(
        self, model: str, alias: str, reason: str = "", force: bool = False
    ) -> registry_service_pb2.ModelAlias:
        """Points `alias` of the model's name at the model (moving it if it exists)."""
        request = req.set_alias(model, alias, reason, force)
        return await self._t.unary(self._stub.SetModelAlias, request)

    async def delete_alias(self, model_name: str, alias: str) -> None:
        """Removes an alias."""
        await self._t.unary(self._stub.DeleteModelAlias, req.delete_alias(model_name, alias))

    def aliases(
        self, model_name: str | None = None, *, page_size: int = 0
    ) -> AsyncIterator[registry_service_pb2.ModelAlias]:
        """The aliases of one model name, or of every name."""

        async def fetch(token: str) -> tuple[Sequence[registry_service_pb2.ModelAlias], str]:
            request = req.list_aliases(model_name, page_size, token)
            resp = await self._t.unary(self._stub.ListModelAliases, request)
            return resp.aliases, resp.next_page_token

        return apaginate(fetch)

    def alias_history(
        self, model_name: str, alias: str, *, page_size: int = 0
    ) -> AsyncIterator[registry_service_pb2.AliasMove]:
        """Every move of an alias, newest first."""
        request = req.alias_history(model_name, alias, page_size, "")

        async def fetch(token: str) -> tuple[Sequence[registry_service_pb2.AliasMove], str]:
            request.page_token = token
            resp = await self._t.unary(self._stub.ListAliasHistory, request)
            return resp.moves, resp.next_page_token

        return apaginate(fetch)

    async def rollback(
        self, model_name: str, alias: str, reason: str = "", force: bool = False
    ) -> registry_service_pb2.ModelAlias:
        """Moves an alias back to where it pointed before its last move."""
        request = req.rollback_alias(model_name, alias, reason, force)
        return await self._t.unary(self._stub.RollbackModelAlias, request)

    async def lineage(self, ref: str) -> registry_service_pb2.ModelLineage:
        """Where a model came from and what became of it."""
        return await self._t.unary(self._stub.GetModelLineage, req.model_lineage(ref))

    async def merge(
        self,
        model: str,
        output_name: str = "",
        description: str = "",
        *,
        idempotency_key: str = "",
    ) -> AsyncMergeJobHandle:
        """Queues a merge of the adapter `model` into its base; returns the job's handle.

        The worker saves the merged weights as safetensors and registers them as a `merged`
        model named `output_name` (default `<adapter name>-merged`) whose lineage points at the
        adapter; `(await handle.wait()).result_model` is its id. The same `idempotency_key`
        returns the same job.
        """
        return await self._merges.create(
            model, output_name, description, idempotency_key=idempotency_key
        )


class _AsyncJobCalls(ABC, Generic[M, H]):
    """The calls by id that training jobs, eval runs and merge jobs answer the same way."""

    _jobs: AsyncJobOps[M]

    @abstractmethod
    def _handle(self, message: M) -> H: ...

    async def get(self, id: str) -> H:
        """One job or run, with its state, progress and latest results, as a handle."""
        return self._handle(await self._jobs.get(id))

    async def cancel(self, id: str) -> M:
        """Cancels it: a queued or paused one at once, a running one at its next step."""
        return await self._jobs.cancel(id)

    def events(self, id: str, *, page_size: int = 0) -> AsyncIterator[jobs_pb2.JobEvent]:
        """Its events so far, oldest first."""
        return self._jobs.events(id, page_size)

    def watch(
        self, id: str, after_sequence: int = 0, *, timeout: float | None = None
    ) -> AsyncIterator[jobs_pb2.JobEvent]:
        """Follows its events live until it ends; no deadline unless `timeout` is given.

        One stream: resume a broken watch with `after_sequence` set to the last event's
        `sequence`, or use `(await get(id)).watch()`, which reconnects by itself.
        """
        return self._jobs.watch(id, after_sequence, timeout)

    async def wait(self, id: str, timeout: float | None = None, *, poll_interval: float = 2.0) -> M:
        """Polls until it succeeds, fails or is cancelled, and returns its message."""
        return await self._jobs.wait(id, timeout, poll_interval)


class AsyncTraining(_AsyncJobCalls[training_service_pb2.TrainingJob, AsyncTrainingJobHandle]):
    """Fine-tuning jobs (LoRA SFT, QLoRA, DPO, distillation), run by workers.

    `create` and `get` return `AsyncTrainingJobHandle`s and `list` yields them (they refresh,
    wait, watch, cancel, pause and resume themselves); the calls by id return the plain
    `TrainingJob` message.
    """

    def __init__(
        self, transport: _AioTransport, stub: training_service_pb2_grpc.TrainingServiceAsyncStub
    ):
        self._t = transport
        self._stub = stub

        async def events_page(id: str, size: int, token: str) -> EventPage:
            request = req.training_job_events(id, size, token)
            resp = await transport.unary(stub.ListTrainingJobEvents, request)
            return resp.events, resp.next_page_token

        self._jobs: AsyncJobOps[training_service_pb2.TrainingJob] = AsyncJobOps(
            get=lambda id: transport.unary(stub.GetTrainingJob, req.get_training_job(id)),
            cancel=lambda id: transport.unary(stub.CancelTrainingJob, req.cancel_training_job(id)),
            events_page=events_page,
            watch=lambda id, after, timeout: transport.unary_stream(
                stub.WatchTrainingJob, req.watch_training_job(id, after), timeout
            ),
        )

    def _handle(self, message: training_service_pb2.TrainingJob) -> AsyncTrainingJobHandle:
        return AsyncTrainingJobHandle(message, self._jobs, self)

    async def create(
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
    ) -> AsyncTrainingJobHandle:
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
        return self._handle(await self._t.unary(self._stub.CreateTrainingJob, request))

    def list(
        self, state: str | None = None, method: str | None = None, *, page_size: int = 0
    ) -> AsyncIterator[AsyncTrainingJobHandle]:
        """Every job matching the filters, newest first, as handles."""
        request = req.list_training_jobs(state, method, page_size, "")

        async def fetch(token: str) -> tuple[Sequence[AsyncTrainingJobHandle], str]:
            request.page_token = token
            resp = await self._t.unary(self._stub.ListTrainingJobs, request)
            return [self._handle(m) for m in resp.training_jobs], resp.next_page_token

        return apaginate(fetch)

    async def pause(self, id: str) -> training_service_pb2.TrainingJob:
        """Pauses a job: a running one checkpoints and frees its worker."""
        return await self._t.unary(self._stub.PauseTrainingJob, req.pause_training_job(id))

    async def resume(self, id: str) -> training_service_pb2.TrainingJob:
        """Resumes a paused job from its last checkpoint."""
        return await self._t.unary(self._stub.ResumeTrainingJob, req.resume_training_job(id))

    async def checkpoints(self, id: str) -> Sequence[jobs_pb2.Checkpoint]:
        """The job's checkpoints, oldest first."""
        request = req.training_job_checkpoints(id)
        resp = await self._t.unary(self._stub.ListTrainingJobCheckpoints, request)
        return tuple(resp.checkpoints)

    async def register_checkpoint(
        self, id: str, step: int, output_name: str = ""
    ) -> registry_service_pb2.Model:
        """Registers one checkpoint of the job as a model, with lineage to the job and step."""
        request = req.register_checkpoint(id, step, output_name)
        return await self._t.unary(self._stub.RegisterCheckpoint, request)


class AsyncEval(_AsyncJobCalls[eval_service_pb2.EvalRun, AsyncEvalRunHandle]):
    """Evaluation runs against held-out data, optionally judged by the gates.

    `create` and `get` return `AsyncEvalRunHandle`s and `list` yields them; the calls by id
    return the `EvalRun`.
    """

    def __init__(self, transport: _AioTransport, stub: eval_service_pb2_grpc.EvalServiceAsyncStub):
        self._t = transport
        self._stub = stub

        async def events_page(id: str, size: int, token: str) -> EventPage:
            request = req.eval_run_events(id, size, token)
            resp = await transport.unary(stub.ListEvalRunEvents, request)
            return resp.events, resp.next_page_token

        self._jobs: AsyncJobOps[eval_service_pb2.EvalRun] = AsyncJobOps(
            get=lambda id: transport.unary(stub.GetEvalRun, req.get_eval_run(id)),
            cancel=lambda id: transport.unary(stub.CancelEvalRun, req.cancel_eval_run(id)),
            events_page=events_page,
            watch=lambda id, after, timeout: transport.unary_stream(
                stub.WatchEvalRun, req.watch_eval_run(id, after), timeout
            ),
        )

    def _handle(self, message: eval_service_pb2.EvalRun) -> AsyncEvalRunHandle:
        return AsyncEvalRunHandle(message, self._jobs)

    async def create(
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
    ) -> AsyncEvalRunHandle:
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
        return self._handle(await self._t.unary(self._stub.CreateEvalRun, request))

    def list(
        self, model: str | None = None, state: str | None = None, *, page_size: int = 0
    ) -> AsyncIterator[AsyncEvalRunHandle]:
        """Every run matching the filters, newest first, as handles."""
        request = req.list_eval_runs(model, state, page_size, "")

        async def fetch(token: str) -> tuple[Sequence[AsyncEvalRunHandle], str]:
            request.page_token = token
            resp = await self._t.unary(self._stub.ListEvalRuns, request)
            return [self._handle(m) for m in resp.eval_runs], resp.next_page_token

        return apaginate(fetch)

    async def compare(self, first: str, second: str) -> eval_service_pb2.CompareEvalRunsResponse:
        """Two runs side by side, per task and metric (`second - first` as delta)."""
        request = req.compare_eval_runs(first, second)
        return await self._t.unary(self._stub.CompareEvalRuns, request)


class AsyncMerges(_AsyncJobCalls[training_service_pb2.MergeJob, AsyncMergeJobHandle]):
    """Merge jobs, which fold an adapter into its base and register the merged model.

    `create` (also `client.models.merge`) and `get` return `AsyncMergeJobHandle`s and `list`
    yields them; the calls by id return the `MergeJob` message.
    """

    def __init__(
        self, transport: _AioTransport, stub: training_service_pb2_grpc.TrainingServiceAsyncStub
    ):
        self._t = transport
        self._stub = stub

        async def events_page(id: str, size: int, token: str) -> EventPage:
            request = req.merge_job_events(id, size, token)
            resp = await transport.unary(stub.ListMergeJobEvents, request)
            return resp.events, resp.next_page_token

        self._jobs: AsyncJobOps[training_service_pb2.MergeJob] = AsyncJobOps(
            get=lambda id: transport.unary(stub.GetMergeJob, req.get_merge_job(id)),
            cancel=lambda id: transport.unary(stub.CancelMergeJob, req.cancel_merge_job(id)),
            events_page=events_page,
            watch=lambda id, after, timeout: transport.unary_stream(
                stub.WatchMergeJob, req.watch_merge_job(id, after), timeout
            ),
        )

    def _handle(self, message: training_service_pb2.MergeJob) -> AsyncMergeJobHandle:
        return AsyncMergeJobHandle(message, self._jobs)

    async def create(
        self,
        model: str,
        output_name: str = "",
        description: str = "",
        *,
        idempotency_key: str = "",
    ) -> AsyncMergeJobHandle:
        """Queues a merge of the adapter `model` (id, name or `name@alias`) into its base."""
        request = req.merge_adapter(
            model=model,
            output_name=output_name,
            description=description,
            idempotency_key=idempotency_key,
        )
        return self._handle(await self._t.unary(self._stub.MergeAdapter, request))

    def list(
        self, model: str | None = None, state: str | None = None, *, page_size: int = 0
    ) -> AsyncIterator[AsyncMergeJobHandle]:
        """Every merge job matching the filters (the adapter, the state), newest first."""
        request = req.list_merge_jobs(model, state, page_size, "")

        async def fetch(token: str) -> tuple[Sequence[AsyncMergeJobHandle], str]:
            request.page_token = token
            resp = await self._t.unary(self._stub.ListMergeJobs, request)
            return [self._handle(m) for m in resp.merge_jobs], resp.next_page_token

        return apaginate(fetch)


class AsyncInference:
    """Text generation with a base model or adapter, optionally through a prompt template."""

    def __init__(
        self,
        transport: _AioTransport,
        stub: inference_service_pb2_grpc.InferenceServiceAsyncStub,
    ):
        self._t = transport
        self._stub = stub

    async def generate(
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
        return await self._t.unary(self._stub.Generate, request, timeout)

    async def chat(
        self,
        messages: req.ChatMessages,
        model: str = "",
        *,
        timeout: float | None = None,
        **sampling: Unpack[req.Sampling],
    ) -> inference_service_pb2.GenerateResponse:
        """The assistant's next turn in a conversation, rendered with the model's chat
        template (`[{"role": "user", "content": ...}]`, as OpenAI's API takes it)."""
        return await self.generate(model, messages=messages, timeout=timeout, **sampling)

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
    ) -> AsyncIterator[inference_service_pb2.StreamGenerateResponse]:
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

    async def served_models(
        self, *, timeout: float | None = None
    ) -> inference_service_pb2.ListServedModelsResponse:
        """What the engine has loaded: each base with its adapters (least recently used
        first) and its running and queued requests. This asks the one server the channel reaches
        (`replica` empty); the REST gateway's `GET /v1/served-models`, routing over several
        replicas, lists every replica's bases, each with its `replica`."""
        request = inference_service_pb2.ListServedModelsRequest()
        return await self._t.unary(self._stub.ListServedModels, request, timeout)


class AsyncClient:
    """Asyncio client for all four services over one `grpc.aio` channel.

    Arguments left out come from `settings`, by default `ClientSettings.from_env()`
    (`LLMOPS_ADDRESS`, `LLMOPS_API_KEY`, `LLMOPS_TLS`, `LLMOPS_TLS_CA_FILE`, `LLMOPS_TIMEOUT`).
    Close it with `await client.close()` or use `async with`.
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
        self._channel = aio_channel(self._config)
        transport = _AioTransport(self._config.timeout)
        registry = registry_service_pb2_grpc.RegistryServiceStub(self._channel)
        training = training_service_pb2_grpc.TrainingServiceStub(self._channel)
        self.templates = AsyncTemplates(transport, registry)
        self.datasets = AsyncDatasets(transport, registry)
        self.merges = AsyncMerges(transport, training)
        self.models = AsyncModels(transport, registry, self.merges)
        self.training = AsyncTraining(transport, training)
        self.eval = AsyncEval(transport, eval_service_pb2_grpc.EvalServiceStub(self._channel))
        self.inference = AsyncInference(
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
    def channel(self) -> grpc.aio.Channel:
        """The underlying channel (with auth, request ids and retries), for other stubs."""
        return self._channel

    async def close(self, grace: float | None = None) -> None:
        """Closes the channel; calls still running after `grace` seconds are cancelled."""
        await self._channel.close(grace)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient(address={self.address!r})"
