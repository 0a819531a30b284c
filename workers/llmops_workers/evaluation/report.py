"""The report of a completed run: `summary.json`, `examples.jsonl` and `report.md`. Pure Python.

Each file is written under a temporary name and renamed into place, and `summary.json` comes
last: a reader that finds it finds the whole report, and a crash leaves no half-written file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_workers.evaluation.metrics import (
    GenerationRecord,
    PreferenceRecord,
    Record,
    task_metric,
)
from llmops_workers.evaluation.spec import EvalSpec, TaskMetric

__all__ = [
    "EXAMPLES_FILE",
    "FAILURES_PER_TASK",
    "MARKDOWN_FILE",
    "SUMMARY_FILE",
    "ReportPaths",
    "RunInfo",
    "write_report",
]

SUMMARY_FILE = "summary.json"
EXAMPLES_FILE = "examples.jsonl"
MARKDOWN_FILE = "report.md"
FAILURES_PER_TASK = 3
_CELL_CHARACTERS = 80


@dataclass(frozen=True)
class RunInfo:
    """What the report says about the run besides its examples."""

    device: str
    dtype: str
    load_seconds: float
    eval_seconds: float
    classification_labels: Sequence[str] = ()

    @property
    def wall_seconds(self) -> float:
        return self.load_seconds + self.eval_seconds


@dataclass(frozen=True)
class ReportPaths:
    summary: Path
    examples: Path
    markdown: Path


def _write_atomically(path: Path, chunks: Iterable[str]) -> Path:
    """Writes `chunks` to a temporary file next to `path`, flushes it to disk, renames it."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.writelines(chunks)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def example_row(record: Record) -> dict[str, Any]:
    """One line of `examples.jsonl`."""
    example = record.example
    row: dict[str, Any] = {
        "index": example.index,
        "task": example.task,
        "metric": task_metric(example.task),
        "score": record.score,
        "prompt": record.prompt,
    }
    if isinstance(record, PreferenceRecord):
        row["metric"] = "preference_accuracy"
        row.update(
            chosen=example.chosen,
            rejected=example.rejected,
            chosen_logprob=record.chosen_logprob,
            rejected_logprob=record.rejected_logprob,
            margin=record.margin,
            chosen_tokens=record.chosen_tokens,
            rejected_tokens=record.rejected_tokens,
        )
        return row
    row.update(
        prediction=record.prediction,
        reference=example.reference,
        loss=record.nll / record.tokens if record.tokens else None,
        reference_tokens=record.tokens,
    )
    return row


def summary(
    spec: EvalSpec, records: Sequence[Record], metrics: Sequence[TaskMetric], info: RunInfo
) -> dict[str, Any]:
    """The content of `summary.json`."""
    counts: dict[str, int] = {}
    tokens: dict[str, int] = {}
    for record in records:
        counts[record.example.task] = counts.get(record.example.task, 0) + 1
        if isinstance(record, GenerationRecord):
            tokens[record.example.task] = tokens.get(record.example.task, 0) + record.tokens
    return {
        "status": "completed",
        "model_dir": str(spec.model_dir),
        "adapter_dir": str(spec.adapter_dir) if spec.adapter_dir is not None else None,
        "eval_file": str(spec.eval_file),
        "settings": {
            "task": spec.task,
            "template": spec.template,
            "max_new_tokens": spec.max_new_tokens,
            "temperature": spec.temperature,
            "top_p": spec.top_p,
            "batch_size": spec.batch_size,
            "limit": spec.limit,
            "threads": spec.threads,
            "seed": spec.seed,
        },
        "device": info.device,
        "dtype": info.dtype,
        "examples": len(records),
        "counts": dict(sorted(counts.items())),
        "reference_tokens": dict(sorted(tokens.items())),
        "classification_labels": sorted(info.classification_labels),
        "metrics": [
            {"task": m.task, "metric": m.metric, "value": m.value, "count": m.count}
            for m in metrics
        ],
        "load_seconds": round(info.load_seconds, 3),
        "eval_seconds": round(info.eval_seconds, 3),
        "wall_seconds": round(info.wall_seconds, 3),
        "examples_per_second": len(records) / info.eval_seconds if info.eval_seconds else None,
    }


