"""The rows of an eval file: reading, checking and turning them into examples. Pure Python.

Two row shapes are evaluated, and one file may mix them:

- `{"prompt", "reference", "task"?}`: a generation example. The model answers the prompt and the
  answer is scored against the reference by the task's metric; the row's task, else the spec's,
  else "default" (scored by exact match).
- `{"prompt", "chosen", "rejected"}`: a preference pair, always of task "preference" (a `task`
  the row carries says which task the pair is drawn from and is not used).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from llmops_workers.evaluation.spec import (
    AGGREGATE_TASK,
    DEFAULT_TASK,
    PREFERENCE_TASK,
    EvalSpec,
)

__all__ = ["MAX_ROW_PROBLEMS", "Example", "file_problems", "limited", "load_examples"]

MAX_ROW_PROBLEMS = 5
"""Row problems reported one by one; the rest are counted."""
_SHAPES = '{"prompt", "reference"} or {"prompt", "chosen", "rejected"}'
_RESERVED_TASKS = frozenset({AGGREGATE_TASK, PREFERENCE_TASK})


@dataclass(frozen=True)
class Example:
    """One row to evaluate; `prompt` is as in the file, not yet rendered into a template."""

    index: int
    """Its position among the file's rows (blank lines skipped), from 0."""
    task: str
    prompt: str
    reference: str = ""
    chosen: str = ""
    rejected: str = ""

    @property
    def is_preference(self) -> bool:
        return self.task == PREFERENCE_TASK


def _text_problem(row: dict[str, object], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        return f'"{key}" must be a string' if key in row else f'"{key}" is missing'
    return "" if value.strip() else f'"{key}" is empty'


def _row_problem(row: object, default_task: str) -> str:
    """Why a parsed row cannot be evaluated, or ""."""
    if not isinstance(row, dict):
        return "a row must be a JSON object"
    preference = "chosen" in row or "rejected" in row
    if not preference and "reference" not in row:
        return f"a row must be {_SHAPES}"
    keys = ("prompt", "chosen", "rejected") if preference else ("prompt", "reference")
    problems = [problem for key in keys if (problem := _text_problem(row, key))]
    if "task" in row and (not isinstance(row["task"], str) or not row["task"].strip()):
        problems.append('"task" must be a non-empty string')
    elif not preference:
        task = str(row.get("task") or default_task)
        if task in _RESERVED_TASKS:
            problems.append(f'task "{task}" is reserved; name the task of the example')
    return "; ".join(problems)


@dataclass(frozen=True)
class _NotJson:
    """A line that is not JSON, and the parser's reason."""

    reason: str


def _parse(path: Path) -> tuple[list[tuple[int, object]], str]:
    """(line number, row or why it is not JSON) of every non-blank line, or why none can be read.

    Lines that are not JSON stand as `_NotJson` so that problems keep the file's line order.
    """
    rows: list[tuple[int, object]] = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append((number, json.loads(line)))
                except json.JSONDecodeError as error:
                    rows.append((number, _NotJson(error.msg)))
    except (OSError, UnicodeDecodeError) as error:
        return [], f"cannot read it ({error})"
    return rows, "" if rows else "has no rows"


def _read(path: Path, default_task: str) -> tuple[list[Example], list[str]]:
    """Every row of the file as an example, or the problems that keep them from being one."""
    if not path.is_file():
        return [], ["does not exist"]
    rows, reason = _parse(path)
    if reason:
        return [], [reason]
    examples: list[Example] = []
    problems: list[str] = []
    for index, (number, row) in enumerate(rows):
        if isinstance(row, _NotJson):
            problems.append(f"line {number}: not JSON ({row.reason})")
        elif problem := _row_problem(row, default_task):
            problems.append(f"line {number}: {problem}")
        elif isinstance(row, dict) and "chosen" in row:
            examples.append(
                Example(index, PREFERENCE_TASK, row["prompt"], "", row["chosen"], row["rejected"])
            )
        elif isinstance(row, dict):
            task = str(row.get("task") or default_task or DEFAULT_TASK)
            examples.append(Example(index, task, row["prompt"], row["reference"]))
    return examples, problems


def _summarize(name: str, path: Path, problems: list[str]) -> list[str]:
    """The first problems one by one, then how many more rows have one."""
    shown = [f"{name} {path}: {problem}" for problem in problems[:MAX_ROW_PROBLEMS]]
    if len(problems) > MAX_ROW_PROBLEMS:
        shown.append(f"{name} {path}: {len(problems) - MAX_ROW_PROBLEMS} more rows have problems")
    return shown


def file_problems(spec: EvalSpec) -> list[str]:
    """The problems of the spec's eval file, one sentence each (at most MAX_ROW_PROBLEMS + 1)."""
    return _summarize("eval file", spec.eval_file, _read(spec.eval_file, spec.task)[1])


def load_examples(spec: EvalSpec) -> list[Example]:
    """Every example of the file, whatever the spec's `limit` (see `limited`).

    Raises ValueError naming the problems when any row cannot be evaluated.
    """
    examples, problems = _read(spec.eval_file, spec.task)
    if problems:
        raise ValueError("; ".join(_summarize("eval file", spec.eval_file, problems)))
    return examples


def limited(examples: list[Example], limit: int) -> list[Example]:
    """The examples a run evaluates: the first `limit`, or all of them when it is 0."""
    return examples[:limit] if limit > 0 else examples
