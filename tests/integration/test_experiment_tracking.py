"""`report_to`: a training job also logs its run to an experiment tracker the workers are
configured for. Here MLflow (mlflow-skinny, a test dependency) with a local file store: the run
is named after the job and holds the Trainer's parameters and, step by step, the same losses
the job's own events report."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import llmops
from llmops.v1 import jobs_pb2
from tests.conftest import ServerThread
from tests.integration.workers import FAST, Workers

EXPERIMENT = "llmops-tracking-test"


@pytest.mark.timeout(300)
def test_a_job_reports_its_run_to_mlflow(
    stack: ServerThread,
    workers: Workers,
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracking = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the file store, for this test
    workers.start(
        MLFLOW_TRACKING_URI=tracking,
        MLFLOW_ALLOW_FILE_STORE="true",
        MLFLOW_EXPERIMENT_NAME=EXPERIMENT,
    )
    with llmops.Client(stack.address, timeout=60) as client:
        client.models.create("tiny", str(tiny_model))
        params = {**FAST, "max_steps": 4, "logging_steps": 1, "report_to": ["mlflow"]}
        job = client.training.create("sft", "tiny", "demo-sft", hyperparameters=params)
        done = job.wait(timeout=240, poll_interval=0.5)
        assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.error.message
        assert list(done.hyperparameters.report_to) == ["mlflow"]
        logged = {
            e.step: e.metrics["loss"]
            for e in client.training.events(job.id)
            if e.type == jobs_pb2.JOB_EVENT_TYPE_METRICS and "loss" in e.metrics
        }

    mlflow = MlflowClient(tracking_uri=tracking)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    (run,) = mlflow.search_runs([experiment.experiment_id])
    assert run.info.run_name == job.id and run.info.status == "FINISHED"
    assert float(run.data.params["learning_rate"]) == done.resolved_hyperparameters.learning_rate
    assert run.data.params["max_steps"] == "4"
    history = {m.step: m.value for m in mlflow.get_metric_history(run.info.run_id, "loss")}
    assert sorted(history) == [1, 2, 3, 4] == sorted(logged)
    assert history == pytest.approx(logged, rel=1e-5)
