"""Eval gates: the file's rules, and how minimum and relative gates judge measured values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from llmops_services.errors import FailedPrecondition
from llmops_services.eval.gates import Gate, judge, load_gates

ROOT = Path(__file__).resolve().parents[3]


def test_the_bundled_gates_file_loads() -> None:
    gates = load_gates(ROOT / "config" / "eval_gates.yaml")
    assert {(g.task, g.metric) for g in gates} == {
        ("extraction", "exact_match"),
        ("classification", "accuracy"),
        ("summarization", "rougeL_f1"),
    }
    assert all(g.minimum is not None and 0 < g.minimum <= 1 for g in gates)


def test_an_absent_file_means_no_gates(tmp_path: Path) -> None:
    assert load_gates(tmp_path / "none.yaml") == []


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("gates: [", "not YAML"),
        ("- 1\n", "expected a mapping with a `gates` list"),
        ("gates:\n  - 3\n", "gates[0] must be a mapping"),
        ("gates:\n  - {metric: accuracy, min: 0.5}\n", "gates[0] needs a `task` and a `metric`"),
        ("gates:\n  - {task: a, metric: b}\n", "gates[0] needs `min` or `no_worse_than`"),
        ("gates:\n  - {task: a, metric: b, min: high}\n", "gates[0].min must be a number"),
        ("gates:\n  - {task: a, metric: b, min: true}\n", "gates[0].min must be a number"),
        ("gates:\n  - {task: a, metric: b, no_worse_than: 3}\n", "must be a model reference"),
    ],
)
def test_a_malformed_file_is_refused_naming_the_entry(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "gates.yaml"
    path.write_text(text)
    with pytest.raises(FailedPrecondition) as refused:
        load_gates(path)
    assert why in str(refused.value)


def test_minimum_gates_pass_at_the_threshold_and_fail_below_or_unmeasured() -> None:
    gates = [Gate("extraction", "exact_match", 0.9), Gate("classification", "accuracy", 0.9)]
    at, below = judge(gates, {("extraction", "exact_match"): 0.9}, lambda *_: None)
    assert at.passed and at.description == "extraction/exact_match 0.9000 >= 0.9"
    assert not below.passed and math.isnan(below.value)
    assert below.description == "classification/accuracy: not measured"
    (low,) = judge(gates[:1], {("extraction", "exact_match"): 0.89}, lambda *_: None)
    assert not low.passed and "0.8900 < 0.9" in low.description


def test_a_relative_gate_compares_with_the_baselines_run() -> None:
    gate = Gate("summarization", "rougeL_f1", baseline="tuned@production", tolerance=0.05)
    asked: list[tuple[str, str, str]] = []

    def baseline(model: str, task: str, metric: str) -> tuple[float, str] | None:
        asked.append((model, task, metric))
        return 0.70, "eval-1"

    (kept,) = judge([gate], {("summarization", "rougeL_f1"): 0.66}, baseline)
    assert kept.passed and kept.threshold == pytest.approx(0.65)
    assert "tuned@production 0.7000 in eval-1" in kept.description
    assert asked == [("tuned@production", "summarization", "rougeL_f1")]
    (worse,) = judge([gate], {("summarization", "rougeL_f1"): 0.60}, baseline)
    assert not worse.passed
    (nothing,) = judge([gate], {("summarization", "rougeL_f1"): 0.9}, lambda *_: None)
    assert not nothing.passed and "no finished run of tuned@production" in nothing.description


def test_a_gate_with_both_bounds_gives_two_verdicts() -> None:
    gate = Gate("extraction", "exact_match", 0.5, baseline="base", tolerance=0.0)
    verdicts = judge([gate], {("extraction", "exact_match"): 0.6}, lambda *_: (0.7, "eval-2"))
    assert [v.passed for v in verdicts] == [True, False]
