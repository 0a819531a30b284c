"""The Trainer callback that feeds `EngineEvents`: metrics at every log, checkpoints published as
they are saved, and stop requests (cancel, pause) honoured between steps.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from llmops_workers.engines import checkpoints
from llmops_workers.engines.phases import PhaseClock
from llmops_workers.engines.spec import EngineEvents, StopRequest

__all__ = ["EventsBridge"]

log = logging.getLogger("llmops.engine")


def _numeric(logs: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of a Trainer log, with the platform's names."""
    metrics: dict[str, float] = {}
    for key, value in logs.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        name = "tokens_per_second" if key == "train_tokens_per_second" else key
        if math.isfinite(value):
            metrics[name] = float(value)
    return metrics


@dataclass
class EventsBridge(TrainerCallback):
    """Feeds `EngineEvents` from the Trainer, publishes checkpoints, and honours stop requests."""

    events: EngineEvents
    output_dir: Path
    stop: StopRequest = ""
    last_train: dict[str, float] = field(default_factory=dict)
    last_eval: dict[str, float] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)
    last_checkpoint: Path | None = None
    last_eval_step: int = -1
    clock: PhaseClock = field(default_factory=PhaseClock)
    _saving_since: float | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        self.events.on_start(int(state.max_steps))

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        request = self.events.should_stop()
        if request == "cancel":
            control.should_save = False
            control.should_evaluate = False
            control.should_training_stop = True
            self.stop = "cancel"
        elif request == "pause" and state.global_step < state.max_steps:
            control.should_save = True
            control.should_evaluate = False
            control.should_training_stop = True
            self.stop = "pause"
        if control.should_save:
            self._saving_since = time.perf_counter()

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> None:
        metrics = _numeric(logs or {})
        if "train_runtime" in metrics and "train_loss" in metrics:
            self.summary = metrics  # the Trainer's end-of-training summary
            return
        if any(key.startswith("eval_") for key in metrics):
            self.last_eval = metrics
            self.last_eval_step = state.global_step
        elif "loss" in metrics:
            self.last_train = metrics
        else:
            return
        self.events.on_log(int(state.global_step), int(state.max_steps), metrics)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        step = int(state.global_step)
        staged = Path(str(args.output_dir)) / f"checkpoint-{step}"
        metrics = {**self.last_train, **self.last_eval}
        with checkpoints.writing(step):
            path = checkpoints.publish(staged, self.output_dir, step, metrics)
        self.last_checkpoint = path
        log.info("checkpoint %s complete", path)
        self.events.on_checkpoint(step, path, metrics)
        if self._saving_since is not None:
            self.clock.add("checkpoint", time.perf_counter() - self._saving_since)
            self._saving_since = None
