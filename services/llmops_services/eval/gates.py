"""Eval gates: the minimum a model must reach per task and metric, and optionally "no worse than
model X by more than d", read from `config/eval_gates.yaml` (`LLMOPS_EVAL_GATES_FILE`).

Gates are judged when they are asked about, against the file as it is then: a run's verdict and
a promotion always answer to the current gates, and changing the file takes effect at once.
A gate whose task the run has no examples of fails: a gate passes only on evidence.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from llmops_services.errors import FailedPrecondition, PreconditionViolation

Measured = Mapping[tuple[str, str], float]
"""Metric values by (task, metric)."""


@dataclass(frozen=True)
class Gate:
    """One gate: `minimum` (value >= minimum) and/or `baseline` (value >= the baseline model's
    value on the same dataset minus `tolerance`)."""

    task: str
    metric: str
    minimum: float | None = None
    baseline: str = ""
    tolerance: float = 0.0


@dataclass(frozen=True)
class Verdict:
    """How one gate judged one run."""

    task: str
    metric: str
    value: float
    threshold: float
    passed: bool
    description: str


def _bad(path: Path, why: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"the eval gates file {path} is invalid: {why}",
        violations=[PreconditionViolation("CONFIG", str(path), why)],
    )


def _number(path: Path, index: int, entry: Mapping[str, object], key: str) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(path, f"gates[{index}].{key} must be a number")
    return float(value)


def load_gates(path: Path) -> list[Gate]:
    """The gates in `path`; an absent file means no gates. A malformed file is refused with
    FAILED_PRECONDITION naming the entry, rather than judging against half of it."""
    if not path.is_file():
        return []
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise _bad(path, f"not YAML ({error})") from error
    entries = document.get("gates", []) if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise _bad(path, "expected a mapping with a `gates` list")
    gates = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise _bad(path, f"gates[{index}] must be a mapping")
        task, metric = entry.get("task"), entry.get("metric")
        if not isinstance(task, str) or not task or not isinstance(metric, str) or not metric:
            raise _bad(path, f"gates[{index}] needs a `task` and a `metric`")
        minimum = _number(path, index, entry, "min")
        baseline = entry.get("no_worse_than", "")
        if not isinstance(baseline, str):
            raise _bad(path, f"gates[{index}].no_worse_than must be a model reference")
        tolerance = _number(path, index, entry, "by") or 0.0
        if minimum is None and not baseline:
            raise _bad(path, f"gates[{index}] needs `min` or `no_worse_than`")
        gates.append(Gate(task, metric, minimum, baseline, tolerance))
    return gates


BaselineLookup = Callable[[str, str, str], tuple[float, str] | None]
"""(model reference, task, metric) -> (the baseline's value, which run measured it), or None."""


def judge(gates: list[Gate], measured: Measured, baseline: BaselineLookup) -> list[Verdict]:
    """Every gate's verdict on the measured values (a gate with both bounds judges both)."""
    verdicts = []
    for gate in gates:
        value = measured.get((gate.task, gate.metric), math.nan)
        name = f"{gate.task}/{gate.metric}"
        if gate.minimum is not None:
            verdicts.append(_minimum(gate, name, value))
        if gate.baseline:
            verdicts.append(_relative(gate, name, value, baseline))
    return verdicts


def _minimum(gate: Gate, name: str, value: float) -> Verdict:
    threshold = float(gate.minimum or 0.0)
    if math.isnan(value):
        return Verdict(gate.task, gate.metric, value, threshold, False, f"{name}: not measured")
    passed = value >= threshold
    sign = ">=" if passed else "<"
    return Verdict(
        gate.task, gate.metric, value, threshold, passed, f"{name} {value:.4f} {sign} {threshold:g}"
    )


def _relative(gate: Gate, name: str, value: float, baseline: BaselineLookup) -> Verdict:
    found = baseline(gate.baseline, gate.task, gate.metric)
    if found is None:
        return Verdict(
            gate.task,
            gate.metric,
            value,
            math.nan,
            False,
            f"{name}: no finished run of {gate.baseline} on this dataset to compare with",
        )
    reference, run_id = found
    threshold = reference - gate.tolerance
    if math.isnan(value):
        return Verdict(gate.task, gate.metric, value, threshold, False, f"{name}: not measured")
    passed = value >= threshold
    return Verdict(
        gate.task,
        gate.metric,
        value,
        threshold,
        passed,
        f"{name} {value:.4f} {'>=' if passed else '<'} {threshold:.4f} "
        f"({gate.baseline} {reference:.4f} in {run_id} - {gate.tolerance:g})",
    )
