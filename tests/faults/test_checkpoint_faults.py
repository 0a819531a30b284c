"""A checkpoint write that fails partway, as on a full disk: after the job's first complete
checkpoint, its process's file size limit is lowered (`prlimit`, RLIMIT_FSIZE) so that writing
the next checkpoint fails mid-write, as writing to a full disk does (Python ignores SIGXFSZ, so
the write gets EFBIG where a full disk gives ENOSPC). The job's events say what happened (a
checkpoint write failed, at which step, in the writing library's own words), the half-written
checkpoint is never used (a checkpoint counts only with its completeness marker, written
last), the next attempt resumes from the previous one, and the job ends with one model."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

import llmops
from llmops.v1 import jobs_pb2
from tests.conftest import ServerThread
from tests.integration.test_training_worker import _training_child
from tests.integration.workers import FAST, TERMINAL, Workers, until

pytestmark = pytest.mark.faults


@pytest.mark.timeout(420)
def test_a_checkpoint_write_that_fails_partway_leaves_the_last_one_to_resume_from(
    stack: ServerThread, workers: Workers, tiny_model: Path
) -> None:
    worker = workers.start()
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        params = {**FAST, "max_steps": 24, "save_steps": 4}
        job = client.training.create("sft", "tiny", "demo-sft", hyperparameters=params)
        until(lambda: len(client.training.checkpoints(job.id)) >= 1, 240, "a first checkpoint")
        child = _training_child(worker)
        assert child is not None
        kept = [c.step for c in client.training.checkpoints(job.id)]
        resource.prlimit(child, resource.RLIMIT_FSIZE, (4096, 4096))

        until(lambda: client.training.get(job.id).state in TERMINAL, 300, "the job")
        done = client.training.get(job.id)
        assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.error.message
        assert done.attempt == 2
        messages = [e.message for e in client.training.events(job.id)]
        # which file the limit stops first (the adapter's safetensors, torch's optimizer
        # state, the trainer's JSON) depends on timing, and each library words it its own way
        failed = [m for m in messages if "attempt 1 failed (CheckpointWriteError: " in m]
        assert failed, [m for m in messages if m]
        assert "writing the checkpoint of step " in failed[0], failed
        resumed = [m for m in messages if "attempt 2 resumes from step-" in m]
        assert resumed, messages
        assert int(resumed[0].rsplit("step-", 1)[1].split()[0]) in kept  # a complete one
        produced = [
            m for m in client.models.list(kind="adapter") if m.origin.training_job == job.id
        ]
        assert len(produced) == 1