# ---- Markdown -----------------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Text as a code span in a table cell: one line, shortened, pipes escaped."""
    flat = text.replace("\r\n", "\n").replace("\n", "⏎")
    if len(flat) > _CELL_CHARACTERS:
        flat = flat[: _CELL_CHARACTERS - 1] + "…"
    if not flat.strip():
        return "(empty)"
    longest = max((len(run) for run in re.findall(r"`+", flat)), default=0)
    fence = "`" * (longest + 1)
    padded = f" {flat} " if flat.startswith("`") or flat.endswith("`") else flat
    return (fence + padded + fence).replace("|", "\\|")


def _failures(records: Sequence[Record], task: str) -> list[Record]:
    """The task's examples that are not fully right, lowest score first, then in file order."""
    wrong = [r for r in records if r.example.task == task and r.score < 1.0]
    return sorted(wrong, key=lambda r: (r.score, r.example.index))[:FAILURES_PER_TASK]


def _failure_table(records: Sequence[Record], task: str) -> Iterator[str]:
    failures = _failures(records, task)
    if not failures:
        return
    yield f"\n### {task}\n\n"
    if isinstance(failures[0], PreferenceRecord):
        yield "| # | chosen | rejected | margin (nats) |\n|---:|---|---|---:|\n"
        for record in failures:
            assert isinstance(record, PreferenceRecord)
            example = record.example
            chosen, rejected = _cell(example.chosen), _cell(example.rejected)
            yield f"| {example.index} | {chosen} | {rejected} | {record.margin:.3f} |\n"
        return
    yield "| # | reference | prediction | score |\n|---:|---|---|---:|\n"
    for record in failures:
        assert isinstance(record, GenerationRecord)
        index, reference = record.example.index, _cell(record.example.reference)
        yield f"| {index} | {reference} | {_cell(record.prediction)} | {record.score:.3f} |\n"


def markdown(
    spec: EvalSpec, records: Sequence[Record], metrics: Sequence[TaskMetric], info: RunInfo
) -> Iterator[str]:
    """The lines of `report.md`: the settings, a task x metric table, the first failures."""
    model = f"`{spec.model_dir}`"
    if spec.adapter_dir is not None:
        model += f" with adapter `{spec.adapter_dir}`"
    rate = len(records) / info.eval_seconds if info.eval_seconds else 0.0
    yield "# Evaluation report\n\n"
    yield f"- model: {model}\n"
    yield f"- data: `{spec.eval_file}`, {len(records)} examples\n"
    decoding = "greedy" if spec.temperature == 0 else f"T={spec.temperature}, top_p={spec.top_p}"
    yield (
        f"- generation: {decoding}, at most {spec.max_new_tokens} new tokens, "
        f"batches of {spec.batch_size}, on {info.device} ({info.dtype})\n"
    )
    yield (
        f"- time: {info.wall_seconds:.1f} s ({info.load_seconds:.1f} s loading), "
        f"{rate:.2f} examples/s\n\n"
    )
    yield "| task | metric | value | count |\n|---|---|---:|---:|\n"
    for metric in metrics:
        yield f"| {metric.task} | {metric.metric} | {metric.value:.4f} | {metric.count} |\n"
    tasks = sorted({record.example.task for record in records})
    if any(_failures(records, task) for task in tasks):
        yield f"\n## Failures\n\nThe first {FAILURES_PER_TASK} per task, lowest score first.\n"
        for task in tasks:
            yield from _failure_table(records, task)


def write_report(
    spec: EvalSpec, records: Sequence[Record], metrics: Sequence[TaskMetric], info: RunInfo
) -> ReportPaths:
    """Writes the three files into `spec.output_dir` (created if needed), summary last."""
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    out = spec.output_dir
    examples = _write_atomically(
        out / EXAMPLES_FILE,
        (json.dumps(example_row(record), ensure_ascii=False) + "\n" for record in records),
    )
    report = _write_atomically(out / MARKDOWN_FILE, markdown(spec, records, metrics, info))
    content = json.dumps(summary(spec, records, metrics, info), indent=2, ensure_ascii=False)
    summary_path = _write_atomically(out / SUMMARY_FILE, [content + "\n"])
    return ReportPaths(summary_path, examples, report)
