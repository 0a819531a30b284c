"""TrainingService without a worker: checks before queueing, idempotency, listing, cancel of a
queued job, the event log and watch, and the reconciler finding work Redis lost."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from llmops.v1 import eval_service_pb2 as epb
from llmops.v1 import eval_service_pb2_grpc as epb_grpc
from llmops.v1 import jobs_pb2
from llmops.v1 import registry_service_pb2 as rpb
from llmops.v1 import registry_service_pb2_grpc as rpb_grpc
from llmops.v1 import training_service_pb2 as pb
from llmops.v1 import training_service_pb2_grpc as pb_grpc
from tests.conftest import ServerThread
from tests.integration.helpers import base_model, expect_error, make_base_model_dir

SFT = pb.TRAINING_METHOD_SFT


@pytest.fixture
async def training(channel: grpc.aio.Channel) -> pb_grpc.TrainingServiceAsyncStub:
    return pb_grpc.TrainingServiceStub(channel)


@pytest.fixture
async def base(channel: grpc.aio.Channel, tmp_path: Path) -> rpb.Model:
    registry = rpb_grpc.RegistryServiceStub(channel)
    model: rpb.Model = await registry.CreateModel(
        base_model("tiny", make_base_model_dir(tmp_path, "tiny", tokenizer="tok-a"))
    )
    await registry.CreateModel(
        base_model("other", make_base_model_dir(tmp_path, "other", tokenizer="tok-b"))
    )
    return model


def create(**fields: object) -> pb.CreateTrainingJobRequest:
    values: dict[str, object] = {"method": SFT, "base_model": "tiny", "dataset": "demo-sft"}
    values.update(fields)
    return pb.CreateTrainingJobRequest(**values)  # type: ignore[arg-type]


async def test_a_job_is_queued_with_resolved_hyperparameters(
    training: pb_grpc.TrainingServiceAsyncStub, base: rpb.Model
) -> None:
    job = await training.CreateTrainingJob(
        create(hyperparameters=pb.Hyperparameters(max_steps=12), template_id="extraction")
    )
    assert job.id.startswith("ftjob-") and job.state == jobs_pb2.JOB_STATE_QUEUED
    assert job.attempt == 1 and job.base_model == base.id
    assert job.hyperparameters.max_steps == 12 and not job.hyperparameters.HasField("lora_r")
    assert job.resolved_hyperparameters.max_steps == 12
    assert job.resolved_hyperparameters.lora_r == 16
    assert job.template_version == 1 and job.output_name == "tiny-sft"
    events = await training.ListTrainingJobEvents(pb.ListTrainingJobEventsRequest(id=job.id))
    assert [(e.sequence, e.state) for e in events.events] == [(1, jobs_pb2.JOB_STATE_QUEUED)]


async def test_the_same_idempotency_key_returns_the_same_job(
    training: pb_grpc.TrainingServiceAsyncStub, base: rpb.Model
) -> None:
    first = await training.CreateTrainingJob(create(idempotency_key="run-1"))
    again = await training.CreateTrainingJob(create(idempotency_key="run-1"))
    other = await training.CreateTrainingJob(create(idempotency_key="run-2"))
    assert first.id == again.id != other.id
    listed = await training.ListTrainingJobs(pb.ListTrainingJobsRequest())
    assert {j.id for j in listed.training_jobs} == {first.id, other.id}


async def _create_of_kind(channel: grpc.aio.Channel, kind: str, key: str) -> str:
    """Creates a job of `kind` (a training job or an eval run) with `key`; returns its id."""
    if kind == "training":
        job = await pb_grpc.TrainingServiceStub(channel).CreateTrainingJob(
            create(idempotency_key=key)
        )
        return str(job.id)
    run = await epb_grpc.EvalServiceStub(channel).CreateEvalRun(
        epb.CreateEvalRunRequest(model="tiny", dataset="demo-eval", idempotency_key=key)
    )
    return str(run.id)


@pytest.mark.parametrize(
    ("first_kind", "second_kind"),
    [("eval", "training"), ("training", "eval"), ("training", "training"), ("eval", "eval")],
)
async def test_idempotency_keys_are_scoped_per_kind(
    channel: grpc.aio.Channel, base: rpb.Model, first_kind: str, second_kind: str
) -> None:
    first = await _create_of_kind(channel, first_kind, "shared-key")
    second = await _create_of_kind(channel, second_kind, "shared-key")
    if first_kind == second_kind:
        assert second == first  # the same key on the same kind: the same job
        return
    assert second != first  # another kind: an independent job, found by its own key again
    assert await _create_of_kind(channel, first_kind, "shared-key") == first
    assert await _create_of_kind(channel, second_kind, "shared-key") == second
    training = pb_grpc.TrainingServiceStub(channel)
    runs = await epb_grpc.EvalServiceStub(channel).ListEvalRuns(epb.ListEvalRunsRequest())
    jobs = await training.ListTrainingJobs(pb.ListTrainingJobsRequest())
    assert {first, second} == {r.id for r in runs.eval_runs} | {j.id for j in jobs.training_jobs}


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"method": pb.TRAINING_METHOD_UNSPECIFIED}, grpc.StatusCode.INVALID_ARGUMENT, "method"),
        ({"base_model": ""}, grpc.StatusCode.INVALID_ARGUMENT, "base_model"),
        ({"base_model": "ghost"}, grpc.StatusCode.NOT_FOUND, ""),
        ({"dataset": "demo-preference"}, grpc.StatusCode.INVALID_ARGUMENT, "dataset"),
        ({"dataset": "ghost"}, grpc.StatusCode.NOT_FOUND, ""),
        (
            {"method": pb.TRAINING_METHOD_DPO, "dataset": "demo-sft"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "dataset",
        ),
        (
            {"validation_dataset": "demo-eval"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "validation_dataset",
        ),
        ({"template_id": "nope"}, grpc.StatusCode.NOT_FOUND, ""),
        (
            {"hyperparameters": pb.Hyperparameters(learning_rate=-1)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "hyperparameters.learning_rate",
        ),
        ({"method": pb.TRAINING_METHOD_DISTILL}, grpc.StatusCode.INVALID_ARGUMENT, "teacher_model"),
        ({"teacher_model": "other"}, grpc.StatusCode.INVALID_ARGUMENT, "teacher_model"),
        ({"output_name": "bad name"}, grpc.StatusCode.INVALID_ARGUMENT, "output_name"),
        ({"parent_model": "other"}, grpc.StatusCode.INVALID_ARGUMENT, "parent_model"),
    ],
)
async def test_bad_requests_are_refused_before_anything_is_queued(
    training: pb_grpc.TrainingServiceAsyncStub,
    base: rpb.Model,
    fields: dict[str, object],
    code: grpc.StatusCode,
    field: str,
) -> None:
    details = await expect_error(training.CreateTrainingJob(create(**fields)), code)
    if field:
        assert field in details.fields
    listed = await training.ListTrainingJobs(pb.ListTrainingJobsRequest())
    assert list(listed.training_jobs) == []


async def test_a_teacher_with_another_tokenizer_is_a_failed_precondition(
    training: pb_grpc.TrainingServiceAsyncStub, base: rpb.Model
) -> None:
    request = create(method=pb.TRAINING_METHOD_DISTILL, teacher_model="other")
    details = await expect_error(
        training.CreateTrainingJob(request), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert any("models/" in subject for subject in details.subjects)


async def test_cancelling_a_queued_job_ends_it_and_its_watch(
    training: pb_grpc.TrainingServiceAsyncStub, base: rpb.Model
) -> None:
    job = await training.CreateTrainingJob(create())
    watch: Any = training.WatchTrainingJob(pb.WatchTrainingJobRequest(id=job.id))
    first = await watch.read()
    assert first.state == jobs_pb2.JOB_STATE_QUEUED
    cancelled = await training.CancelTrainingJob(pb.CancelTrainingJobRequest(id=job.id))
    assert cancelled.state == jobs_pb2.JOB_STATE_CANCELLED and cancelled.HasField("end_time")
    second = await watch.read()
    assert second.state == jobs_pb2.JOB_STATE_CANCELLED
    assert await watch.read() == grpc.aio.EOF  # type: ignore[attr-defined]
    resumed = training.WatchTrainingJob(pb.WatchTrainingJobRequest(id=job.id, after_sequence=1))
    assert [e.sequence async for e in resumed] == [2]
    await expect_error(
        training.CancelTrainingJob(pb.CancelTrainingJobRequest(id=job.id)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    only_cancelled = await training.ListTrainingJobs(
        pb.ListTrainingJobsRequest(state=jobs_pb2.JOB_STATE_CANCELLED, method=SFT)
    )
    assert [j.id for j in only_cancelled.training_jobs] == [job.id]


async def test_unknown_jobs_are_not_found(training: pb_grpc.TrainingServiceAsyncStub) -> None:
    for call in (
        training.GetTrainingJob(pb.GetTrainingJobRequest(id="ftjob-000000000000")),
        training.CancelTrainingJob(pb.CancelTrainingJobRequest(id="ftjob-000000000000")),
        training.ListTrainingJobCheckpoints(
            pb.ListTrainingJobCheckpointsRequest(id="ftjob-000000000000")
        ),
    ):
        await expect_error(call, grpc.StatusCode.NOT_FOUND)


async def test_the_reconciler_queues_again_what_redis_lost(
    server: ServerThread, training: pb_grpc.TrainingServiceAsyncStub, base: rpb.Model
) -> None:
    job = await training.CreateTrainingJob(create())
    queue = server.process.queue
    reconciler = server.process.reconciler
    assert queue is not None and reconciler is not None
    assert server.call(queue.knows(job.id, 1))
    pool = server.call(queue.pool())
    server.call(pool.flushall())
    assert not server.call(queue.knows(job.id, 1))
    server.call(reconciler.sweep())
    assert server.call(queue.knows(job.id, 1))
    await asyncio.sleep(0)
