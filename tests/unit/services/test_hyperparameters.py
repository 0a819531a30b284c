"""Hyperparameter rules: unset means auto, every value is range-checked for its method."""

from __future__ import annotations

import pytest

from llmops.training_defaults import DEFAULTS
from llmops.v1 import training_service_pb2 as pb
from llmops_services.errors import InvalidArgument
from llmops_services.training.hyperparameters import (
    METHODS,
    RULES,
    Facts,
    as_dict,
    auto_values,
    resolve,
)


@pytest.mark.parametrize("method", METHODS)
def test_unset_values_take_the_method_defaults(method: str) -> None:
    resolved = as_dict(resolve(method, pb.Hyperparameters()))
    # an empty `target_modules` (the engine's choice of modules) is proto3's unset list
    assert resolved == {k: v for k, v in DEFAULTS[method].items() if v != []}
    assert set(resolved) <= set(RULES)
    for name in resolved:
        assert method in RULES[name].methods, name


def test_given_values_win_and_epochs_replace_the_default_step_count() -> None:
    resolved = as_dict(resolve("sft", pb.Hyperparameters(learning_rate=1e-4, lora_r=8)))
    assert resolved["learning_rate"] == 1e-4 and resolved["lora_r"] == 8
    assert resolved["max_steps"] == DEFAULTS["sft"]["max_steps"]
    by_epochs = as_dict(resolve("sft", pb.Hyperparameters(num_train_epochs=2)))
    assert "max_steps" not in by_epochs and by_epochs["num_train_epochs"] == 2
    both = as_dict(resolve("sft", pb.Hyperparameters(num_train_epochs=2, max_steps=7)))
    assert both["max_steps"] == 7


def test_zero_is_a_value_not_auto() -> None:
    resolved = as_dict(resolve("sft", pb.Hyperparameters(lora_dropout=0.0, warmup_ratio=0.0)))
    assert resolved["lora_dropout"] == 0.0 and resolved["warmup_ratio"] == 0.0
    with pytest.raises(InvalidArgument) as refused:
        resolve("sft", pb.Hyperparameters(max_steps=0))
    assert [v.field for v in refused.value.violations] == ["hyperparameters.max_steps"]


@pytest.mark.parametrize(
    ("method", "given", "field", "fragment"),
    [
        ("sft", pb.Hyperparameters(learning_rate=0), "learning_rate", "> 0"),
        ("sft", pb.Hyperparameters(learning_rate=2), "learning_rate", "<= 1"),
        ("sft", pb.Hyperparameters(lora_dropout=0.95), "lora_dropout", "<= 0.9"),
        (
            "sft",
            pb.Hyperparameters(per_device_train_batch_size=0),
            "per_device_train_batch_size",
            ">= 1",
        ),
        ("sft", pb.Hyperparameters(max_length=4), "max_length", ">= 8"),
        ("sft", pb.Hyperparameters(beta=0.1), "beta", "not used by sft"),
        ("sft", pb.Hyperparameters(double_quant=True), "double_quant", "applies to qlora"),
        ("dpo", pb.Hyperparameters(beta=0), "beta", "> 0"),
        ("dpo", pb.Hyperparameters(packing=True), "packing", "not used by dpo"),
        ("dpo", pb.Hyperparameters(rpo_alpha=-1), "rpo_alpha", ">= 0"),
        ("sft", pb.Hyperparameters(rpo_alpha=1), "rpo_alpha", "not used by sft"),
        ("distill", pb.Hyperparameters(distill_alpha=1.5), "distill_alpha", "<= 1"),
        ("distill", pb.Hyperparameters(temperature=0), "temperature", "> 0"),
        ("qlora", pb.Hyperparameters(lr_scheduler_type="sometimes"), "lr_scheduler_type", "one of"),
        ("sft", pb.Hyperparameters(seed=-1), "seed", ">= 0"),
        ("dpo", pb.Hyperparameters(report_to=["mlflow", "tensorbored"]), "report_to", "one of"),
    ],
)
def test_out_of_range_values_are_refused_by_name(
    method: str, given: pb.Hyperparameters, field: str, fragment: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        resolve(method, given)
    violations = refused.value.violations
    assert [v.field for v in violations] == [f"hyperparameters.{field}"]
    assert fragment in violations[0].description


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(InvalidArgument) as refused:
        resolve("sft", pb.Hyperparameters(learning_rate=-1, max_steps=0, temperature=1.0))
    assert len(refused.value.violations) == 3
    assert "3 hyperparameter(s) refused for sft" in refused.value.message


def test_the_auto_rule_scales_length_batch_and_steps_with_the_data() -> None:
    tiny_model = 5 << 20
    short_rows = auto_values(
        "sft", {}, Facts(rows=1200, approx_tokens=1200 * 40, model_bytes=tiny_model)
    )
    assert {k: v for k, (v, _) in short_rows.items()} == {
        "max_length": 256,
        "per_device_train_batch_size": 16,
        "max_steps": 450,  # 6 passes over 1200 rows: the measured default
    }
    long_rows = auto_values(
        "sft", {}, Facts(rows=100, approx_tokens=100 * 300, model_bytes=tiny_model)
    )
    assert long_rows["max_length"][0] == 2048 and long_rows["per_device_train_batch_size"][0] == 2
    assert long_rows["max_steps"][0] == 450  # 9 passes of 50 steps, under the 25-pass cap
    few = auto_values("dpo", {}, Facts(rows=10, approx_tokens=100, model_bytes=tiny_model))
    assert few["max_steps"][0] == 25 and "25.0 epochs of 10 rows" in few["max_steps"][1]
    many = auto_values(
        "sft", {}, Facts(rows=10_000_000, approx_tokens=10**8, model_bytes=tiny_model)
    )
    assert many["max_steps"][0] == 10_000
    large = auto_values("qlora", {}, Facts(rows=1000, approx_tokens=10**5, model_bytes=14 << 30))
    assert large["learning_rate"][0] == 2e-4 and "14.0 GiB" in large["learning_rate"][1]
    assert auto_values("dpo", {}, Facts(1000, 10**5, 14 << 30))["learning_rate"][0] == 5e-6


def test_set_values_are_never_replaced_by_the_auto_rule() -> None:
    facts = Facts(rows=20, approx_tokens=100, model_bytes=14 << 30)
    given = pb.Hyperparameters(max_length=512, learning_rate=1e-3, num_train_epochs=3)
    resolved = as_dict(resolve("sft", given, facts))
    assert resolved["max_length"] == 512 and resolved["learning_rate"] == 1e-3
    assert resolved["per_device_train_batch_size"] == 8 and "max_steps" not in resolved
    assert as_dict(resolve("sft", pb.Hyperparameters(), facts))["max_steps"] == 50
