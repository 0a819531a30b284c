"""The worker's guard for an eval run: what is wrong with a spec before any model is loaded.

Pure Python and cheap (config files and the eval file's rows), so the worker can fail a run with
one clear message instead of a traceback from deep inside transformers.
"""

from __future__ import annotations

import math

from llmops.templates import validate_template
from llmops_workers.engines.validation import adapter_problems, model_problems
from llmops_workers.evaluation.examples import file_problems
from llmops_workers.evaluation.spec import AGGREGATE_TASK, PREFERENCE_TASK, EvalSpec

__all__ = ["check_eval_spec"]


def _setting_problems(spec: EvalSpec) -> list[str]:
    problems = [
        f"{name} must be at least {least}"
        for name, value, least in (
            ("max_new_tokens", spec.max_new_tokens, 1),
            ("batch_size", spec.batch_size, 1),
            ("threads", spec.threads, 1),
            ("limit", spec.limit, 0),
        )
        if value < least
    ]
    if not math.isfinite(spec.temperature) or spec.temperature < 0:
        problems.append("temperature must be 0 (greedy) or more")
    if not 0 < spec.top_p <= 1:
        problems.append("top_p must be in (0, 1]")
    if spec.task in (AGGREGATE_TASK, PREFERENCE_TASK):
        problems.append(f'task "{spec.task}" is reserved; name the task of the examples')
    return problems


def check_eval_spec(spec: EvalSpec) -> list[str]:
    """Every problem found in `spec`, one sentence each; an empty list means it can run."""
    problems = _setting_problems(spec)
    problems += model_problems("model", spec.model_dir)
    problems += adapter_problems("adapter", spec.adapter_dir)
    if spec.template is not None:
        problems += [f"template: {problem}" for problem in validate_template(spec.template)]
    problems += file_problems(spec)
    if spec.output_dir.exists() and not spec.output_dir.is_dir():
        problems.append(f"output directory {spec.output_dir} is a file")
    return problems
