"""The prompt-template rule and the template file check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from llmops.templates import (
    load_template_file,
    placeholders,
    render,
    validate_template,
    validate_template_file,
)

REPO = Path(__file__).resolve().parents[3]
TEMPLATE_FILE = REPO / "config" / "prompt_templates.json"


@pytest.mark.parametrize(
    "template",
    [
        "{text}",
        "Summarize in one sentence.\nText: {text}\nSummary:",
        "{text} and once more: {text}",
        "Literal braces {{like this}} around {text}",
        'Answer as JSON {{"name": "..."}}: {text}',
        "{{{text}}}",
        "ünïcode ✓ {text}",
    ],
)
def test_valid_templates(template: str) -> None:
    assert validate_template(template) == []


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("", "template is empty"),
        ("   \n", "template is empty"),
        ("no placeholder at all", "template must contain {text}"),
        ("{{text}}", "template must contain {text}"),
        ("{} {text}", "positional placeholder {} is not allowed"),
        ("{0}", "positional placeholder {0} is not allowed"),
        ("{name} {text}", "unknown placeholder {name}"),
        ("{ text }", "unknown placeholder { text }"),
        ("{Text}", "unknown placeholder {Text}"),
        ("{text.upper}", "placeholder {text.upper} uses attribute or index access"),
        ("{text[0]}", "placeholder {text[0]} uses attribute or index access"),
        ("{text!r}", "placeholder {text!r} has a conversion or format spec"),
        ("{text:>10}", "placeholder {text:>10} has a conversion or format spec"),
        ("{text:{width}}", "has a conversion or format spec"),
        ("{text", "malformed braces"),
        ("text}", "malformed braces"),
        ("{text}}", "malformed braces"),
        ("{text} {", "malformed braces"),
    ],
)
def test_invalid_templates(template: str, expected: str) -> None:
    problems = validate_template(template)
    assert problems, f"{template!r} should be refused"
    assert any(expected in p for p in problems), problems


def test_problems_are_listed_once_each() -> None:
    problems = validate_template("{name} {name} {0}")
    assert problems == [
        "unknown placeholder {name}; only {text} is allowed (write {{ and }} for literal braces)",
        "positional placeholder {0} is not allowed; use {text}",
        "template must contain {text}",
    ]


def test_non_string_template() -> None:
    bad: Any = 42
    assert validate_template(bad) == ["template must be a string, not int"]


def test_placeholders_in_order_without_duplicates() -> None:
    assert placeholders("{text} {name} {text} {0} {}") == ["text", "name", "0", ""]
    assert placeholders("{text!r:>5}") == ["text"]
    assert placeholders("no fields {{here}}") == []


def test_placeholders_raise_on_malformed_braces() -> None:
    with pytest.raises(ValueError):
        placeholders("{text")


def test_render() -> None:
    assert render("Text: {text}\nSummary:", "Ada") == "Text: Ada\nSummary:"
    assert render("{{x}} {text} {text}", "a") == "{x} a a"
    # The text itself is never parsed as a template.
    assert render("{text}", "{0} {name} }{") == "{0} {name} }{"


@pytest.mark.parametrize("template", ["{name}", "{text", "nothing", "{text!r}"])
def test_render_refuses_invalid_templates(template: str) -> None:
    with pytest.raises(ValueError, match="invalid template"):
        render(template, "x")


# The template file


def test_bundled_template_file_is_valid() -> None:
    assert validate_template_file(TEMPLATE_FILE) == []
    templates = load_template_file(TEMPLATE_FILE)
    assert [t["id"] for t in templates] == ["summarization", "classification", "extraction"]
    for template in templates:
        assert set(template) == {"id", "version", "task", "description", "template"}
        assert template["version"] >= 1
        assert "{text}" in template["template"]


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "prompt_templates.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _bundled() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(TEMPLATE_FILE.read_text(encoding="utf-8"))
    return data


def _with_first(**changes: object) -> dict[str, Any]:
    data = _bundled()
    data["templates"][0].update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([], 'a JSON object with a "templates" array'),
        ({"templates": {}}, 'a JSON object with a "templates" array'),
        ({"templates": ["x"]}, "templates[0]: must be an object"),
        (_with_first(id="Summarization"), "must be lowercase letters"),
        (_with_first(id="-lead"), "must be lowercase letters"),
        (_with_first(id="a" * 64), "longer than 63"),
        (_with_first(id=7), "id must be a string"),
        (_with_first(version=0), "version must be a positive integer"),
        (_with_first(version="1"), "version must be a positive integer"),
        (_with_first(version=True), "version must be a positive integer"),
        (_with_first(template="no field"), "template must contain {text}"),
        (_with_first(template="{name} {text}"), "unknown placeholder {name}"),
        (_with_first(templte="typo"), "unknown key 'templte'"),
        (_with_first(task=3), "task must be a string"),
        ({**_bundled(), "extra": 1}, "unknown top-level key 'extra'"),
    ],
)
def test_broken_template_files(tmp_path: Path, data: object, expected: str) -> None:
    path = _write(tmp_path, data)
    problems = validate_template_file(path)
    assert any(expected in p for p in problems), problems
    with pytest.raises(ValueError, match="problem"):
        load_template_file(path)


def test_missing_key(tmp_path: Path) -> None:
    data = _bundled()
    del data["templates"][1]["template"]
    problems = validate_template_file(_write(tmp_path, data))
    assert problems == ["templates[1] (classification): missing 'template'"]


def test_duplicate_id_and_version(tmp_path: Path) -> None:
    data = _bundled()
    data["templates"].append(dict(data["templates"][0]))
    problems = validate_template_file(_write(tmp_path, data))
    assert problems == [
        "templates[3] (summarization): version 1 is already defined by templates[0]"
    ]


def test_same_id_with_a_new_version_is_fine(tmp_path: Path) -> None:
    data = _bundled()
    data["templates"].append({**data["templates"][0], "version": 2})
    path = _write(tmp_path, data)
    assert validate_template_file(path) == []
    assert len(load_template_file(path)) == 4


def test_optional_keys_default_to_empty(tmp_path: Path) -> None:
    path = _write(tmp_path, {"templates": [{"id": "t", "version": 1, "template": "{text}"}]})
    assert load_template_file(path) == [
        {"id": "t", "version": 1, "task": "", "description": "", "template": "{text}"}
    ]


def test_unreadable_and_invalid_json(tmp_path: Path) -> None:
    assert "cannot read" in validate_template_file(tmp_path / "missing.json")[0]
    broken = tmp_path / "broken.json"
    shutil.copy(TEMPLATE_FILE, broken)
    broken.write_text(broken.read_text(encoding="utf-8")[:-5], encoding="utf-8")
    assert "is not valid JSON" in validate_template_file(broken)[0]
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe{")
    assert "is not UTF-8" in validate_template_file(binary)[0]
