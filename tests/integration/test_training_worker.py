"""Training jobs end to end: a real server, a private Redis, real worker processes and a tiny
model. A job runs to a registered adapter; a running job is cancelled; a worker killed with
SIGKILL mid-job is replaced and the job resumes from its checkpoint to exactly one model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import llmops
from llmops.v1 import jobs_pb2
from llmops.v1 import training_service_pb2 as pb
from llmops_workers.tiny import build_tiny_model
from tests.conftest import ServerThread, make_settings

ROOT = Path(__file__).resolve().parents[2]
FAST = {
    "per_device_train_batch_size": 4,
    "max_length": 64,
    "logging_steps": 1,
    "lora_r": 4,
    "lora_alpha": 8,
    "warmup_ratio": 0.0,
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny"
    build_tiny_model(path, pretrain_steps=2)
    return path


@pytest.fixture
def stack(data_dir: Path) -> Iterator[ServerThread]:
    settings = make_settings(data_dir, job_lease_seconds=3, reconcile_seconds=0.5)
    running = ServerThread(settings).start()
    yield running
    running.stop()


class Workers:
    """Worker processes of one stack, as `llmops worker` starts them."""

    def __init__(self, server: ServerThread) -> None:
        self.env = {
            **os.environ,
            "LLMOPS_REDIS_URL": server.settings.redis_url,
            "LLMOPS_JOB_LEASE_SECONDS": "3",
        }
        self.data_dir = server.settings.data_dir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "llmops", "worker", "--data-dir", str(self.data_dir)]
        process = subprocess.Popen(
            command, env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def workers(stack: ServerThread) -> Iterator[Workers]:
    pool = Workers(stack)
    yield pool
    pool.stop()


def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Polls `condition` (a real observable state, not a guess at timing) until it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_sft_job_runs_to_a_registered_adapter(
    stack: ServerThread, workers: Workers, tiny_model: Path
) -> None:
    workers.start()
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        job = client.training.create(
            "sft",
            "tiny",
            "demo-sft",
            hyperparameters={**FAST, "max_steps": 6, "save_steps": 3},
            idempotency_key="first",
        )
        until(lambda: client.training.get(job.id).state in TERMINAL, 240, "the job to end")
        done = client.training.get(job.id)
        assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.error.message
        assert done.progress.step == 6 and done.progress.total_steps == 6
        assert "loss" in done.metrics
        model = client.models.get(done.result_model)
        assert model.kind == llmops.v1.registry_service_pb2.MODEL_KIND_ADAPTER
        assert model.origin.training_job == job.id and model.origin.method == "sft"
        assert model.origin.base_model == client.models.get("tiny").id
        assert model.origin.dataset_sha256 == client.datasets.get("demo-sft").sha256
        events = list(client.training.events(job.id))
        kinds = [e.type for e in events]
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert jobs_pb2.JOB_EVENT_TYPE_METRICS in kinds
        assert jobs_pb2.JOB_EVENT_TYPE_CHECKPOINT in kinds
        states = [e.state for e in events if e.type == jobs_pb2.JOB_EVENT_TYPE_STATE_CHANGED]
        assert states == [
            jobs_pb2.JOB_STATE_QUEUED,
            jobs_pb2.JOB_STATE_RUNNING,
            jobs_pb2.JOB_STATE_SUCCEEDED,
        ]
        assert [c.step for c in client.training.checkpoints(job.id)] == [3, 6]
        watched = list(client.training.watch(job.id, after_sequence=len(events) - 1))
        assert [e.sequence for e in watched] == [len(events)]


TERMINAL = (jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELLED)


def test_a_running_job_is_cancelled_at_its_next_step(
    stack: ServerThread, workers: Workers, tiny_model: Path
) -> None:
    workers.start()
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        job = client.training.create(
            "sft", "tiny", "demo-sft", hyperparameters={**FAST, "max_steps": 5000}
        )
        until(lambda: client.training.get(job.id).progress.step >= 2, 240, "training steps")
        cancelling = client.training.cancel(job.id)
        assert cancelling.state in (jobs_pb2.JOB_STATE_CANCELLING, jobs_pb2.JOB_STATE_CANCELLED)
        until(lambda: client.training.get(job.id).state in TERMINAL, 120, "the cancel")
        ended = client.training.get(job.id)
        assert ended.state == jobs_pb2.JOB_STATE_CANCELLED and not ended.result_model
        assert ended.progress.step < 5000


def test_a_killed_worker_is_replaced_and_the_job_resumes(
    stack: ServerThread, workers: Workers, tiny_model: Path
) -> None:
    first = workers.start()
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        job = client.training.create(
            "sft", "tiny", "demo-sft", hyperparameters={**FAST, "max_steps": 40, "save_steps": 4}
        )
        until(lambda: len(client.training.checkpoints(job.id)) >= 1, 240, "a first checkpoint")
        first.send_signal(signal.SIGKILL)
        first.wait()
        workers.start()
        until(lambda: client.training.get(job.id).state in TERMINAL, 300, "the resumed job")
        done = client.training.get(job.id)
        assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.error.message
        assert done.attempt == 2
        messages = [e.message for e in client.training.events(job.id)]
        assert any("resumes from step-" in m for m in messages), messages
        produced = [
            m for m in client.models.list(kind="adapter") if m.origin.training_job == job.id
        ]
        assert len(produced) == 1 and produced[0].origin.attempt == 2


def test_the_training_stub_types_are_the_contracts() -> None:
    assert pb.TRAINING_METHOD_SFT == 1
