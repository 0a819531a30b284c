"""Workers stopped mid-job, for every kind that runs long: a training job whose worker gets
SIGTERM checkpoints, hands the job back and another worker resumes it to one model without
using a retry; an eval run whose worker is SIGKILLed, or gets SIGTERM, is run again by another
worker to success. No process of a stopped worker is left running."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

import llmops
from llmops.v1 import eval_service_pb2 as eval_pb
from llmops.v1 import jobs_pb2
from tests.conftest import ServerThread
from tests.integration.test_training_worker import _running
from tests.integration.workers import FAST, TERMINAL, Workers, until

pytestmark = pytest.mark.faults


def descendants(process: subprocess.Popen[bytes]) -> list[int]:
    """The pids of the worker's processes: its fork server, job process, resource tracker."""
    found, todo = [], [process.pid]
    while todo:
        pid = todo.pop()
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            children = [int(child) for child in task.read_text().split()]
            found += children
            todo += children
    return found


def all_gone(pids: list[int]) -> bool:
    return not [pid for pid in pids if _running(pid)]


@pytest.mark.timeout(420)
def test_sigterm_hands_a_training_job_back_at_a_fresh_checkpoint(
    stack: ServerThread, workers: Workers, tiny_model: Path
) -> None:
    first = workers.start()
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        job = client.training.create(
            "sft", "tiny", "demo-sft", hyperparameters={**FAST, "max_steps": 60, "save_steps": 50}
        )
        until(lambda: client.training.get(job.id).progress.step >= 3, 240, "training steps")
        children = descendants(first)
        first.send_signal(signal.SIGTERM)
        assert first.wait(90) == 0  # it exits by itself, within its stop grace
        until(lambda: all_gone(children), 30, "the stopped worker's processes to end")

        handed = client.training.get(job.id)
        assert handed.state == jobs_pb2.JOB_STATE_QUEUED and handed.attempt == 2
        saved = [c.step for c in client.training.checkpoints(job.id)]
        assert saved and 3 <= saved[-1] < 50  # saved for the hand-back, not a periodic one
        messages = [e.message for e in client.training.events(job.id)]
        assert any("stopping: handed back at step" in m for m in messages), messages

        workers.start()
        until(lambda: client.training.get(job.id).state in TERMINAL, 300, "the resumed job")
        done = client.training.get(job.id)
        assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.error.message
        assert done.attempt == 2 and done.progress.step == 60
        messages = [e.message for e in client.training.events(job.id)]
        assert any(f"resumes from step-{saved[-1]}" in m for m in messages), messages
        produced = [
            m for m in client.models.list(kind="adapter") if m.origin.training_job == job.id
        ]
        assert len(produced) == 1 and produced[0].origin.attempt == 2


def _slow_eval(client: llmops.Client) -> str:
    """An eval run long enough to stop mid-way: one example per batch, 24 examples."""
    generation = eval_pb.GenerationConfig(max_new_tokens=24, batch_size=1)
    run = client.eval.create("tiny", "demo-eval", limit=24, generation=generation)
    return run.id


@pytest.mark.timeout(420)
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_an_eval_run_whose_worker_stops_is_run_again_to_success(
    stack: ServerThread, workers: Workers, tiny_model: Path, stop: signal.Signals
) -> None:
    first = workers.start()
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        run_id = _slow_eval(client)
        until(lambda: client.eval.get(run_id).progress.step >= 2, 240, "eval progress")
        children = descendants(first)
        first.send_signal(stop)
        first.wait(90)
        until(lambda: all_gone(children), 30, "the stopped worker's processes to end")
        assert client.eval.get(run_id).state not in TERMINAL

        workers.start()
        until(lambda: client.eval.get(run_id).state in TERMINAL, 300, "the eval run")
        done = client.eval.get(run_id).message
        assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.error.message
        assert done.attempt == 2 and done.progress.step == done.progress.total_steps == 24
        messages = [e.message for e in client.eval.events(run_id)]
        expected = "handed back" if stop == signal.SIGTERM else "lost its worker"
        assert any(expected in m for m in messages), messages
