"""Jobs on an S3 artifact store (a private moto server), whatever `LLMOPS_TEST_BACKEND` says: an
SFT job's checkpoint and adapter land in the bucket before the platform records them, so a
worker on another machine (a cache of its own, empty) resumes the paused job from the
checkpoint, evaluates the adapter, and the Inference service serves it from its own cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import llmops
from llmops.v1 import jobs_pb2 as jobs
from tests.backend import s3_server
from tests.conftest import ServerThread, make_settings
from tests.integration.workers import FAST, TERMINAL, Workers, until
from tests.stored import put_tree

pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def bucket() -> str:
    return s3_server().new_bucket()


@pytest.fixture
def s3_stack(data_dir: Path, bucket: str) -> Iterator[ServerThread]:
    settings = make_settings(
        data_dir,
        artifacts_url=f"s3://{bucket}/store",
        s3_endpoint_url=s3_server().endpoint_url,
        artifact_cache_dir=data_dir / "services-cache",
        job_lease_seconds=8,
        reconcile_seconds=0.5,
        inference_threads=1,
        inference_device="cpu",
    )
    running = ServerThread(settings).start()
    yield running
    running.stop()


def _keys(bucket: str) -> list[str]:
    prefix = f"{bucket}/store/"
    return [str(k)[len(prefix) :] for k in s3_server().filesystem().find(prefix)]


def _cached(cache: Path) -> set[str]:
    """The names of the artifacts a cache directory holds (`objects/<sha256>/<name>`)."""
    objects = cache / "objects"
    return (
        {p.name for entry in objects.iterdir() for p in entry.iterdir()}
        if objects.is_dir()
        else set()
    )


def _state(client: llmops.Client, job_id: str) -> int:
    return int(client.training.get(job_id).state)


def test_jobs_move_between_machines_through_the_bucket(
    s3_stack: ServerThread, bucket: str, data_dir: Path, tiny_model: Path, tmp_path: Path
) -> None:
    first, second = Workers(s3_stack), Workers(s3_stack)
    fresh_cache = tmp_path / "second-machine-cache"
    try:
        with llmops.Client(s3_stack.address, timeout=30) as client:
            uri = put_tree(
                s3_stack.settings, tiny_model, "models/tiny"
            )  # the base is in the bucket too
            client.models.create("tiny", uri)
            first.start(LLMOPS_ARTIFACT_CACHE_DIR=str(tmp_path / "first-machine-cache"))
            long = {**FAST, "max_steps": 150, "save_steps": 1000}
            job = client.training.create("sft", "tiny", "demo-sft", hyperparameters=long)
            until(lambda: client.training.get(job.id).progress.step >= 2, 240, "training steps")
            client.training.pause(job.id)
            until(lambda: _state(client, job.id) == jobs.JOB_STATE_PAUSED, 120, "the pause")
            [checkpoint] = client.training.checkpoints(job.id)
            step = checkpoint.step
            # recorded only once uploaded, marker included
            held = f"jobs/{job.id}/attempt-1/checkpoints/step-{step}"
            assert f"{held}/COMPLETE" in _keys(bucket), _keys(bucket)
            assert checkpoint.uri == f"store://{held}"
            first.stop()

            second.start(LLMOPS_ARTIFACT_CACHE_DIR=str(fresh_cache))
            client.training.resume(job.id)
            until(lambda: _state(client, job.id) in TERMINAL, 300, "the resumed job")
            done = client.training.get(job.id)
            assert done.state == jobs.JOB_STATE_SUCCEEDED, done.error.message
            messages = [e.message for e in client.training.events(job.id)]
            assert any(f"resumes from step-{step}" in m for m in messages), messages
            assert f"step-{step}" in _cached(fresh_cache)  # downloaded to resume

            adapter = client.models.get(done.result_model)
            key = adapter.uri.removeprefix("store://")
            assert key.startswith(f"jobs/{job.id}/attempt-2/")
            stored = {k.removeprefix(key + "/") for k in _keys(bucket) if k.startswith(key)}
            assert {"adapter_config.json", "adapter_model.safetensors"} <= stored

            run = client.eval.create(adapter.id, "demo-eval", limit=4)
            until(lambda: client.eval.get(run.id).state in TERMINAL, 300, "the eval run")
            evaluated = client.eval.get(run.id).message
            assert evaluated.state == jobs.JOB_STATE_SUCCEEDED, evaluated.error.message
            report = evaluated.report_uri.removeprefix("store://")
            assert f"{report}/summary.json" in _keys(bucket)

            answer = client.inference.generate(adapter.id, "Hello", max_new_tokens=4)
            assert answer.text is not None
            # the services loaded the adapter from a copy of their own, not a worker's files
            services_cache = data_dir / "services-cache"
            assert Path(key).name in _cached(services_cache)
            assert not (services_cache / "work" / "jobs").exists()
    finally:
        first.stop()
        second.stop()
