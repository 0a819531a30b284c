"""The run every training engine shares: a private staging directory for checkpoints, the
Trainer's printers swapped for `EventsBridge`, train (resuming if asked), stop on request, and
the result saved atomically (temporary directory, then rename); each phase timed
(`engines/phases.py`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from peft import PeftModel
from transformers import PreTrainedModel, Trainer
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from llmops_workers.engines import checkpoints
from llmops_workers.engines.events import EventsBridge
from llmops_workers.engines.spec import EngineEvents, TrainingResult, TrainingSpec, TrainingStatus

__all__ = ["attach", "check_resume_source", "run", "save_result", "staging_dir", "train"]

log = logging.getLogger("llmops.engine")


@contextlib.contextmanager
def staging_dir(output_dir: Path) -> Iterator[Path]:
    """A private directory the Trainer writes checkpoints into before they are published.

    Private (a fresh name per run) so that a stale attempt writing into the same tree cannot
    mix its files in; removed when the run ends, whichever way it ends.
    """
    root = checkpoints.checkpoints_root(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def check_resume_source(spec: TrainingSpec) -> None:
    """Refuses to resume from anything but a complete checkpoint this platform wrote."""
    if spec.resume_from is not None:
        checkpoints.require_complete(spec.resume_from)


def attach(trainer: Trainer, bridge: EventsBridge) -> None:
    """Adds the bridge, removes the Trainer's console printers (engines never print), and
    makes a failed checkpoint write say so (`checkpoints.CheckpointWriteError`).

    The Trainer has no hook around its checkpoint writes, so its `_save_checkpoint` is wrapped
    on this one instance (the same method for SFT, DPO and distillation trainers).
    """
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(bridge)
    save_checkpoint = trainer._save_checkpoint

    def save_checkpoint_or_say_so(*args: Any, **kwargs: Any) -> None:
        with checkpoints.writing(int(trainer.state.global_step)):
            save_checkpoint(*args, **kwargs)

    trainer._save_checkpoint = save_checkpoint_or_say_so  # type: ignore[method-assign]


def train(
    spec: TrainingSpec, events: EngineEvents, build: Callable[[TrainingSpec, Path], Trainer]
) -> TrainingResult:
    """One engine's run: `build` makes its Trainer (checkpointing into a private staging
    directory), which trains until done or stopped; a full model is saved when the Trainer's
    model is not a PEFT model (distillation with `full_finetune`), else the adapter."""
    check_resume_source(spec)
    with staging_dir(spec.output_dir) as staging:
        bridge = EventsBridge(events, spec.output_dir)
        with bridge.clock.timed("setup"):
            trainer = build(spec, staging)
        attach(trainer, bridge)
        full_model = not isinstance(trainer.model, PeftModel)
        return run(trainer, spec, bridge, full_model=full_model)


Save = Callable[..., Path]
"""How the result is written: `save_result(trainer, output_dir, full_model=...)` or, in a
multi-GPU run, its rank-aware counterpart (`engines.distributed`)."""


def run(
    trainer: Trainer,
    spec: TrainingSpec,
    bridge: EventsBridge,
    *,
    full_model: bool = False,
    save: Save | None = None,
) -> TrainingResult:
    """Trains (resuming if asked), then saves the result unless the run was stopped."""
    resume = str(spec.resume_from) if spec.resume_from is not None else None
    with bridge.clock.timed("train"):
        trainer.train(resume_from_checkpoint=resume)
    steps = int(trainer.state.global_step)
    if bridge.stop:
        status: TrainingStatus = "cancelled" if bridge.stop == "cancel" else "paused"
        log.info("training %s at step %d", status, steps)
        return TrainingResult(
            status=status,
            adapter_dir=None,
            steps=steps,
            metrics=_result_metrics(bridge),
            last_checkpoint=bridge.last_checkpoint,
        )
    if spec.validation_file is not None and bridge.last_eval_step != steps:
        with bridge.clock.timed("train"):
            trainer.evaluate()
    with bridge.clock.timed("save"):
        saved = (save or save_result)(trainer, spec.output_dir, full_model=full_model)
    log.info("training completed at step %d; saved %s", steps, saved)
    return TrainingResult(
        status="completed",
        adapter_dir=None if full_model else saved,
        model_dir=saved if full_model else None,
        steps=steps,
        metrics=_result_metrics(bridge),
        last_checkpoint=bridge.last_checkpoint,
    )


def _result_metrics(bridge: EventsBridge) -> dict[str, float]:
    """The last training and evaluation metrics, the Trainer's summary and the phase times."""
    return {**bridge.last_train, **bridge.last_eval, **bridge.summary, **bridge.clock.metrics()}


def save_result(trainer: Trainer, output_dir: Path, *, full_model: bool) -> Path:
    """Writes the adapter (or the whole model) to a temporary directory, then renames it in place.

    Only the "default" adapter is saved: DPO from a parent adapter also holds a frozen "ref"
    copy of it, which is not part of the result.
    """
    target = output_dir / ("model" if full_model else "adapter")
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=output_dir))
    model: PreTrainedModel | PeftModel = trainer.accelerator.unwrap_model(trainer.model)
    if isinstance(model, PeftModel):
        model.save_pretrained(str(temporary), selected_adapters=["default"])
    else:
        model.save_pretrained(str(temporary))
        if trainer.processing_class is not None:
            trainer.processing_class.save_pretrained(str(temporary))
    if target.exists():
        shutil.rmtree(target)
    os.replace(temporary, target)
    return target
