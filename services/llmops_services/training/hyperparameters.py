"""Hyperparameter rules: which ones each method takes, their ranges, and how the ones a request
leaves unset (`auto`) are chosen: from the training data and the base model where that matters
(`auto_values`, the rule in docs/training.md), else from the method's defaults. The job records
the values it used.

The defaults themselves (`DEFAULTS`) are the contract's table, `llmops.training_defaults`, which
the training engines start from too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf import json_format

from llmops.training_defaults import DEFAULTS
from llmops.v1 import training_service_pb2 as pb
from llmops_services.errors import FieldViolation, InvalidArgument

METHODS = ("sft", "qlora", "dpo", "distill")
_ALL = frozenset(METHODS)
_LORA = frozenset(METHODS)
_LR_SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts")
TRACKERS = ("mlflow", "wandb", "tensorboard", "comet_ml", "clearml", "neptune", "dvclive")
"""The experiment trackers `report_to` may name: integrations of transformers' Trainer that
log from the training process alone, configured by the workers' environment."""


@dataclass(frozen=True)
class Rule:
    """What one hyperparameter accepts."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    methods: frozenset[str] = _ALL
    choices: tuple[str, ...] = ()

    def problem(self, value: object) -> str:
        """Why `value` is refused, or "" when it is fine (each item, for a list)."""
        if isinstance(value, list):
            return next((p for item in value if (p := self.problem(item))), "")
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return ""
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return f"must be {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None and value > self.high:
            return f"must be <= {self.high:g}"
        return ""


RULES: dict[str, Rule] = {
    "learning_rate": Rule(0, 1, low_open=True),
    "max_steps": Rule(1, 1_000_000),
    "num_train_epochs": Rule(0, 1000, low_open=True),
    "per_device_train_batch_size": Rule(1, 1024),
    "gradient_accumulation_steps": Rule(1, 1024),
    "max_length": Rule(8, 131_072),
    "lora_r": Rule(1, 1024, methods=_LORA),
    "lora_alpha": Rule(1, 4096, methods=_LORA),
    "lora_dropout": Rule(0, 0.9, methods=_LORA),
    "target_modules": Rule(methods=_LORA),
    "beta": Rule(0, 100, low_open=True, methods=frozenset({"dpo", "distill"})),
    "rpo_alpha": Rule(0, 100, methods=frozenset({"dpo"})),
    "temperature": Rule(0, 100, low_open=True, methods=frozenset({"distill"})),
    "distill_alpha": Rule(0, 1, methods=frozenset({"distill"})),
    "seed": Rule(0, 2**32 - 1),
    "warmup_ratio": Rule(0, 1),
    "weight_decay": Rule(0, 10),
    "lr_scheduler_type": Rule(choices=_LR_SCHEDULERS),
    "logging_steps": Rule(1, 1_000_000),
    "save_steps": Rule(1, 1_000_000),
    "eval_steps": Rule(1, 1_000_000),
    "packing": Rule(methods=frozenset({"sft", "qlora"})),
    "padding_free": Rule(methods=frozenset({"sft", "qlora"})),
    "completion_only_loss": Rule(methods=frozenset({"sft", "qlora"})),
    "double_quant": Rule(methods=frozenset({"qlora"})),
    "full_finetune": Rule(methods=frozenset({"distill"})),
    "report_to": Rule(choices=TRACKERS),
}

# The auto rule's bounds (docs/training.md explains each).
TOKENS_PER_BATCH = 4096
MAX_LENGTH_RANGE = (256, 2048)
MAX_BATCH = 16
MAX_EPOCHS = 25
MAX_STEPS_FOR_ONE_EPOCH = 10_000
LARGE_MODEL_BYTES = 1 << 30
LARGE_MODEL_LEARNING_RATE = {"sft": 2e-4, "qlora": 2e-4, "dpo": 5e-6, "distill": 2e-4}


@dataclass(frozen=True)
class Facts:
    """What the auto rule looks at: the training data and the base model."""

    rows: int
    approx_tokens: int
    model_bytes: int


def _power_of_two_above(value: float) -> int:
    return 1 << max(0, math.ceil(math.log2(max(value, 1.0))))


def auto_values(
    method: str, given: Mapping[str, object], facts: Facts
) -> dict[str, tuple[object, str]]:
    """The values the rule picks for the unset hyperparameters that depend on the data or the
    model, each with the reason shown in the job's events."""
    chosen: dict[str, tuple[object, str]] = {}
    rows = max(facts.rows, 1)
    per_row = facts.approx_tokens / rows
    max_length = _number(given.get("max_length"))
    if not isinstance(max_length, int):
        low, high = MAX_LENGTH_RANGE
        max_length = min(max(_power_of_two_above(4 * per_row), low), high)
        chosen["max_length"] = (max_length, f"4 x {per_row:.0f} tokens per row, in {low}..{high}")
    batch = _number(given.get("per_device_train_batch_size"))
    if not isinstance(batch, int):
        batch = max(1, min(MAX_BATCH, TOKENS_PER_BATCH // max_length))
        chosen["per_device_train_batch_size"] = (
            batch,
            f"{TOKENS_PER_BATCH} tokens per batch at max_length {max_length}, at most {MAX_BATCH}",
        )
    accumulation = _number(given.get("gradient_accumulation_steps", 1))
    if "max_steps" not in given and "num_train_epochs" not in given:
        per_epoch = math.ceil(
            rows / (batch * (accumulation if isinstance(accumulation, int) else 1))
        )
        default = int(str(DEFAULTS[method]["max_steps"]))
        steps = min(max(default, min(per_epoch, MAX_STEPS_FOR_ONE_EPOCH)), MAX_EPOCHS * per_epoch)
        chosen["max_steps"] = (steps, f"{steps / per_epoch:.1f} epochs of {facts.rows} rows")
    if "learning_rate" not in given and facts.model_bytes >= LARGE_MODEL_BYTES:
        rate = LARGE_MODEL_LEARNING_RATE[method]
        chosen["learning_rate"] = (rate, f"base model of {facts.model_bytes / 2**30:.1f} GiB")
    return chosen


def _given(hyperparameters: pb.Hyperparameters) -> dict[str, object]:
    """The fields a request set (unset optional fields are `auto`)."""
    return json_format.MessageToDict(hyperparameters, preserving_proto_field_name=True)


def check(method: str, hyperparameters: pb.Hyperparameters) -> dict[str, object]:
    """The values a request set, checked against the method's rules.

    Raises InvalidArgument naming each bad field as `hyperparameters.<name>`.
    """
    given = _given(hyperparameters)
    violations: list[FieldViolation] = []
    for name, value in given.items():
        rule = RULES[name]
        if method not in rule.methods:
            violations.append(
                FieldViolation(
                    f"hyperparameters.{name}",
                    f"not used by {method}; it applies to {', '.join(sorted(rule.methods))}",
                )
            )
        elif problem := rule.problem(_number(value)):
            violations.append(FieldViolation(f"hyperparameters.{name}", problem))
    if violations:
        raise InvalidArgument(
            f"{len(violations)} hyperparameter(s) refused for {method}", violations=violations
        )
    return given


def fill(
    method: str, given: Mapping[str, object], picked: Mapping[str, tuple[object, str]]
) -> pb.Hyperparameters:
    """Every value the job uses: the checked `given` ones, then the auto rule's `picked`
    ones, then the method's defaults."""
    resolved = dict(DEFAULTS[method])
    resolved.update({name: value for name, (value, _) in picked.items()})
    resolved.update(given)
    if "num_train_epochs" in given and "max_steps" not in given:
        resolved.pop("max_steps")
    message = pb.Hyperparameters()
    json_format.ParseDict(resolved, message)
    return message


def resolve(
    method: str, hyperparameters: pb.Hyperparameters, facts: Facts | None = None
) -> pb.Hyperparameters:
    """Checks the given values and fills in every unset one: by the auto rule when the data and
    model are known (`facts`), else from the method's defaults."""
    given = check(method, hyperparameters)
    return fill(method, given, auto_values(method, given, facts) if facts is not None else {})


def _number(value: object) -> object:
    """JSON renders int64 fields as strings; compare them as numbers."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return value
    return value


def as_dict(hyperparameters: pb.Hyperparameters) -> Mapping[str, object]:
    """The values as plain Python, for engines and lineage."""
    return {name: _number(value) for name, value in _given(hyperparameters).items()}
