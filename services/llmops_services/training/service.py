"""TrainingService: validate, persist, enqueue; then report what workers write. It hosts the
merge jobs too (`merges`): why there, and not in the Registry or Inference, is in
docs/architecture.md#merge-jobs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from google.protobuf import json_format
from sqlalchemy import select
from sqlalchemy.orm import Session

from llmops.v1 import jobs_pb2
from llmops.v1 import registry_service_pb2 as registry_pb
from llmops.v1 import training_service_pb2 as pb
from llmops.v1 import training_service_pb2_grpc as pb_grpc
from llmops_services.context import Platform
from llmops_services.db.tables import JobRow, ModelRow
from llmops_services.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PreconditionViolation,
)
from llmops_services.jobs import api, creation, states
from llmops_services.jobs import convert as job_convert
from llmops_services.jobs.kinds import JobKind
from llmops_services.jobs.queue import JobQueue
from llmops_services.jobs.store import checkpoints_of, get_job
from llmops_services.jobs.trace_context import job_traceparent
from llmops_services.registry import convert as registry_convert
from llmops_services.registry import models
from llmops_services.registry.names import check_name, require
from llmops_services.runtime.context import Context
from llmops_services.runtime.pagination import page_of
from llmops_services.runtime.server import ServiceBinding
from llmops_services.training import checkpoints, convert, gpus, merges, requests

log = logging.getLogger("llmops.training")

INSTALL_4BIT = "install bitsandbytes>=0.48 on the workers (pip install 'bitsandbytes>=0.48')"

KIND = JobKind.TRAINING
MERGE = JobKind.MERGE


class TrainingService(pb_grpc.TrainingServiceServicer):
    """Fine-tuning jobs."""

    def __init__(self, platform: Platform, queue: JobQueue) -> None:
        self.platform = platform
        self.db = platform.db
        self.queue = queue

    async def CreateTrainingJob(
        self, request: pb.CreateTrainingJobRequest, context: Context
    ) -> pb.TrainingJob:
        key = request.idempotency_key
        if request.method == pb.TRAINING_METHOD_QLORA:
            await self._check_four_bit(key)
        if request.gpu_count > 1:
            await self._check_gpus(key, request.gpu_count)

        def draft(session: Session) -> creation.Draft:
            checked = requests.check(session, request)
            row = JobRow(
                method=checked.method,
                model_id=checked.base_model.id,
                dataset_id=checked.dataset.id,
                validation_dataset_id=checked.validation_dataset.id
                if checked.validation_dataset
                else "",
                teacher_model_id=checked.teacher_model.id if checked.teacher_model else "",
                parent_model_id=checked.parent_model.id if checked.parent_model else "",
                template_id=checked.template_id,
                template_version=checked.template_version,
                output_name=checked.output_name,
                hyperparameters=checked.requested,
                resolved_hyperparameters=json_format.MessageToDict(
                    checked.resolved, preserving_proto_field_name=True
                ),
                traceparent=job_traceparent(context),
                gpu_count=checked.gpu_count,
                distributed_strategy=checked.distributed_strategy,
            )
            created = "job created"
            if checked.auto_notes:
                created += "; auto values: " + ", ".join(checked.auto_notes)
            return creation.Draft(row, created)

        return await creation.create_job(
            self.db, self.queue, KIND, key, draft, lambda _, row: convert.training_job(row)
        )

    async def _check_four_bit(self, key: str) -> None:
        """Refuses QLoRA when workers run and none can load 4-bit weights.

        With no live worker the job is queued: the first worker to start takes it, and fails it
        with the same advice if it cannot load bitsandbytes either.
        """
        if await creation.exists(self.db, KIND, key):
            return
        try:
            workers = await self.queue.workers()
        except Exception:  # Redis down: the job is safe in the database; the worker decides
            log.exception("could not read the workers' capabilities")
            return
        if not workers or any(w.get("four_bit") or w.get("probing") for w in workers):
            return
        reasons = sorted({str(w.get("four_bit_error", "")) for w in workers} - {""})
        raise FailedPrecondition(
            f"no worker can train in 4-bit: {'; '.join(reasons) or 'bitsandbytes is missing'}; "
            f"{INSTALL_4BIT}, or train with method SFT",
            violations=[
                PreconditionViolation(
                    "CAPABILITY",
                    "method",
                    f"QLORA needs bitsandbytes 4-bit on a worker; {len(workers)} live worker(s) "
                    "cannot load it",
                )
            ],
        )

    async def _check_gpus(self, key: str, count: int) -> None:
        """Refuses a job on `count` GPUs when workers run and none has that many."""
        if count > gpus.MAX_GPUS or await creation.exists(self.db, KIND, key):
            return  # out of range: the request's own check says so
        try:
            workers = await self.queue.workers()
        except Exception:  # Redis down: the job is safe in the database; the worker decides
            log.exception("could not read the workers' capabilities")
            return
        gpus.check_workers(workers, count)

    async def GetTrainingJob(
        self, request: pb.GetTrainingJobRequest, context: Context
    ) -> pb.TrainingJob:
        require("id", request.id)
        return convert.training_job(await self.db.run(lambda s: get_job(s, request.id, KIND)))

    async def ListTrainingJobs(
        self, request: pb.ListTrainingJobsRequest, context: Context
    ) -> pb.ListTrainingJobsResponse:
        state = job_convert.STATES.get(request.state, "UNSPECIFIED")
        method = requests.METHOD_NAMES.get(request.method, "")
        page = page_of(request.page_size, request.page_token, state, method)

        def work(session: Session) -> list[JobRow]:
            query = select(JobRow).where(JobRow.kind == KIND)
            if state != "UNSPECIFIED":
                query = query.where(JobRow.state == state)
            if method:
                query = query.where(JobRow.method == method)
            query = query.order_by(JobRow.create_time.desc(), JobRow.id)
            return list(session.scalars(query.offset(page.offset).limit(page.limit + 1)).all())

        rows = await self.db.run(work)
        return pb.ListTrainingJobsResponse(
            training_jobs=[convert.training_job(r) for r in rows[: page.limit]],
            next_page_token=page.next_token(len(rows)),
        )

    async def CancelTrainingJob(
        self, request: pb.CancelTrainingJobRequest, context: Context
    ) -> pb.TrainingJob:
        require("id", request.id)
        row = await self.db.run(lambda s: api.cancel(s, request.id, KIND))
        return convert.training_job(row)

    async def ListTrainingJobEvents(
        self, request: pb.ListTrainingJobEventsRequest, context: Context
    ) -> pb.ListTrainingJobEventsResponse:
        require("id", request.id)
        events, token = await api.events_page(
            self.db, request.id, KIND, request.page_size, request.page_token
        )
        return pb.ListTrainingJobEventsResponse(events=events, next_page_token=token)

    async def WatchTrainingJob(
        self, request: pb.WatchTrainingJobRequest, context: Context
    ) -> AsyncIterator[jobs_pb2.JobEvent]:
        require("id", request.id)
        poll = self.platform.settings.watch_poll_seconds
        async for event in api.watch(
            self.db, request.id, KIND, request.after_sequence, poll, self.queue.signals
        ):
            yield event

    async def ListTrainingJobCheckpoints(
        self, request: pb.ListTrainingJobCheckpointsRequest, context: Context
    ) -> pb.ListTrainingJobCheckpointsResponse:
        require("id", request.id)

        def work(session: Session) -> list[jobs_pb2.Checkpoint]:
            get_job(session, request.id, KIND)
            return [job_convert.checkpoint(c) for c in checkpoints_of(session, request.id)]

        return pb.ListTrainingJobCheckpointsResponse(checkpoints=await self.db.run(work))

    async def PauseTrainingJob(
        self, request: pb.PauseTrainingJobRequest, context: Context
    ) -> pb.TrainingJob:
        require("id", request.id)

        def work(session: Session) -> JobRow:
            row = get_job(session, request.id, KIND, for_update=True)
            states.pause(session, row)
            return row

        return convert.training_job(await self.db.run(work))

    async def ResumeTrainingJob(
        self, request: pb.ResumeTrainingJobRequest, context: Context
    ) -> pb.TrainingJob:
        require("id", request.id)

        def work(session: Session) -> tuple[JobRow, bool]:
            row = get_job(session, request.id, KIND, for_update=True)
            return row, states.resume(session, row)

        row, queued = await self.db.run(work)
        if queued:
            await self.queue.enqueue_or_defer(row.id, row.attempt, KIND)
        return convert.training_job(row)

    async def RegisterCheckpoint(
        self, request: pb.RegisterCheckpointRequest, context: Context
    ) -> registry_pb.Model:
        require("id", request.id)
        if request.step <= 0:
            raise InvalidArgument(
                "step must be a checkpoint's step",
                violations=[FieldViolation("step", "must be > 0")],
            )
        if request.output_name:
            check_name("output_name", request.output_name)
        store = self.platform.store

        def model_of(session: Session, row: ModelRow) -> registry_pb.Model:
            return registry_convert.model(row, models.aliases_of(session, [row.id])[row.id])

        def earlier(session: Session) -> tuple[registry_pb.Model | None, str]:
            """The model registered from the checkpoint before, or where its files are."""
            job = get_job(session, request.id, KIND)
            checkpoint = checkpoints.find_checkpoint(session, job, request.step)
            done = checkpoint.registered_model_id
            row = session.get(ModelRow, done) if done else None
            return (model_of(session, row), "") if row is not None else (None, checkpoint.uri)

        model, source = await self.db.run(earlier)
        if model is not None:
            return model
        key = checkpoints.model_key(request.id, request.step)
        # a remote store's checkpoint is downloaded first (off the event loop: it can be large)
        await asyncio.to_thread(checkpoints.copy_model_files, source, store, key)

        def work(session: Session) -> registry_pb.Model:
            job = get_job(session, request.id, KIND, for_update=True)
            row = checkpoints.register(session, store, job, request.step, request.output_name)
            return model_of(session, row)

        return await self.db.run(work)

    # Merge jobs

    async def MergeAdapter(self, request: pb.MergeAdapterRequest, context: Context) -> pb.MergeJob:
        traceparent = job_traceparent(context)

        def draft(session: Session) -> creation.Draft:
            checked = merges.check(session, request)
            row = merges.draft_row(checked, traceparent)
            note = f"merge of {checked.adapter.id} into {checked.base.id} created"
            return creation.Draft(row, note)

        return await creation.create_job(
            self.db,
            self.queue,
            MERGE,
            request.idempotency_key,
            draft,
            lambda session, row: merges.merge_job(row),
        )

    async def GetMergeJob(self, request: pb.GetMergeJobRequest, context: Context) -> pb.MergeJob:
        require("id", request.id)
        return merges.merge_job(await self.db.run(lambda s: get_job(s, request.id, MERGE)))

    async def ListMergeJobs(
        self, request: pb.ListMergeJobsRequest, context: Context
    ) -> pb.ListMergeJobsResponse:
        state = job_convert.STATES.get(request.state, "UNSPECIFIED")
        page = page_of(request.page_size, request.page_token, request.model, state)

        def work(session: Session) -> list[JobRow]:
            query = select(JobRow).where(JobRow.kind == MERGE)
            if request.model:
                query = query.where(JobRow.model_id == models.find_model(session, request.model).id)
            if state != "UNSPECIFIED":
                query = query.where(JobRow.state == state)
            query = query.order_by(JobRow.create_time.desc(), JobRow.id)
            return list(session.scalars(query.offset(page.offset).limit(page.limit + 1)).all())

        rows = await self.db.run(work)
        return pb.ListMergeJobsResponse(
            merge_jobs=[merges.merge_job(r) for r in rows[: page.limit]],
            next_page_token=page.next_token(len(rows)),
        )

    async def CancelMergeJob(
        self, request: pb.CancelMergeJobRequest, context: Context
    ) -> pb.MergeJob:
        require("id", request.id)
        return merges.merge_job(await self.db.run(lambda s: api.cancel(s, request.id, MERGE)))

    async def ListMergeJobEvents(
        self, request: pb.ListMergeJobEventsRequest, context: Context
    ) -> pb.ListMergeJobEventsResponse:
        require("id", request.id)
        events, token = await api.events_page(
            self.db, request.id, MERGE, request.page_size, request.page_token
        )
        return pb.ListMergeJobEventsResponse(events=events, next_page_token=token)

    async def WatchMergeJob(
        self, request: pb.WatchMergeJobRequest, context: Context
    ) -> AsyncIterator[jobs_pb2.JobEvent]:
        require("id", request.id)
        poll = self.platform.settings.watch_poll_seconds
        async for event in api.watch(
            self.db, request.id, MERGE, request.after_sequence, poll, self.queue.signals
        ):
            yield event


def binding(platform: Platform, queue: JobQueue) -> ServiceBinding:
    """How to host the training service on a server."""
    servicer = TrainingService(platform, queue)
    return ServiceBinding(
        full_name=pb.DESCRIPTOR.services_by_name["TrainingService"].full_name,
        add_to_server=lambda server: pb_grpc.add_TrainingServiceServicer_to_server(
            servicer, server
        ),
    )
