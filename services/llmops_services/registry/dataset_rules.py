"""Validation rules for uploaded JSONL datasets.

This module is the single place that decides whether the bytes of an upload are a usable dataset of
a given kind, so that the registry, the CLI and the workers all agree on what a row may look like.
It is pure and stdlib-only: it iterates the raw lines it is given and either returns statistics
or raises :class:`DatasetInvalid` listing the problems found (up to a limit), each with its line
number, so a user can fix the file in one go instead of one error at a time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn, get_args

__all__ = [
    "DATASET_KINDS",
    "DatasetInvalid",
    "DatasetKind",
    "DatasetLimits",
    "DatasetStats",
    "RowProblem",
    "validate_jsonl",
]

DatasetKind = Literal["sft", "preference", "eval"]
DATASET_KINDS: tuple[DatasetKind, ...] = get_args(DatasetKind)

_BOM = b"\xef\xbb\xbf"
_ROLES = ("system", "user", "assistant")
_MAX_SHOWN_VALUE = 40


@dataclass(frozen=True)
class DatasetLimits:
    """Upper bounds that keep one upload from exhausting the server."""

    max_bytes: int = 256 * 1024 * 1024
    max_rows: int = 1_000_000
    max_line_bytes: int = 1024 * 1024
    max_problems: int = 20


@dataclass(frozen=True)
class RowProblem:
    """One reason a dataset is refused.

    ``line`` is 1-based (0 for file-level problems); ``field`` is the JSON path of the offending
    value, e.g. ``prompt`` or ``messages[2].role``, or ``""`` when the whole line is at fault.
    """

    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        return f"{where}, {self.field}: {self.reason}" if self.field else f"{where}: {self.reason}"


@dataclass(frozen=True)
class DatasetStats:
    """What the registry records about a dataset that passed validation."""

    row_count: int
    size_bytes: int
    approx_tokens: int
    task_counts: dict[str, int] = field(default_factory=dict)


class DatasetInvalid(Exception):
    """Raised when a dataset breaks a rule; carries every problem found, up to the limit."""

    def __init__(self, problems: list[RowProblem], truncated: bool = False) -> None:
        self.problems = problems
        self.truncated = truncated
        count = len(problems)
        noun = "problem" if count == 1 else "problems"
        message = f"{count} {noun} in dataset"
        if truncated:
            message = f"more than {count} problems in dataset (showing the first {count})"
        super().__init__(message)


class _Stop(Exception):
    """Internal: the problem list is full, or a file-level limit ends the scan."""


class _Problems:
    """Collects problems and stops the scan once ``limit`` are listed and another turns up."""

    def __init__(self, limit: int) -> None:
        self.items: list[RowProblem] = []
        self.limit = max(1, limit)
        self.truncated = False

    def add(self, line: int, field_name: str, reason: str) -> None:
        if len(self.items) >= self.limit:
            self.truncated = True
            raise _Stop
        self.items.append(RowProblem(line, field_name, reason))

    def stop(self, line: int, field_name: str, reason: str) -> NoReturn:
        self.add(line, field_name, reason)
        raise _Stop


class _Texts:
    """Running totals of the text fields seen, for the token estimate."""

    __slots__ = ("chars", "count")

    def __init__(self) -> None:
        self.chars = 0
        self.count = 0

    def add(self, text: str) -> None:
        self.chars += len(text)
        self.count += 1


def _json_type(value: object) -> str:
    # bool is checked before int because bool is a subclass of int.
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__  # pragma: no cover - json only produces the types above


def _show(value: str) -> str:
    if len(value) > _MAX_SHOWN_VALUE:
        value = value[: _MAX_SHOWN_VALUE - 3] + "..."
    return repr(value)


def _reject_constant(name: str) -> NoReturn:
    # Python's json accepts NaN/Infinity, which are not JSON and which other readers reject.
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _check_text(
    value: object, line: int, path: str, problems: _Problems, texts: _Texts | None
) -> str | None:
    """Check one string field; return it when valid so callers can compare or count it."""
    if not isinstance(value, str):
        problems.add(line, path, f"expected a string, got {_json_type(value)}")
        return None
    if not value.strip():
        problems.add(line, path, "must not be empty")
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        problems.add(line, path, "contains an unpaired surrogate escape")
        return None
    if texts is not None:
        texts.add(value)
    return value


def _check_required(
    row: dict[str, Any], name: str, line: int, problems: _Problems, texts: _Texts
) -> str | None:
    if name not in row:
        problems.add(line, name, "missing required field")
        return None
    return _check_text(row[name], line, name, problems, texts)


def _check_messages(value: object, line: int, problems: _Problems, texts: _Texts) -> None:
    if not isinstance(value, list):
        problems.add(line, "messages", f"expected an array, got {_json_type(value)}")
        return
    if not value:
        problems.add(line, "messages", "must not be empty")
        return
    roles: list[str | None] = []
    for index, message in enumerate(value):
        path = f"messages[{index}]"
        if not isinstance(message, dict):
            problems.add(line, path, f"expected an object, got {_json_type(message)}")
            roles.append(None)
            continue
        role = message.get("role")
        if "role" not in message:
            problems.add(line, f"{path}.role", "missing required field")
            role = None
        elif not isinstance(role, str):
            problems.add(line, f"{path}.role", f"expected a string, got {_json_type(role)}")
            role = None
        elif role not in _ROLES:
            problems.add(
                line, f"{path}.role", f"must be one of system, user, assistant, got {_show(role)}"
            )
            role = None
        roles.append(role)
        if "content" not in message:
            problems.add(line, f"{path}.content", "missing required field")
        else:
            _check_text(message["content"], line, f"{path}.content", problems, texts)
    # Structural rules only make sense once every role is known.
    if None in roles:
        return
    if "user" not in roles:
        problems.add(line, "messages", "needs at least one user message")
    if roles[-1] != "assistant":
        problems.add(
            line, f"messages[{len(roles) - 1}].role", "the last message must be from the assistant"
        )


def _check_sft(row: dict[str, Any], line: int, problems: _Problems, texts: _Texts) -> None:
    pair_form = "prompt" in row or "completion" in row
    if "messages" in row:
        if pair_form:
            problems.add(line, "messages", "use either prompt/completion or messages, not both")
            return
        _check_messages(row["messages"], line, problems, texts)
        return
    if not pair_form:
        problems.add(line, "", "an sft row needs prompt and completion, or messages")
        return
    _check_required(row, "prompt", line, problems, texts)
    _check_required(row, "completion", line, problems, texts)


def _check_preference(row: dict[str, Any], line: int, problems: _Problems, texts: _Texts) -> None:
    _check_required(row, "prompt", line, problems, texts)
    chosen = _check_required(row, "chosen", line, problems, texts)
    rejected = _check_required(row, "rejected", line, problems, texts)
    if chosen is not None and rejected is not None and chosen.strip() == rejected.strip():
        problems.add(line, "rejected", "must differ from chosen")


def _check_eval(row: dict[str, Any], line: int, problems: _Problems, texts: _Texts) -> None:
    _check_required(row, "prompt", line, problems, texts)
    _check_required(row, "reference", line, problems, texts)


_RowCheck = Callable[[dict[str, Any], int, _Problems, _Texts], None]
_CHECKS: dict[str, _RowCheck] = {
    "sft": _check_sft,
    "preference": _check_preference,
    "eval": _check_eval,
}


def _parse_line(
    raw: bytes, line: int, limits: DatasetLimits, problems: _Problems, skipped: int
) -> dict[str, Any] | None:
    """Turn one non-blank raw line into a JSON object, or record why it is not one.

    ``skipped`` is how many leading bytes (a BOM) were dropped, so offsets match the user's file.
    """
    content = raw.rstrip(b"\r\n")
    if len(content) > limits.max_line_bytes:
        problems.add(line, "", f"line is longer than {limits.max_line_bytes} bytes")
        return None
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + skipped
        problems.add(line, "", f"not valid UTF-8 (bad byte at offset {offset})")
        return None
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        problems.add(line, "", f"invalid JSON: {exc.msg} (column {exc.colno})")
        return None
    except ValueError as exc:
        problems.add(line, "", f"invalid JSON: {exc}")
        return None
    except RecursionError:
        problems.add(line, "", "invalid JSON: nested too deeply")
        return None
    if not isinstance(value, dict):
        problems.add(line, "", f"expected a JSON object, got {_json_type(value)}")
        return None
    return value


def validate_jsonl(
    lines: Iterable[bytes], kind: DatasetKind, limits: DatasetLimits | None = None
) -> DatasetStats:
    """Validate raw JSONL lines as a dataset of ``kind``; return its stats or raise.

    ``lines`` are raw lines as read from a binary file, with or without line endings. Blank lines
    are skipped but still counted for line numbers; a UTF-8 byte order mark on line 1 is dropped.
    Raises :class:`DatasetInvalid` with every problem found, up to ``limits.max_problems``.
    """
    if kind not in _CHECKS:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {', '.join(_CHECKS)}")
    limits = limits or DatasetLimits()
    check = _CHECKS[kind]
    problems = _Problems(limits.max_problems)
    texts = _Texts()
    task_counts: dict[str, int] = {}
    size = 0
    rows = 0
    line = 0
    try:
        for raw in lines:
            line += 1
            size += len(raw)
            if size > limits.max_bytes:
                problems.stop(0, "", f"file is larger than {limits.max_bytes} bytes")
            skipped = 0
            if line == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
                skipped = len(_BOM)
            if not raw.strip():
                continue
            rows += 1
            if rows > limits.max_rows:
                problems.stop(line, "", f"dataset has more than {limits.max_rows} rows")
            row = _parse_line(raw, line, limits, problems, skipped)
            if row is None:
                continue
            check(row, line, problems, texts)
            if "task" in row:
                task = _check_text(row["task"], line, "task", problems, None)
                if task is not None:
                    task_counts[task] = task_counts.get(task, 0) + 1
        if rows == 0:
            problems.add(0, "", "dataset has no rows")
    except _Stop:
        pass
    if problems.items:
        # File-level problems (line 0) come first; the rest stay in file order.
        ordered = sorted(problems.items, key=lambda p: p.line != 0)
        raise DatasetInvalid(ordered, truncated=problems.truncated)
    return DatasetStats(
        row_count=rows,
        size_bytes=size,
        approx_tokens=max(texts.chars // 4, texts.count),
        task_counts=dict(sorted(task_counts.items())),
    )
