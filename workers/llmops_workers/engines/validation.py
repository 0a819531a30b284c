"""The worker's own guard: what is wrong with a spec before any model is loaded.

Pure Python (no torch) and cheap: it reads config files and the first row of each dataset. The
Training service checks requests on its side; this catches what only the worker can see (the
files as they are on this machine) and turns it into one clear error instead of a traceback from
deep inside TRL.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from llmops.templates import validate_template
from llmops_workers.engines import checkpoints
from llmops_workers.engines.spec import DEFAULT_HYPERPARAMETERS, METHODS, TrainingSpec

__all__ = ["check_spec", "row_kind"]

_FLAGS = frozenset(
    {"packing", "padding_free", "completion_only_loss", "double_quant", "full_finetune"}
)
_TEXT = frozenset({"lr_scheduler_type"})
_LISTS = frozenset({"target_modules", "report_to"})
_TRACKER_MODULES = {
    "mlflow": "mlflow",
    "wandb": "wandb",
    "tensorboard": "tensorboard",
    "comet_ml": "comet_ml",
    "clearml": "clearml",
    "neptune": "neptune",
    "dvclive": "dvclive",
}
"""What each `report_to` tracker needs installed on the worker, by import name."""
_KINDS_OF_METHOD = {
    "sft": ("sft", "chat"),
    "qlora": ("sft", "chat"),
    "distill": ("sft", "chat"),
    "dpo": ("preference",),
}


def row_kind(row: object) -> str:
    """The kind of a dataset row: "sft", "chat", "preference", or "" when unknown."""
    if not isinstance(row, dict):
        return ""
    if isinstance(row.get("messages"), list):
        return "chat"
    if all(isinstance(row.get(key), str) for key in ("prompt", "chosen", "rejected")):
        return "preference"
    if all(isinstance(row.get(key), str) for key in ("prompt", "completion")):
        return "sft"
    return ""


def _first_row(path: Path) -> tuple[object, str]:
    """The first non-blank row of a JSONL file, or the reason there is none."""
    try:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    return json.loads(line), ""
    except (OSError, UnicodeDecodeError) as error:
        return None, f"cannot read it ({error})"
    except json.JSONDecodeError as error:
        return None, f"its first row is not JSON ({error.msg})"
    return None, "it has no rows"


def _dataset_problems(name: str, path: Path | None, spec: TrainingSpec) -> list[str]:
    """The file exists and its first row is of a kind the method trains on."""
    if path is None:
        return []
    if not path.is_file():
        return [f"{name} {path} does not exist"]
    row, reason = _first_row(path)
    if reason:
        return [f"{name} {path}: {reason}"]
    kind = row_kind(row)
    wanted = _KINDS_OF_METHOD[spec.method]
    if kind not in wanted:
        fields = {
            "sft": '{"prompt", "completion"}',
            "chat": '{"messages": [...]}',
            "preference": '{"prompt", "chosen", "rejected"}',
        }
        expected = " or ".join(fields[k] for k in wanted)
        return [f"{name} {path}: rows must be {expected} for {spec.method}"]
    if kind == "chat" and not _has_chat_template(spec.base_model_dir):
        return [f"{name} {path} has chat rows but the base model has no chat template"]
    return []


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _has_chat_template(model_dir: Path) -> bool:
    if (model_dir / "chat_template.jinja").is_file():
        return True
    config = _read_json(model_dir / "tokenizer_config.json") or {}
    return bool(config.get("chat_template"))


def model_problems(name: str, path: Path | None) -> list[str]:
    """A Hugging Face model directory: a folder with a readable config.json."""
    if path is None:
        return []
    if not path.is_dir():
        return [f"{name} {path} is not a directory"]
    if _read_json(path / "config.json") is None:
        return [f"{name} {path} has no readable config.json"]
    return []


def adapter_problems(name: str, path: Path | None) -> list[str]:
    if path is None:
        return []
    if not (path / "adapter_config.json").is_file():
        return [f"{name} {path} is not a PEFT adapter (no adapter_config.json)"]
    return []


def _vocab_size(model_dir: Path) -> int | None:
    config = _read_json(model_dir / "config.json") or {}
    text = config.get("text_config")
    size = (text if isinstance(text, dict) else config).get("vocab_size")
    return size if isinstance(size, int) else None


def _teacher_problems(spec: TrainingSpec) -> list[str]:
    if spec.method != "distill":
        if spec.teacher_model_dir is not None or spec.teacher_adapter_dir is not None:
            return [f"a teacher is only used by distill, not {spec.method}"]
        return []
    if spec.teacher_model_dir is None:
        return ["distill needs a teacher model (teacher_model_dir)"]
    problems = model_problems("teacher model", spec.teacher_model_dir)
    problems += adapter_problems("teacher adapter", spec.teacher_adapter_dir)
    if not problems:
        student, teacher = _vocab_size(spec.base_model_dir), _vocab_size(spec.teacher_model_dir)
        if student is not None and teacher is not None and student != teacher:
            problems.append(
                f"the student's vocabulary ({student}) differs from the teacher's ({teacher}); "
                "logit distillation needs a shared tokenizer"
            )
    return problems


def _value_problem(name: str, value: object) -> str:
    """Why a hyperparameter's value has the wrong type, or ""."""
    if value is None:
        return ""
    if name in _FLAGS:
        ok = isinstance(value, bool) or (
            isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no")
        )
        return "" if ok else f"hyperparameter {name}={value!r} must be true or false"
    if name in _LISTS:
        ok = isinstance(value, str) or (
            isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        )
        return "" if ok else f"hyperparameter {name}={value!r} must be a list of names"
    if name in _TEXT:
        return "" if isinstance(value, str) else f"hyperparameter {name}={value!r} must be text"
    try:
        number = float(value) if isinstance(value, int | float | str) else None
    except ValueError:
        number = None
    if isinstance(value, bool) or number is None:
        return f"hyperparameter {name}={value!r} must be a number"
    return ""


