"""What an eval run takes and gives back. Pure Python: no torch, so the worker can build, check
and pass a spec to the child process without loading the ML stack."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

__all__ = [
    "AGGREGATE_TASK",
    "DEFAULT_TASK",
    "PREFERENCE_TASK",
    "EvalEvents",
    "EvalResult",
    "EvalSpec",
    "EvalStatus",
    "TaskMetric",
]

EvalStatus = Literal["completed", "cancelled"]

PREFERENCE_TASK = "preference"
"""The task of every prompt/chosen/rejected row, whatever task the row itself names."""
AGGREGATE_TASK = "all"
"""The pseudo-task of the rows that pool one metric over every task reporting it."""
DEFAULT_TASK = "default"
"""The task of prompt/reference rows when neither the row nor the spec names one."""


@dataclass(frozen=True)
class EvalSpec:
    """One eval run, fully resolved to local paths.

    `model_dir` is a Hugging Face base or merged model, `adapter_dir` an optional PEFT adapter
    applied on top of it. `template` renders each row's prompt exactly as training does (one
    `{text}` field); the bundled datasets are already rendered and need none. `temperature` 0
    decodes greedily; above 0 it samples with `top_p`, seeded by `seed`. `limit` 0 evaluates
    every row. The report is written to `output_dir`.
    """

    model_dir: Path
    adapter_dir: Path | None
    eval_file: Path
    output_dir: Path
    task: str = ""
    template: str | None = None
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    batch_size: int = 16
    limit: int = 0
    threads: int = 1
    seed: int = 0
    trust_remote_code: bool = False
    """Whether the model's own code may run (`Model.trust_remote_code`, set by an admin)."""


@dataclass(frozen=True)
class TaskMetric:
    """One metric of one task, and how many examples it was measured on."""

    task: str
    metric: str
    value: float
    count: int


@dataclass(frozen=True)
class EvalResult:
    """How a run ended. A cancelled run has the metrics of the examples done, and no report."""

    status: EvalStatus
    metrics: list[TaskMetric]
    examples: int
    """Examples evaluated: all of them, or those done before a cancel."""
    summary_path: Path | None = None
    examples_path: Path | None = None
    markdown_path: Path | None = None


class EvalEvents(Protocol):
    """What an eval run reports while it runs, and how it is asked to stop."""

    def on_start(self, total: int) -> None:
        """The model is loaded and `total` examples will be evaluated."""

    def on_progress(self, done: int, total: int, metrics: dict[str, float]) -> None:
        """A batch is done; `metrics` are the running values, keyed `task/metric`."""

    def should_stop(self) -> bool:
        """Polled before every batch: True cancels the run."""
        ...
