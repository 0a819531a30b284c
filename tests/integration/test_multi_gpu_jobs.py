"""Training jobs on several processes, end to end on this machine's CPU: a worker told to run
them there (`LLMOPS_WORKER_DISTRIBUTED_ON_CPU`) launches two processes with torchrun (gloo, DDP)
on the tiny model. The job succeeds to one adapter with its events in order; a cancel stops
every process. The service refuses what no worker can run, and a worker without the GPUs fails
the job at once. The GPU launch itself (accelerate, NCCL) is checked by dry run in
tests/workers/test_launch.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

import llmops
from llmops.cli.main import app
from llmops.v1 import jobs_pb2
from tests.conftest import ServerThread
from tests.integration.workers import FAST, TERMINAL, Workers, until
from tests.stored import local_copy

ON_CPU = {"LLMOPS_WORKER_DISTRIBUTED_ON_CPU": "1"}


def _rank_processes(data_dir: Path) -> list[int]:
    """The processes of a launched run of this stack (their command names its run directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        if "llmops_workers.engines.distributed" in command and str(data_dir) in command:
            found.append(int(entry.name))
    return found


def _local(stack: ServerThread, uri: str) -> Path:
    return local_copy(stack.settings.data_dir, uri)


def _probed(redis_url: str) -> bool:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = list(client.scan_iter("llmops:workers:*"))
        adverts = [json.loads(str(client.get(key) or "{}")) for key in keys]
    finally:
        client.close()
    return len(adverts) == 1 and not adverts[0].get("probing")


@pytest.mark.timeout(600)
def test_a_job_on_two_processes_trains_to_one_adapter(
    stack: ServerThread, workers: Workers, tiny_model: Path
) -> None:
    workers.start(**ON_CPU)
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        job = client.training.create(
            "sft",
            "tiny",
            "demo-sft",
            hyperparameters={**FAST, "max_steps": 6, "save_steps": 3},
            gpu_count=2,
        )
        assert job.gpu_count == 2
        until(lambda: client.training.get(job.id).state in TERMINAL, 300, "the job to end")
        done = client.training.get(job.id)
        assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.error.message
        assert done.attempt == 1 and done.progress.step == 6 and done.progress.total_steps == 6
        produced = [
            m for m in client.models.list(kind="adapter") if m.origin.training_job == job.id
        ]
        assert len(produced) == 1 and produced[0].id == done.result_model
        assert (_local(stack, produced[0].uri) / "adapter_model.safetensors").is_file()
        events = list(client.training.events(job.id))
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        steps = [e.step for e in events if e.type == jobs_pb2.JOB_EVENT_TYPE_METRICS]
        assert steps == sorted(steps) and steps[-1] == 6 and len(steps) == len(set(steps))
        states = [e.state for e in events if e.type == jobs_pb2.JOB_EVENT_TYPE_STATE_CHANGED]
        assert states == [
            jobs_pb2.JOB_STATE_QUEUED,
            jobs_pb2.JOB_STATE_RUNNING,
            jobs_pb2.JOB_STATE_SUCCEEDED,
        ]
        checkpoints = client.training.checkpoints(job.id)
        assert [c.step for c in checkpoints] == [3, 6]
        for checkpoint in checkpoints:  # each rank's RNG state, published together
            held = {p.name for p in _local(stack, checkpoint.uri).iterdir()}
            assert {"rng_state_0.pth", "rng_state_1.pth", "COMPLETE"} <= held, held
        assert _rank_processes(stack.settings.data_dir) == []


@pytest.mark.timeout(600)
def test_a_cancel_stops_every_process_of_the_run(
    stack: ServerThread, workers: Workers, tiny_model: Path
) -> None:
    workers.start(**ON_CPU)
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        job = client.training.create(
            "sft", "tiny", "demo-sft", hyperparameters={**FAST, "max_steps": 5000}, gpu_count=2
        )
        until(lambda: client.training.get(job.id).progress.step >= 2, 300, "training steps")
        assert len(_rank_processes(stack.settings.data_dir)) >= 2
        client.training.cancel(job.id)
        until(lambda: client.training.get(job.id).state in TERMINAL, 120, "the cancel")
        ended = client.training.get(job.id)
        assert ended.state == jobs_pb2.JOB_STATE_CANCELLED and not ended.result_model
        assert ended.progress.step < 5000
        until(lambda: not _rank_processes(stack.settings.data_dir), 60, "every rank to stop")


def test_a_job_no_worker_can_run_is_refused_before_queueing(
    stack: ServerThread, workers: Workers, tiny_model: Path
) -> None:
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        with pytest.raises(llmops.InvalidArgument) as out_of_range:
            client.training.create("sft", "tiny", "demo-sft", gpu_count=65)
        assert [v.field for v in out_of_range.value.field_violations] == ["gpu_count"]
        with pytest.raises(llmops.InvalidArgument) as alone:
            client.training.create("sft", "tiny", "demo-sft", distributed_strategy="fsdp")
        assert [v.field for v in alone.value.field_violations] == ["distributed_strategy"]
        with pytest.raises(llmops.InvalidArgument) as four_bit:
            client.training.create(
                "qlora", "tiny", "demo-sft", gpu_count=2, distributed_strategy="fsdp"
            )
        assert [v.field for v in four_bit.value.field_violations] == ["distributed_strategy"]
        workers.start()  # no GPU on this machine, and not told to run processes on the CPU
        until(lambda: _probed(workers.redis_url), 120, "the worker's capability probe")
        with pytest.raises(llmops.FailedPrecondition) as refused:
            client.training.create("sft", "tiny", "demo-sft", gpu_count=4)
        assert "no live worker has 4 GPUs" in str(refused.value)
        assert refused.value.precondition_violations[0].subject == "gpu_count"
        assert list(client.training.list()) == []


def test_a_worker_without_the_gpus_fails_the_job_without_a_retry(
    stack: ServerThread, workers: Workers, tiny_model: Path
) -> None:
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        # queued while no worker runs: the service cannot know yet what the workers will have
        command = ["train", "sft", "-b", "tiny", "-d", "demo-sft", "--set", "max_steps=2"]
        command += ["--gpus", "2", "--strategy", "fsdp", "-o", "json"]
        ran = CliRunner().invoke(app, ["--address", stack.address, *command])
        assert ran.exit_code == 0, ran.stderr
        job = json.loads(ran.stdout)
        assert job["gpu_count"] == 2 and job["state"] == "JOB_STATE_QUEUED"
        assert job["distributed_strategy"] == "DISTRIBUTED_STRATEGY_FSDP"
        workers.start()
        until(lambda: client.training.get(job["id"]).state in TERMINAL, 240, "the job to end")
        done = client.training.get(job["id"])
        assert done.state == jobs_pb2.JOB_STATE_FAILED and done.attempt == 1
        assert done.error.code == 9  # FAILED_PRECONDITION
        assert "asks for 2 GPUs and this worker has 0" in done.error.message
