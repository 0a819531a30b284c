"""The OpenAI-compatible fine-tuning API (/openai/v1/files and /openai/v1/fine_tuning/jobs on the
real `llmops-gateway` binary) spoken to by the unmodified `openai` SDK, in front of a real server,
Redis and a real worker process training the tiny model: a chat file is uploaded, a job trains
on it to `succeeded`, and its `fine_tuned_model` answers chat completions at once; events,
checkpoints, the job list, pause, resume and cancel; bad files and unknown jobs raise the SDK's
own exceptions."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent

from llmops.v1 import registry_service_pb2 as pb
from llmops.v1 import registry_service_pb2_grpc
from tests.conftest import ServerThread, make_settings
from tests.integration.helpers import base_model
from tests.integration.test_gateway import start_gateway
from tests.integration.workers import Workers

pytestmark = pytest.mark.timeout(600)

CHAT_ROWS = [
    {
        "messages": [
            {"role": "system", "content": "You extract names."},
            {"role": "user", "content": f"Extract: {name} lives in {city}."},
            {"role": "assistant", "content": name},
        ]
    }
    for name, city in (
        ("Ada Lovelace", "London"),
        ("Alan Turing", "Manchester"),
        ("Grace Hopper", "New York"),
        ("Edsger Dijkstra", "Austin"),
    )
]
# Platform hyperparameters (an extension of the legacy top-level `hyperparameters`) that keep
# the tiny model's training to a few seconds and write a checkpoint and metrics at every step.
FAST = {"max_length": 64, "lora_r": 4, "lora_alpha": 8, "logging_steps": 1, "save_steps": 2}
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Stack:
    server: ServerThread
    url: str
    registry: registry_service_pb2_grpc.RegistryServiceStub


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, binary: Path
) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("openai-ft") / "data"
    settings = make_settings(
        data_dir,
        inference_threads=1,
        inference_device="cpu",
        job_lease_seconds=8,
        reconcile_seconds=0.5,
    )
    server = ServerThread(settings).start()
    channel = grpc.insecure_channel(server.address)
    workers = Workers(server)
    try:
        registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
        registry.CreateModel(base_model("llmops-tiny", tiny_model))
        gateway = start_gateway(binary, server.address)
        try:
            workers.start()
            yield Stack(server, gateway.url, registry)
        finally:
            gateway.stop()
    finally:
        workers.stop()
        channel.close()
        server.stop()


@pytest.fixture
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{stack.url}/openai/v1",
        api_key="any-key-while-auth-is-off",
        max_retries=0,
        timeout=120,
    ) as opened:
        yield opened


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def data(event: FineTuningJobEvent) -> dict[str, Any]:
    return event.data if isinstance(event.data, dict) else {}


def wait_for(
    client: openai.OpenAI, job_id: str, statuses: tuple[str, ...], timeout: float
) -> FineTuningJob:
    """Polls `retrieve` until the job reaches one of `statuses`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not reach {statuses} in {timeout} s: {job.status}")


def test_a_chat_file_fine_tunes_a_model_that_answers_at_once(
    stack: Stack, client: openai.OpenAI
) -> None:
    content = jsonl(CHAT_ROWS)
    file = client.files.create(file=("names.jsonl", io.BytesIO(content)), purpose="fine-tune")
    assert (file.object, file.purpose, file.status, file.filename) == (
        "file",
        "fine-tune",
        "processed",
        "names.jsonl",
    )
    assert file.bytes == len(content) and file.id.startswith("ds-")
    assert client.files.retrieve(file.id).id == file.id
    assert file.id in {f.id for f in client.files.list()}
    dataset = stack.registry.GetDataset(pb.GetDatasetRequest(dataset=file.id))
    assert dataset.kind == pb.DATASET_KIND_SFT and dataset.row_count == len(CHAT_ROWS)

    created = client.fine_tuning.jobs.create(
        model="llmops-tiny",
        training_file=file.id,
        suffix="names",
        seed=7,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 2}},
        },
        extra_body={"hyperparameters": FAST},
        extra_headers={"Idempotency-Key": "openai-ft-names"},
    )
    assert created.object == "fine_tuning.job" and created.status in ("queued", "running")
    assert created.training_file == file.id and created.fine_tuned_model is None
    assert created.organization_id == "llmops" and created.result_files == []
    assert created.seed == 7
    assert created.hyperparameters.n_epochs == 2 and created.hyperparameters.batch_size == 2
    assert created.hyperparameters.learning_rate_multiplier == 1  # auto: the default rate
    assert created.method is not None and created.method.type == "supervised"
    again = client.fine_tuning.jobs.create(
        model="llmops-tiny",
        training_file=file.id,
        suffix="names",
        seed=7,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 2}},
        },
        extra_body={"hyperparameters": FAST},
        extra_headers={"Idempotency-Key": "openai-ft-names"},
    )
    assert again.id == created.id  # the same key, the same job

    job = wait_for(client, created.id, TERMINAL, 300)
    assert job.status == "succeeded", job.error
    assert job.finished_at is not None and job.finished_at >= job.created_at
    assert job.fine_tuned_model is not None
    assert job.trained_tokens is not None and job.trained_tokens > 0
    answer = client.chat.completions.create(
        model=job.fine_tuned_model,
        messages=[{"role": "user", "content": "Extract: Ada Lovelace lives in London."}],
        max_tokens=4,
    )
    assert answer.model == job.fine_tuned_model and answer.choices[0].message.content is not None
    assert client.models.retrieve(job.fine_tuned_model).to_dict().get("parent") == "llmops-tiny"

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    assert {e.object for e in events} == {"fine_tuning.job.event"}
    assert events[0].created_at >= events[-1].created_at  # newest first
    steps = {data(e)["step"] for e in events if e.type == "metrics" and "train_loss" in data(e)}
    assert steps == {1, 2, 3, 4}
    assert any(e.type == "message" and data(e) == {"status": "succeeded"} for e in events)

    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert [c.step_number for c in checkpoints] == [4, 2]  # newest first, save_steps=2
    assert {(c.object, c.fine_tuning_job_id) for c in checkpoints} == {
        ("fine_tuning.job.checkpoint", job.id)
    }
    assert checkpoints[0].metrics.train_loss is not None


