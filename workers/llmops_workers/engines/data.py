"""Training rows from a dataset file: JSONL read with line-numbered errors, prompts rendered into
the template exactly as evaluation renders them, and the in-memory `datasets.Dataset` TRL takes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets  # type: ignore[import-untyped]

from llmops.templates import render

__all__ = ["preference_rows", "read_jsonl", "render_prompt", "sft_rows", "to_dataset"]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file (blank lines skipped); ValueError names the bad line."""
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path.name} line {number}: not JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path.name} line {number}: a row must be a JSON object")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path.name} has no rows")
    return rows


def render_prompt(row: Mapping[str, Any], template: str | None) -> str:
    """The row's prompt, rendered into the template's `{text}` when there is one."""
    prompt = str(row["prompt"])
    return render(template, prompt) if template else prompt


def sft_rows(rows: list[dict[str, Any]], template: str | None) -> list[dict[str, Any]]:
    """Prompt/completion rows (prompt rendered) or chat rows (used verbatim), nothing else."""
    if "messages" in rows[0]:
        return [{"messages": row["messages"]} for row in rows]
    return [
        {"prompt": render_prompt(row, template), "completion": str(row["completion"])}
        for row in rows
    ]


def preference_rows(rows: list[dict[str, Any]], template: str | None) -> list[dict[str, Any]]:
    """Prompt/chosen/rejected rows with the prompt rendered."""
    return [
        {
            "prompt": render_prompt(row, template),
            "chosen": str(row["chosen"]),
            "rejected": str(row["rejected"]),
        }
        for row in rows
    ]


def to_dataset(rows: list[dict[str, Any]]) -> Any:
    """An in-memory `datasets.Dataset` (no cache files are written)."""
    return datasets.Dataset.from_list(rows)
