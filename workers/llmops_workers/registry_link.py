"""The worker's client of the Registry: it resolves a job's inputs and registers its output over
gRPC, as any other client would, so the Registry's checks, idempotency and logs apply to them."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import struct_pb2

import llmops
from llmops.v1 import registry_service_pb2 as registry_pb
from llmops_services.context import Platform
from llmops_services.db.tables import JobRow
from llmops_services.runtime import auth
from llmops_services.settings import Settings

log = logging.getLogger("llmops.worker")


@dataclass(frozen=True)
class Inputs:
    """A job's inputs as the engine needs them: local paths and the template's text."""

    base_model_dir: Path
    train_file: Path
    dataset_sha256: str
    validation_file: Path | None
    template: str | None
    teacher_model_dir: Path | None
    teacher_adapter_dir: Path | None
    parent_adapter_dir: Path | None
    trust_remote_code: bool = False
    """The base model's `trust_remote_code`, set by an admin at registration."""
    teacher_trust_remote_code: bool = False


@dataclass(frozen=True)
class EvalInputs:
    """An eval run's inputs: the model (a base or merged directory, plus an adapter), the
    dataset file and the template's text."""

    model_dir: Path
    adapter_dir: Path | None
    dataset_file: Path
    template: str | None
    trust_remote_code: bool = False


@dataclass(frozen=True)
class MergeInputs:
    """A merge job's inputs: the adapter (its model message, for the lineage it passes on) and
    the local directories of the adapter and its base."""

    adapter: registry_pb.Model
    adapter_dir: Path
    base_dir: Path
    trust_remote_code: bool = False


def registry_address(settings: Settings) -> str:
    """`LLMOPS_REGISTRY_ADDRESS`, else the address the stack of the data dir recorded."""
    if settings.registry_address:
        return settings.registry_address
    stack = settings.data_dir / "stack.json"
    if stack.is_file():
        return str(json.loads(stack.read_text()).get("grpc", ""))
    return ""


