"""The ML engines a worker runs: LoRA SFT, QLoRA, DPO and distillation on TRL + PEFT.

Importing this package does not import torch: the spec, the events protocol and the checks are
pure Python, and `run_training` imports the engine it dispatches to only when called.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from llmops_workers.engines.spec import (
    DEFAULT_HYPERPARAMETERS,
    METHODS,
    EngineEvents,
    Method,
    StopRequest,
    TrainingResult,
    TrainingSpec,
    TrainingStatus,
    resolve_hyperparameters,
)
from llmops_workers.engines.validation import check_spec

if TYPE_CHECKING:
    from transformers import Trainer

__all__ = [
    "DEFAULT_HYPERPARAMETERS",
    "METHODS",
    "EngineEvents",
    "Method",
    "StopRequest",
    "TrainingResult",
    "TrainingSpec",
    "TrainingStatus",
    "check_spec",
    "resolve_hyperparameters",
    "run_training",
]


def run_training(spec: TrainingSpec, events: EngineEvents) -> TrainingResult:
    """Runs one training to its end (or until `events.should_stop()` asks) in this process.

    Blocking and CPU-heavy: call it from a child process or a thread, never an event loop.
    Raises ValueError for a spec that `check_spec` refuses or a resume source that is not a
    complete platform checkpoint.
    """
    problems = check_spec(spec)
    if problems:
        raise ValueError("invalid training spec: " + "; ".join(problems))
    from llmops_workers.engines import run
    from llmops_workers.engines.runtime import engine_runtime

    with engine_runtime(spec.threads):
        build: Callable[[TrainingSpec, Path], Trainer]
        if spec.method in ("sft", "qlora"):
            from llmops_workers.engines.sft import build_trainer as build
        elif spec.method == "dpo":
            from llmops_workers.engines.dpo import build_trainer as build
        else:
            from llmops_workers.engines.distill import build_trainer as build
        return run.train(spec, events, build)
