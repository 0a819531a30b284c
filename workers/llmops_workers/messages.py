"""What a job's child process reports to its worker, and how an attempt ends: one dataclass per
message, so the worker and the child agree on fields by name (they cross a multiprocessing
queue, pickled, between two processes of the same code)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    from llmops_workers.engines.spec import TrainingResult
    from llmops_workers.evaluation.spec import EvalResult
    from llmops_workers.merge_job import MergeResult

ErrorCause = Literal["input", "precondition", "internal", "crash"]
"""Why an attempt failed: the job's input (never retried), a library this worker lacks (never
retried), an unexpected exception or the process dying (retried as a new attempt)."""


@dataclass(frozen=True)
class Started:
    """The engine knows how much work there is (steps, or examples for an eval run)."""

    total_steps: int


@dataclass(frozen=True)
class Metrics:
    """A logging step: how far the engine is and what it measured."""

    step: int
    total_steps: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint the engine marked complete (resume may start from it)."""

    step: int
    path: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class Result:
    """The engine finished (completed, cancelled or paused: `result.status`)."""

    result: TrainingResult | EvalResult | MergeResult


@dataclass(frozen=True)
class Error:
    """The attempt failed, and why (which decides whether it is retried)."""

    cause: ErrorCause
    text: str


@dataclass(frozen=True)
class LeaseLost:
    """The attempt lost its lease: a newer attempt owns the job, this one writes nothing more."""

    ended: ClassVar[str] = "fenced"


@dataclass(frozen=True)
class HandedBack:
    """The worker is stopping (SIGTERM): the child stopped, a training job at a checkpoint it
    saved for this, and the job was queued again for another worker without using a retry."""

    ended: ClassVar[str] = "retry"


ChildMessage = Started | Metrics | Checkpoint | Result | Error
"""What the child sends, in this order: Started, then Metrics and Checkpoints, then one Result or
Error."""

Outcome = Result | Error | LeaseLost | HandedBack
"""How the supervision of the child ended."""