def _hyperparameter_problems(spec: TrainingSpec) -> list[str]:
    known = set(DEFAULT_HYPERPARAMETERS[spec.method]) | {"num_train_epochs"}
    everywhere = {n for values in DEFAULT_HYPERPARAMETERS.values() for n in values}
    problems = []
    for name, value in spec.hyperparameters.items():
        if name not in known:
            reason = "not used by" if name in everywhere else "unknown for"
            problems.append(f"hyperparameter {name} is {reason} {spec.method}")
        elif problem := _value_problem(name, value):
            problems.append(problem)
    return problems


def _resume_problems(spec: TrainingSpec) -> list[str]:
    if spec.resume_from is None:
        return []
    try:
        checkpoints.require_complete(spec.resume_from)
    except ValueError as error:
        return [str(error)]
    return []


def trackers(spec: TrainingSpec) -> list[str]:
    """The experiment trackers the run reports to (`report_to`), as a list."""
    value = spec.hyperparameters.get("report_to") or []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip() not in ("", "none")]
    return [str(item) for item in value] if isinstance(value, list | tuple) else []


def _tracker_problems(spec: TrainingSpec) -> list[str]:
    """Each tracker is one the engines know, with its package installed on this worker."""
    problems = []
    for tracker in trackers(spec):
        module = _TRACKER_MODULES.get(tracker)
        if module is None:
            known = ", ".join(_TRACKER_MODULES)
            problems.append(f"report_to {tracker!r} is not a tracker; use one of {known}")
        elif importlib.util.find_spec(module) is None:
            problems.append(
                f"report_to {tracker!r}: the {module} package is not installed on this worker"
            )
    return problems


def check_spec(spec: TrainingSpec) -> list[str]:
    """Every problem found in `spec`, one sentence each; an empty list means it can run."""
    if spec.method not in METHODS:
        return [f"unknown method {spec.method!r}; expected one of {', '.join(METHODS)}"]
    problems: list[str] = []
    if spec.threads < 1:
        problems.append("threads must be at least 1")
    problems += model_problems("base model", spec.base_model_dir)
    problems += adapter_problems("parent adapter", spec.parent_adapter_dir)
    problems += _teacher_problems(spec)
    if spec.template is not None:
        problems += [f"template: {problem}" for problem in validate_template(spec.template)]
    problems += _dataset_problems("training file", spec.train_file, spec)
    problems += _dataset_problems("validation file", spec.validation_file, spec)
    problems += _hyperparameter_problems(spec)
    problems += _tracker_problems(spec)
    problems += _resume_problems(spec)
    if spec.output_dir.exists() and not spec.output_dir.is_dir():
        problems.append(f"output directory {spec.output_dir} is a file")
    return problems
