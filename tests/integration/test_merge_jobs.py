"""Merge jobs end to end: a real server with a private Redis, a real worker process, the tiny
base and a real LoRA adapter. The merged model is registered with lineage to its adapter, and
the Inference service's greedy answers from it equal the adapter's; bad requests are refused
before anything is queued; the job is visible through Get, List, Watch and Wait."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import llmops
from llmops.v1 import jobs_pb2
from llmops.v1 import registry_service_pb2 as registry_pb
from tests.conftest import ServerThread, make_settings
from tests.integration.test_cli_commands import cli
from tests.integration.workers import Workers
from tests.stored import local_copy
from tests.tiny_models import TinyModels

PROMPTS = [
    "Extract the person's full name.\nText: Ada Lovelace lives in London.\nName:",
    "Classify the topic.\nText: The match ended in a draw.\nTopic:",
    "Summarize: the tiny model reads a short text about a river and a town.",
]
TOKENS = 12


@pytest.fixture
def stack(data_dir: Path) -> Iterator[ServerThread]:
    # inference on the CPU in float32, as the worker merges: the answers compare token for token
    settings = make_settings(
        data_dir,
        job_lease_seconds=8,
        reconcile_seconds=0.5,
        inference_threads=1,
        inference_device="cpu",
    )
    running = ServerThread(settings).start()
    yield running
    running.stop()


def _register(
    client: llmops.Client, tiny_models: TinyModels, adapter_dir: Path
) -> tuple[registry_pb.Model, registry_pb.Model]:
    base = client.models.create("tiny", str(tiny_models.base))
    adapter = client.models.create("helper", str(adapter_dir), "adapter", base_model=base.id)
    return base, adapter


def _greedy(client: llmops.Client, model: str) -> list[str]:
    return [
        client.inference.generate(model, prompt, max_new_tokens=TOKENS).text for prompt in PROMPTS
    ]


def _state_changes(events: list[jobs_pb2.JobEvent]) -> list[str]:
    changed = [e for e in events if e.type == jobs_pb2.JOB_EVENT_TYPE_STATE_CHANGED]
    return [jobs_pb2.JobState.Name(e.state).removeprefix("JOB_STATE_") for e in changed]


@pytest.mark.timeout(300)
def test_a_merged_adapter_is_registered_with_lineage_and_answers_as_the_adapter_does(
    stack: ServerThread, workers: Workers, tiny_models: TinyModels, adapter_dir: Path
) -> None:
    with llmops.Client(stack.address, timeout=60) as client:
        base, adapter = _register(client, tiny_models, adapter_dir)
        workers.start()
        job = client.models.merge("helper", idempotency_key="merge-helper")
        assert job.id.startswith("merge-") and job.state == jobs_pb2.JOB_STATE_QUEUED
        assert (job.model, job.base_model) == (adapter.id, base.id)
        assert job.output_name == "helper-merged"
        assert client.models.merge("helper", idempotency_key="merge-helper").id == job.id

        events = list(job.watch())  # follows the job to its end
        assert _state_changes(events) == ["QUEUED", "RUNNING", "SUCCEEDED"]
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        done = job.wait(timeout=60, poll_interval=0.2)
        assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.error.message
        assert done.progress.step == done.progress.total_steps == 1
        assert done.result_model
        assert client.merges.wait(job.id, timeout=10).result_model == done.result_model
        assert [e.sequence for e in client.merges.events(job.id)] == [e.sequence for e in events]

        assert client.merges.get(job.id).message == done.message
        assert [j.id for j in client.merges.list()] == [job.id]
        assert [j.id for j in client.merges.list(model="helper", state="succeeded")] == [job.id]
        assert list(client.merges.list(state="failed")) == []
        assert list(client.training.list()) == []  # a merge is no training job
        with pytest.raises(llmops.NotFound):
            client.training.get(job.id)

        merged = client.models.get(done.result_model)
        assert merged.kind == registry_pb.MODEL_KIND_MERGED
        assert (merged.name, merged.version) == ("helper-merged", 1)
        assert merged.origin.parent_model == adapter.id
        assert merged.origin.base_model == base.id
        assert merged.origin.merge_job == job.id
        assert merged.architecture == "LlamaForCausalLM" and merged.size_bytes > 0
        files = local_copy(stack.settings.data_dir, merged.uri)
        names = {path.name for path in files.iterdir()}
        assert "model.safetensors" in names and "config.json" in names
        assert "adapter_config.json" not in names  # a plain model, nothing of PEFT left
        assert not [name for name in names if name.endswith((".bin", ".pt", ".pth"))]

        assert merged.id in [m.id for m in client.models.lineage(adapter.id).descendants]
        ancestors = [m.id for m in client.models.lineage(merged.id).ancestors]
        assert ancestors[:1] == [base.id] and adapter.id in ancestors

        answers = _greedy(client, merged.id)
        assert answers == _greedy(client, adapter.id)
        assert answers != _greedy(client, base.id)  # the adapter does change the answers
        served = {m.model: m for m in client.inference.served_models().models}
        assert merged.id in served and not served[merged.id].adapters  # served as a base

    again = cli(stack, "models", "merge", "helper", "--name", "helper-cli", "--wait", "-o", "json")
    shown = again.json()
    assert shown["state"] == "JOB_STATE_SUCCEEDED" and shown["output_name"] == "helper-cli"
    listed = cli(stack, "jobs", "show", shown["id"], "--output", "json").json()
    assert listed["result_model"] == shown["result_model"]


def test_merge_requests_are_checked_before_anything_is_queued(
    stack: ServerThread, tiny_models: TinyModels, adapter_dir: Path
) -> None:
    with llmops.Client(stack.address, timeout=30) as client:
        _register(client, tiny_models, adapter_dir)
        with pytest.raises(llmops.NotFound) as unknown:
            client.models.merge("no-such-adapter")
        assert unknown.value.resource_info is not None
        assert unknown.value.resource_info.type == "model"

        with pytest.raises(llmops.InvalidArgument) as a_base:
            client.models.merge("tiny")
        assert [v.field for v in a_base.value.field_violations] == ["model"]
        assert "base" in a_base.value.field_violations[0].description

        dataset = client.datasets.get("demo-sft")
        with pytest.raises(llmops.InvalidArgument) as a_dataset:
            client.models.merge(dataset.id)
        assert [v.field for v in a_dataset.value.field_violations] == ["model"]
        assert "dataset" in a_dataset.value.message

        with pytest.raises(llmops.InvalidArgument) as bad_name:
            client.models.merge("helper", output_name="not a name")
        assert [v.field for v in bad_name.value.field_violations] == ["output_name"]
        assert list(client.merges.list()) == []  # nothing was queued

        with pytest.raises(llmops.NotFound):
            client.merges.get("merge-000000000000")
        refused = cli(stack, "models", "merge", "tiny")
        assert "model" in refused.refused("INVALID_ARGUMENT")

        # no worker runs here: a queued merge is cancelled at once, and never runs
        job = client.models.merge("helper")
        cancelled = job.cancel()
        assert cancelled.state == jobs_pb2.JOB_STATE_CANCELLED and cancelled.done
        states = _state_changes(list(cancelled.events()))
        assert states == ["QUEUED", "CANCELLED"]
        assert client.merges.get(job.id).result_model == ""


async def test_the_async_client_merges_through_the_same_core(
    stack: ServerThread, tiny_models: TinyModels, adapter_dir: Path
) -> None:
    async with llmops.AsyncClient(stack.address, timeout=30) as client:
        base = await client.models.create("tiny", str(tiny_models.base))
        await client.models.create("helper", str(adapter_dir), "adapter", base_model=base.id)
        with pytest.raises(llmops.InvalidArgument) as a_base:
            await client.models.merge(base.id)
        assert [v.field for v in a_base.value.field_violations] == ["model"]
        job = await client.models.merge("helper", "helper-async", idempotency_key="k")
        assert isinstance(job, llmops.AsyncMergeJobHandle) and job.output_name == "helper-async"
        assert (await client.merges.create("helper", idempotency_key="k")).id == job.id
        await job.cancel()  # no worker runs here
        assert job.state == jobs_pb2.JOB_STATE_CANCELLED
        assert [e.state async for e in job.watch()][-1] == jobs_pb2.JOB_STATE_CANCELLED
        assert [j.id async for j in client.merges.list(state="cancelled")] == [job.id]
        assert (await client.merges.wait(job.id, timeout=5)).state == job.state
