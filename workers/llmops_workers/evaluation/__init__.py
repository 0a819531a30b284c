"""The evaluation engine a worker runs for an eval run: batched generation scored per task,
teacher-forced loss and perplexity of the references, and the policy's preference on pairs.

Importing this package imports neither torch nor rouge-score: the spec, the events protocol and
the checks are pure Python, and `run_eval` loads the ML stack only when called. Metric and
normalization rules are in `metrics` and docs/evaluation.md.
"""

from __future__ import annotations

from llmops_workers.evaluation.spec import (
    AGGREGATE_TASK,
    DEFAULT_TASK,
    PREFERENCE_TASK,
    EvalEvents,
    EvalResult,
    EvalSpec,
    EvalStatus,
    TaskMetric,
)
from llmops_workers.evaluation.validation import check_eval_spec

__all__ = [
    "AGGREGATE_TASK",
    "DEFAULT_TASK",
    "PREFERENCE_TASK",
    "EvalEvents",
    "EvalResult",
    "EvalSpec",
    "EvalStatus",
    "TaskMetric",
    "check_eval_spec",
    "run_eval",
]


def run_eval(spec: EvalSpec, events: EvalEvents) -> EvalResult:
    """Evaluates the model on the spec's examples in this process and writes the report.

    Blocking and CPU-heavy: call it from a child process or a thread, never an event loop.
    `events.should_stop()` is polled before every batch; a cancelled run writes nothing.
    Raises ValueError listing the problems `check_eval_spec` finds.
    """
    problems = check_eval_spec(spec)
    if problems:
        raise ValueError("invalid eval spec: " + "; ".join(problems))
    from llmops_workers.evaluation.engine import run

    return run(spec, events)
