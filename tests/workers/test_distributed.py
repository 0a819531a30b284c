"""A training run on two CPU processes (torchrun, gloo), driven as the worker's job process
drives it (`distributed_child.run_launched`): a pause reaches both ranks at the same step and
leaves one complete checkpoint with both ranks' RNG state, from which a new run on two
processes resumes to the end and saves one adapter."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from llmops_workers.distributed_child import run_launched
from llmops_workers.engines import checkpoints as ckpt
from llmops_workers.engines.spec import StopRequest, TrainingSpec
from tests.tiny_models import TinyModels


@dataclass
class Recorded:
    """EngineEvents that record what rank 0 reports and ask for a pause from `pause_at` on."""

    pause_at: int = 0
    log: list[tuple[str, int]] = field(default_factory=list)

    def on_start(self, total_steps: int) -> None:
        self.log.append(("start", total_steps))

    def on_log(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        if "loss" in metrics:
            self.log.append(("metrics", step))

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        self.log.append(("checkpoint", step))

    def should_stop(self) -> StopRequest:
        steps = [step for kind, step in self.log if kind == "metrics"]
        return "pause" if self.pause_at and steps and steps[-1] >= self.pause_at else ""


@pytest.mark.timeout(300)
def test_a_pause_stops_both_ranks_at_one_checkpoint_and_a_resume_finishes(
    tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    spec = TrainingSpec(
        method="sft",
        base_model_dir=tiny_models.base,
        output_dir=tmp_path / "attempt-1",
        train_file=engine_data / "sft.jsonl",
        hyperparameters={
            "max_steps": 60,
            "logging_steps": 1,
            "save_steps": 0,
            "per_device_train_batch_size": 2,
            "max_length": 64,
        },
        gpus=2,
        processes_on_cpu=True,
    )
    paused_events = Recorded(pause_at=2)
    paused = run_launched(spec, paused_events)
    assert paused.status == "paused" and paused.adapter_dir is None
    held = paused.last_checkpoint
    assert held is not None and ckpt.is_complete(held)
    assert held == ckpt.checkpoint_dir(spec.output_dir, paused.steps)
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in held.iterdir()}
    assert paused_events.log[0] == ("start", 60)
    assert paused_events.log[-1] == ("checkpoint", paused.steps)
    assert not list(spec.output_dir.glob(".launch-*"))  # the run directory is cleaned up

    resumed_spec = replace(spec, output_dir=tmp_path / "attempt-2", resume_from=held)
    resumed_events = Recorded()
    done = run_launched(resumed_spec, resumed_events)
    assert done.status == "completed" and done.steps == 60
    assert done.adapter_dir == resumed_spec.output_dir / "adapter"
    assert (done.adapter_dir / "adapter_model.safetensors").is_file()
    steps = [step for kind, step in resumed_events.log if kind == "metrics"]
    assert steps == list(range(paused.steps + 1, 61))
