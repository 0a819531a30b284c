"""The one prompt-template rule, shared by the SDK, the CLI and the servers.

Templates use Python `str.format` syntax with a single field, `{text}`, where a row's prompt is
rendered. Anything else in braces (`{}`, `{0}`, `{name}`, `{text.upper}`, `{text!r}`,
`{text:>10}`) is refused, because it would either fail at render time or render something
other than the text. `{{` and `}}` are literal braces. Pure Python on purpose: the server
imports this module, so a template the CLI accepts is one the server accepts.
"""

from __future__ import annotations

import json
import os
import re
import string
from typing import Any

__all__ = [
    "TEXT_FIELD",
    "load_template_file",
    "placeholders",
    "render",
    "validate_template",
    "validate_template_file",
]

TEXT_FIELD = "text"
TEMPLATE_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]*")
MAX_TEMPLATE_ID_LENGTH = 63

_FORMATTER = string.Formatter()
_FILE_KEYS = ("id", "version", "task", "description", "template")
_REQUIRED_FILE_KEYS = ("id", "version", "template")


def _fields(template: str) -> list[tuple[str, str, str | None]]:
    """(field name, format spec, conversion) of every replacement field, in order.

    Raises ValueError for malformed braces, with Python's own explanation.
    """
    return [
        (name, spec or "", conversion)
        for _, name, spec, conversion in _FORMATTER.parse(template)
        if name is not None
    ]


def placeholders(template: str) -> list[str]:
    """The distinct placeholders of a template, in order of first use.

    A placeholder is written as it appears between the braces, without conversion or format
    spec: `{text}` gives `text`, `{0}` gives `0` and `{}` gives an empty string. Raises
    ValueError when the braces are malformed, since then there is no field list to report.
    """
    seen: list[str] = []
    for name, _, _ in _fields(template):
        if name not in seen:
            seen.append(name)
    return seen


def _field_problem(name: str, spec: str, conversion: str | None) -> str | None:
    """What is wrong with one replacement field, or None when it is a plain `{text}`."""
    written = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
    written += "}"
    head = re.split(r"[.\[]", name, maxsplit=1)[0]
    if head == "" or head.isdigit():
        return f"positional placeholder {written} is not allowed; use {{text}}"
    if head != TEXT_FIELD:
        return (
            f"unknown placeholder {written}; only {{text}} is allowed "
            "(write {{ and }} for literal braces)"
        )
    if name != TEXT_FIELD:
        return f"placeholder {written} uses attribute or index access; write {{text}}"
    if conversion or spec:
        return f"placeholder {written} has a conversion or format spec; write {{text}}"
    return None


def validate_template(template: str) -> list[str]:
    """The problems of a template text, one line each; an empty list means it is valid."""
    if not isinstance(template, str):
        return [f"template must be a string, not {type(template).__name__}"]
    if not template.strip():
        return ["template is empty"]
    try:
        fields = _fields(template)
    except ValueError as err:
        return [f"malformed braces: {err} (write {{{{ and }}}} for literal braces)"]
    problems: list[str] = []
    for name, spec, conversion in fields:
        problem = _field_problem(name, spec, conversion)
        if problem is not None and problem not in problems:
            problems.append(problem)
    if not any(name == TEXT_FIELD for name, _, _ in fields):
        problems.append("template must contain {text}")
    return problems


def render(template: str, text: str) -> str:
    """Renders `text` into the template's `{text}`; ValueError if the template is invalid."""
    problems = validate_template(template)
    if problems:
        raise ValueError("invalid template: " + "; ".join(problems))
    return template.format(text=text)


def _check_entry(index: int, entry: object) -> list[str]:
    """Problems of one entry of a template file, prefixed with where it is."""
    if not isinstance(entry, dict):
        return [f"templates[{index}]: must be an object, not {type(entry).__name__}"]
    where = f"templates[{index}]"
    if isinstance(entry.get("id"), str):
        where += f" ({entry['id']})"
    problems = [f"{where}: missing {key!r}" for key in _REQUIRED_FILE_KEYS if key not in entry]
    problems += [
        f"{where}: unknown key {key!r} (allowed: {', '.join(_FILE_KEYS)})"
        for key in entry
        if key not in _FILE_KEYS
    ]
    template_id = entry.get("id")
    if "id" in entry:
        if not isinstance(template_id, str):
            problems.append(f"{where}: id must be a string")
        elif len(template_id) > MAX_TEMPLATE_ID_LENGTH:
            problems.append(f"{where}: id is longer than {MAX_TEMPLATE_ID_LENGTH} characters")
        elif not TEMPLATE_ID_PATTERN.fullmatch(template_id):
            problems.append(
                f"{where}: id {template_id!r} must be lowercase letters, digits, '-' and '_', "
                "starting with a letter or digit"
            )
    version = entry.get("version")
    if "version" in entry and (
        not isinstance(version, int) or isinstance(version, bool) or version < 1
    ):
        problems.append(f"{where}: version must be a positive integer, not {version!r}")
    for key in ("task", "description"):
        if key in entry and not isinstance(entry[key], str):
            problems.append(f"{where}: {key} must be a string")
    if "template" in entry:
        problems += [f"{where}: {p}" for p in validate_template(entry["template"])]
    return problems


def _read_template_file(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The normalized entries of a template file and the problems found in it."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as err:
        return [], [f"cannot read {os.fspath(path)}: {err.strerror or err}"]
    except UnicodeDecodeError as err:
        return [], [f"{os.fspath(path)} is not UTF-8: {err}"]
    except json.JSONDecodeError as err:
        return [], [f"{os.fspath(path)} is not valid JSON: {err}"]
    if not isinstance(data, dict) or not isinstance(data.get("templates"), list):
        return [], ['the file must be a JSON object with a "templates" array']
    extra = sorted(k for k in data if k != "templates")
    problems = [f"unknown top-level key {k!r}" for k in extra]
    entries: list[dict[str, Any]] = []
    seen: dict[tuple[str, int], int] = {}
    for index, entry in enumerate(data["templates"]):
        entry_problems = _check_entry(index, entry)
        problems += entry_problems
        if entry_problems or not isinstance(entry, dict):
            continue
        key = (entry["id"], entry["version"])
        if key in seen:
            problems.append(
                f"templates[{index}] ({key[0]}): version {key[1]} is already defined "
                f"by templates[{seen[key]}]"
            )
            continue
        seen[key] = index
        entries.append(
            {
                "id": entry["id"],
                "version": entry["version"],
                "task": entry.get("task", ""),
                "description": entry.get("description", ""),
                "template": entry["template"],
            }
        )
    return entries, problems


def validate_template_file(path: str | os.PathLike[str]) -> list[str]:
    """The problems of a prompt-template file (`config/prompt_templates.json` format)."""
    return _read_template_file(path)[1]


def load_template_file(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The templates of a valid template file, each with all five keys.

    Raises ValueError listing every problem when the file is not valid, so nothing half-checked
    is ever loaded.
    """
    entries, problems = _read_template_file(path)
    if problems:
        raise ValueError(f"{os.fspath(path)}: {len(problems)} problem(s): " + "; ".join(problems))
    return entries
