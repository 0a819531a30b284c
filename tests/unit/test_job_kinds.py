"""Every kind of job is declared once and has a runner: a kind the services can create but no
worker can run would stay QUEUED for ever."""

from __future__ import annotations

import pickle
from pathlib import Path

from llmops_services.jobs.kinds import JobKind
from llmops_workers import messages
from llmops_workers.merge_job import MergeResult
from llmops_workers.runners import RUNNERS
from llmops_workers.worker import job_function


def test_every_kind_has_a_runner_and_a_worker_function() -> None:
    assert set(RUNNERS) == set(JobKind)
    assert [job_function(kind).name for kind in JobKind] == [
        "run_training_job",
        "run_eval_job",
        "run_merge_job",
    ]


def test_kinds_are_stored_as_their_names() -> None:
    assert JobKind.named("eval") is JobKind.EVAL and JobKind.TRAINING.value == "training"
    assert JobKind.named("merge") is JobKind.MERGE
    assert {kind.id_prefix for kind in JobKind} == {"ftjob", "eval", "merge"}


def test_child_messages_cross_a_process_boundary() -> None:
    sent = [
        messages.Started(10),
        messages.Metrics(2, 10, {"loss": 1.5}),
        messages.Checkpoint(5, "/store/jobs/x/attempt-1/checkpoint-5", {"loss": 1.0}),
        messages.Error("input", "ValueError: a bad row"),
        messages.Result(MergeResult("completed", Path("/store/models/merged/merge-x"), 1.5)),
    ]
    assert [pickle.loads(pickle.dumps(m)) for m in sent] == sent