class RegistryLink:
    """An open client plus, when the worker had to make one, its own API key."""

    def __init__(self, platform: Platform, client: llmops.AsyncClient, key_id: str) -> None:
        self.platform = platform
        self.client = client
        self._key_id = key_id

    @classmethod
    def open(cls, platform: Platform, owner: str) -> RegistryLink:
        """Connects with `LLMOPS_WORKER_API_KEY`; without one, and only when auth is on, the
        worker makes itself a writer key (it holds database credentials anyway) and revokes it
        when it stops."""
        settings = platform.settings
        address = registry_address(settings)
        if not address:
            raise RuntimeError(
                "no Registry address: set LLMOPS_REGISTRY_ADDRESS or start the worker with the "
                "stack's --data-dir"
            )
        secret, key_id = settings.worker_api_key, ""
        if not secret and any(not k.revoked for k in auth.list_keys(platform.db)):
            made = auth.create_key(platform.db, "writer", f"worker {owner}")
            secret, key_id = made.secret, made.key_id
        client = llmops.AsyncClient(address, api_key=secret or "", timeout=60)
        return cls(platform, client, key_id)

    async def ready(self, timeout: float = 30.0) -> None:
        """Waits until the Registry answers and accepts the key (a key the worker just made is
        known to the servers after their key cache refreshes, `LLMOPS_AUTH_CACHE_SECONDS`)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                await self.client.datasets.list_page(page_size=1)
                return
            except (llmops.Unavailable, llmops.Unauthenticated):
                if asyncio.get_running_loop().time() >= deadline:
                    raise
                await asyncio.sleep(0.25)

    async def close(self) -> None:
        """Closes the channel and revokes the worker's own key, if it made one."""
        await self.client.close()
        if self._key_id:
            auth.revoke_key(self.platform.db, self._key_id)

    async def _local(self, uri: str) -> Path:
        """A local path for an input (downloaded off the event loop from a remote store)."""
        if uri.startswith("store://"):
            return await asyncio.to_thread(self.platform.store.local_path, uri)
        return Path(uri)

    async def _model_dir(self, model_id: str) -> Path:
        return await self._local((await self.client.models.get(model_id)).uri)

    async def _template(self, job: JobRow) -> str | None:
        if not job.template_id:
            return None
        found = await self.client.templates.get(job.template_id, job.template_version)
        return found.template

    async def inputs(self, job: JobRow) -> Inputs:
        """Resolves the ids the job recorded at creation; NotFound when one was deleted since."""
        dataset = await self.client.datasets.get(job.dataset_id)
        validation = None
        if job.validation_dataset_id:
            checked = await self.client.datasets.get(job.validation_dataset_id)
            validation = await self._local(checked.uri)
        template = await self._template(job)
        teacher_dir = teacher_adapter = None
        teacher_trusted = False
        if job.teacher_model_id:
            teacher = await self.client.models.get(job.teacher_model_id)
            teacher_trusted = teacher.trust_remote_code  # an adapter's is its base's
            if teacher.kind == registry_pb.MODEL_KIND_ADAPTER:
                teacher_adapter = await self._local(teacher.uri)
                teacher_dir = await self._model_dir(teacher.origin.base_model)
            else:
                teacher_dir = await self._local(teacher.uri)
        parent = await self._model_dir(job.parent_model_id) if job.parent_model_id else None
        base = await self.client.models.get(job.model_id)
        return Inputs(
            base_model_dir=await self._local(base.uri),
            train_file=await self._local(dataset.uri),
            dataset_sha256=dataset.sha256,
            validation_file=validation,
            template=template,
            teacher_model_dir=teacher_dir,
            teacher_adapter_dir=teacher_adapter,
            parent_adapter_dir=parent,
            trust_remote_code=base.trust_remote_code,
            teacher_trust_remote_code=teacher_trusted,
        )

    async def eval_inputs(self, job: JobRow) -> EvalInputs:
        """Resolves an eval run's model (an adapter resolves to its base plus itself)."""
        model = await self.client.models.get(job.model_id)
        adapter = None
        model_dir = await self._local(model.uri)
        if model.kind == registry_pb.MODEL_KIND_ADAPTER:
            adapter = model_dir
            model_dir = await self._model_dir(model.origin.base_model)
        dataset = await self.client.datasets.get(job.dataset_id)
        template = await self._template(job)
        # an adapter's trust_remote_code is its base's (the registry copies it)
        return EvalInputs(
            model_dir, adapter, await self._local(dataset.uri), template, model.trust_remote_code
        )

    async def register(
        self, job: JobRow, uri: str, adapter: bool, metrics: dict[str, float], sha256: str
    ) -> registry_pb.Model:
        """Registers what the job produced (published at `uri`), once per job whatever the
        attempt (idempotent)."""
        hyperparameters = struct_pb2.Struct()
        hyperparameters.update(dict(job.resolved_hyperparameters))
        origin = registry_pb.ModelOrigin(
            base_model=job.model_id,
            dataset=job.dataset_id,
            dataset_sha256=sha256,
            method=job.method,
            hyperparameters=hyperparameters,
            training_job=job.id,
            attempt=job.attempt,
            template_id=job.template_id,
            template_version=job.template_version,
            teacher_model=job.teacher_model_id,
            parent_model=job.parent_model_id,
        )
        return await self.client.models.create(
            job.output_name,
            uri,
            kind="adapter" if adapter else "merged",
            description=f"{job.method} {'adapter' if adapter else 'model'} trained by {job.id}",
            origin=origin,
            metrics=metrics,
            idempotency_key=f"training:{job.id}",
        )

    async def merge_inputs(self, job: JobRow) -> MergeInputs:
        """Resolves a merge job's adapter and its base; NotFound when one was deleted since."""
        adapter = await self.client.models.get(job.model_id)
        if adapter.kind != registry_pb.MODEL_KIND_ADAPTER:  # checked at creation; ids are fixed
            raise ValueError(f"{adapter.id} is not an adapter")
        base_dir = await self._model_dir(adapter.origin.base_model)
        trusted = adapter.trust_remote_code  # its base's
        return MergeInputs(adapter, await self._local(adapter.uri), base_dir, trusted)

    async def register_merged(
        self, job: JobRow, uri: str, adapter: registry_pb.Model
    ) -> registry_pb.Model:
        """Registers a merge job's model (published at `uri`), once per job whatever the attempt
        (idempotent): its parent is the adapter, its base the adapter's base, and the rest of the
        adapter's lineage (dataset, method, hyperparameters, training job, template) is carried
        over, so the merged model answers where it came from without a hop through the adapter."""
        origin = registry_pb.ModelOrigin()
        origin.CopyFrom(adapter.origin)
        origin.parent_model = adapter.id
        origin.merge_job = job.id
        origin.attempt = job.attempt
        description = str(job.resolved_hyperparameters.get("description", "")) or (
            f"{adapter.name} v{adapter.version} merged into its base by {job.id}"
        )
        return await self.client.models.create(
            job.output_name,
            uri,
            kind="merged",
            description=description,
            origin=origin,
            metrics=dict(adapter.metrics),
            idempotency_key=f"merge:{job.id}",
        )