def test_list_pause_resume_and_cancel(stack: Stack, client: openai.OpenAI) -> None:
    # 16,000 steps: neither job may finish before it is cancelled, however long the waits
    file = client.files.create(
        file=("more.jsonl", io.BytesIO(jsonl(CHAT_ROWS * 4))), purpose="fine-tune"
    )
    jobs = [
        client.fine_tuning.jobs.create(
            model="llmops-tiny",
            training_file=file.id,
            hyperparameters={"n_epochs": 1000, "batch_size": 1},
        )
        for _ in range(2)
    ]
    # Pausing holds a queued job at once, and a running one at its next step.
    paused = client.fine_tuning.jobs.pause(jobs[0].id)
    assert paused.status in ("paused", "running")
    wait_for(client, jobs[0].id, ("paused",), 120)
    assert client.fine_tuning.jobs.resume(jobs[0].id).status == "queued"
    for job in jobs:
        assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
        assert wait_for(client, job.id, TERMINAL, 120).status == "cancelled"

    first = client.fine_tuning.jobs.list(limit=1)
    assert first.has_more and [j.id for j in first.data] == [jobs[1].id]  # newest first
    second = client.fine_tuning.jobs.list(limit=1, after=jobs[1].id)
    assert [j.id for j in second.data] == [jobs[0].id]
    assert {j.object for j in client.fine_tuning.jobs.list()} == {"fine_tuning.job"}


def test_preference_rows_become_a_preference_dataset(stack: Stack, client: openai.OpenAI) -> None:
    rows = [
        {
            "input": {"messages": [{"role": "user", "content": f"Say hello {i}"}]},
            "preferred_output": [{"role": "assistant", "content": "Hello!"}],
            "non_preferred_output": [{"role": "assistant", "content": "Go away."}],
        }
        for i in range(3)
    ]
    file = client.files.create(file=("prefs.jsonl", io.BytesIO(jsonl(rows))), purpose="fine-tune")
    dataset = stack.registry.GetDataset(pb.GetDatasetRequest(dataset=file.id))
    assert dataset.kind == pb.DATASET_KIND_PREFERENCE and dataset.row_count == 3
    job = client.fine_tuning.jobs.create(
        model="llmops-tiny",
        training_file=file.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "batch_size": 3}}},
        extra_body={"hyperparameters": {**FAST, "max_steps": 2}},
    )
    assert job.method is not None and job.method.type == "dpo"
    assert job.hyperparameters.model_extra is not None
    assert job.hyperparameters.model_extra["beta"] == 0.2
    done = wait_for(client, job.id, TERMINAL, 300)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model is not None
    answer = client.chat.completions.create(
        model=done.fine_tuned_model,
        messages=[{"role": "user", "content": "Say hello 1"}],
        max_tokens=4,
    )
    assert answer.choices[0].message.content is not None


def test_refusals_raise_the_sdks_own_exceptions(client: openai.OpenAI) -> None:
    not_chat = jsonl([{"text": "just text"}, {"text": "more text"}])
    with pytest.raises(openai.BadRequestError) as bad_rows:
        client.files.create(file=("bad.jsonl", io.BytesIO(not_chat)), purpose="fine-tune")
    assert bad_rows.value.param == "file"
    assert "lines[1]" in bad_rows.value.message and "lines[2]" in bad_rows.value.message
    with pytest.raises(openai.BadRequestError) as purpose:
        client.files.create(file=("a.jsonl", io.BytesIO(jsonl(CHAT_ROWS))), purpose="assistants")
    assert purpose.value.param == "purpose"
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("ds-000000000000")
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-000000000000")
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.cancel("ftjob-000000000000")
    with pytest.raises(openai.NotFoundError) as model:
        client.fine_tuning.jobs.create(model="ghost", training_file="ds-000000000000")
    assert model.value.param == "model"
    with pytest.raises(openai.BadRequestError) as method:
        client.fine_tuning.jobs.create(
            model="llmops-tiny",
            training_file="ds-000000000000",
            method={"type": "reinforcement"},
        )
    assert method.value.param == "method.type"
