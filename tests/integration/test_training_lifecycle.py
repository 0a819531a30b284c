"""What users of hosted fine-tuning expect of a job, end to end with a real server, Redis, a worker
process and the tiny model: pause frees the worker and resume continues from the checkpoint to
one model; a checkpoint becomes a model that can be evaluated; validation loss reaches the events
and the checkpoints; `auto` hyperparameters are chosen from the data and recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

import llmops
from llmops.v1 import eval_service_pb2
from llmops.v1 import jobs_pb2 as jobs
from llmops.v1 import registry_service_pb2 as registry_pb
from tests.conftest import ServerThread, make_settings
from tests.integration.workers import FAST, ROOT, TERMINAL, Workers, until
from tests.stored import local_copy

pytestmark = pytest.mark.timeout(900)


def _state(client: llmops.Client, job_id: str) -> int:
    return int(client.training.get(job_id).state)


def _messages(client: llmops.Client, job_id: str) -> list[str]:
    return [e.message for e in client.training.events(job_id)]


def test_pause_frees_the_worker_and_resume_continues_to_one_model(
    stack: ServerThread, workers: Workers, tiny_model: Path
) -> None:
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        short = {**FAST, "max_steps": 4}
        held = client.training.create("sft", "tiny", "demo-sft", hyperparameters=short)
        # no worker runs yet: pausing a queued job holds it at once
        assert client.training.pause(held.id).state == jobs.JOB_STATE_PAUSED
        assert client.training.pause(held.id).state == jobs.JOB_STATE_PAUSED  # no change

        workers.start()
        long = {**FAST, "max_steps": 150, "save_steps": 1000}
        job = client.training.create("sft", "tiny", "demo-sft", hyperparameters=long)
        until(lambda: client.training.get(job.id).progress.step >= 2, 240, "training steps")
        asked = client.training.pause(job.id)
        assert asked.state in (jobs.JOB_STATE_RUNNING, jobs.JOB_STATE_PAUSED)
        until(lambda: _state(client, job.id) == jobs.JOB_STATE_PAUSED, 120, "the pause")
        paused = client.training.get(job.id)
        step = paused.progress.step
        assert 2 <= step < 150
        # the pause wrote a checkpoint although save_steps is far away
        assert [c.step for c in client.training.checkpoints(job.id)] == [step]

        # the worker is free: another job runs to the end while the first is paused, and the
        # queued job paused earlier was passed over
        other = client.training.create("sft", "tiny", "demo-sft", hyperparameters=short)
        until(lambda: _state(client, other.id) in TERMINAL, 240, "the second job")
        assert _state(client, other.id) == jobs.JOB_STATE_SUCCEEDED
        assert _state(client, job.id) == jobs.JOB_STATE_PAUSED
        assert _state(client, held.id) == jobs.JOB_STATE_PAUSED

        resumed = client.training.resume(job.id)
        assert resumed.state == jobs.JOB_STATE_QUEUED and resumed.attempt == 2
        until(lambda: _state(client, job.id) in TERMINAL, 300, "the resumed job")
        done = client.training.get(job.id)
        assert done.state == jobs.JOB_STATE_SUCCEEDED, done.error.message
        assert done.progress.step == 150
        messages = _messages(client, job.id)
        assert any(m.startswith(f"paused at step {step}") for m in messages), messages
        assert any(m.startswith("resumed; attempt 2 queued") for m in messages), messages
        assert any(f"resumes from step-{step}" in m for m in messages), messages
        # the second attempt started from the checkpoint: its first logged step follows it
        logged = [
            e.step
            for e in client.training.events(job.id)
            if e.type == jobs.JOB_EVENT_TYPE_METRICS and e.attempt == 2
        ]
        assert logged and logged[0] == step + 1
        produced = [
            m for m in client.models.list(kind="adapter") if m.origin.training_job == job.id
        ]
        assert len(produced) == 1 and produced[0].id == done.result_model

        # a paused job is cancelled at once; ended jobs can be neither paused nor resumed
        assert client.training.cancel(held.id).state == jobs.JOB_STATE_CANCELLED
        for call in (client.training.pause, client.training.resume):
            with pytest.raises(llmops.FailedPrecondition) as refused:
                call(job.id)
            assert "SUCCEEDED" in str(refused.value)
        with pytest.raises(llmops.NotFound):
            client.training.pause("ftjob-000000000000")


def test_a_checkpoint_is_registered_and_evaluated_with_validation_loss(
    stack: ServerThread, workers: Workers, tiny_model: Path
) -> None:
    workers.start()
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        validation = ROOT / "config" / "datasets" / "demo-sft.validation.jsonl"
        client.datasets.upload(str(validation), kind="sft", name="demo-sft-validation")
        hyperparameters = {**FAST, "max_steps": 6, "save_steps": 3, "eval_steps": 3}
        job = client.training.create(
            "sft",
            "tiny",
            "demo-sft",
            validation_dataset="demo-sft-validation",
            hyperparameters=hyperparameters,
        )
        until(lambda: _state(client, job.id) in TERMINAL, 240, "the job")
        done = client.training.get(job.id)
        assert done.state == jobs.JOB_STATE_SUCCEEDED, done.error.message
        evaluated = {
            e.step: e.metrics["eval_loss"]
            for e in client.training.events(job.id)
            if e.type == jobs.JOB_EVENT_TYPE_METRICS and "eval_loss" in e.metrics
        }
        assert sorted(evaluated) == [3, 6]
        checkpoints = client.training.checkpoints(job.id)
        assert [c.step for c in checkpoints] == [3, 6]
        assert checkpoints[0].metrics["eval_loss"] == pytest.approx(evaluated[3])

        model = client.training.register_checkpoint(job.id, 3, output_name="tiny-step-3")
        assert model.kind == registry_pb.MODEL_KIND_ADAPTER and model.name == "tiny-step-3"
        assert model.origin.training_job == job.id and model.origin.checkpoint_step == 3
        assert model.origin.base_model == client.models.get("tiny").id
        assert model.metrics["eval_loss"] == pytest.approx(evaluated[3])
        model_dir = local_copy(stack.settings.data_dir, model.uri)
        names = {p.name for p in model_dir.iterdir()}
        assert "adapter_config.json" in names and "adapter_model.safetensors" in names
        assert not {n for n in names if n.endswith((".pt", ".pth", ".bin"))}, names
        again = client.training.register_checkpoint(job.id, 3)
        assert again.id == model.id
        listed = client.training.checkpoints(job.id)
        assert listed[0].registered_model == model.id and not listed[1].registered_model
        with pytest.raises(llmops.NotFound) as missing:
            client.training.register_checkpoint(job.id, 4)
        assert "checkpoints: 3, 6" in str(missing.value)
        with pytest.raises(llmops.InvalidArgument):
            client.training.register_checkpoint(job.id, 0)

        generation = eval_service_pb2.GenerationConfig(max_new_tokens=8, batch_size=16)
        run = client.eval.create(model.id, "demo-eval", limit=6, generation=generation)
        until(lambda: client.eval.get(run.id).state in TERMINAL, 240, "the eval run")
        finished = client.eval.get(run.id)
        assert finished.state == jobs.JOB_STATE_SUCCEEDED, finished.error.message
        lineage = client.models.lineage(model.id)
        assert lineage.model.origin.checkpoint_step == 3


def test_auto_hyperparameters_are_chosen_from_the_data_and_recorded(
    stack: ServerThread, tiny_model: Path, tmp_path: Path
) -> None:
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        small = tmp_path / "small.jsonl"
        lines = [f'{{"prompt": "Say {i}.", "completion": "{i}"}}' for i in range(20)]
        small.write_text("\n".join(lines) + "\n")
        client.datasets.upload(str(small), kind="sft", name="small")

        job = client.training.create("sft", "tiny", "small", hyperparameters={"lora_r": 8})
        used = job.resolved_hyperparameters
        # 20 short rows: the shortest max_length, 16 rows a step, and 25 passes (2 steps each)
        # instead of the default 450 steps
        assert used.max_length == 256 and used.per_device_train_batch_size == 16
        assert used.max_steps == 50 and used.lora_r == 8
        assert not job.hyperparameters.HasField("max_steps")
        created = next(iter(client.training.events(job.id))).message
        assert "auto values: max_length=256" in created and "max_steps=50" in created

        # the bundled data keeps the measured defaults; set values are never overridden
        bundled = client.training.create("sft", "tiny", "demo-sft")
        assert bundled.resolved_hyperparameters.max_steps == 450
        given = client.training.create(
            "sft", "tiny", "small", hyperparameters={"max_steps": 7, "max_length": 1024}
        )
        assert given.resolved_hyperparameters.max_steps == 7
        assert given.resolved_hyperparameters.per_device_train_batch_size == 4
        by_epochs = client.training.create(
            "sft", "tiny", "small", hyperparameters={"num_train_epochs": 2}
        )
        assert not by_epochs.resolved_hyperparameters.HasField("max_steps")


def test_watchers_are_woken_by_announced_events_not_by_polling(
    data_dir: Path, tiny_model: Path
) -> None:
    # the watch stream would look at the event log once an hour: only the announcements of new
    # events can carry it to the job's end within the call's deadline
    settings = make_settings(data_dir, watch_poll_seconds=3600)
    server = ServerThread(settings).start()
    pool = Workers(server)
    try:
        pool.start()
        with llmops.Client(server.address, timeout=30) as client:
            client.models.create("tiny", str(tiny_model))
            job = client.training.create(
                "sft", "tiny", "demo-sft", hyperparameters={**FAST, "max_steps": 4}
            )
            watched = list(client.training.watch(job.id, timeout=240))
            assert [e.sequence for e in watched] == list(range(1, len(watched) + 1))
            assert watched[-1].state == jobs.JOB_STATE_SUCCEEDED
            assert any(e.type == jobs.JOB_EVENT_TYPE_METRICS for e in watched)
    finally:
        pool.stop()
        server.stop()
