"""Hyperparameters to library options: numbers and flags read leniently from JSON, the LoRA
config, and the TRL/Trainer arguments of a deterministic run on the training placement.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from transformers import TrainingArguments

from llmops_ml.placement import Placement, choose
from llmops_workers.engines.spec import TrainingSpec
from llmops_workers.engines.validation import trackers

__all__ = ["PLACEMENT", "flag", "lora_config", "number", "training_arguments"]

PLACEMENT: Placement = choose(
    "cuda" if os.environ.get("LLMOPS_TRAINING_DEVICE") == "cuda" else "cpu"
)
"""Where training runs: the CPU in float32, or a GPU in bfloat16 in the processes of a multi-GPU
run (`LLMOPS_TRAINING_DEVICE=cuda`, which `engines.launch` sets for them; each process's GPU is
its current device). Every training load uses it, and the Trainer's arguments below follow it
(`use_cpu`, bf16), so model and Trainer cannot disagree."""


def lora_config(hp: Mapping[str, object]) -> LoraConfig:
    """LoRA on the listed modules, or on every linear layer but the LM head when none are."""
    targets = [str(name) for name in _list(hp.get("target_modules"))]
    return LoraConfig(
        r=int(_number(hp["lora_r"])),
        lora_alpha=int(_number(hp["lora_alpha"])),
        lora_dropout=float(_number(hp["lora_dropout"])),
        target_modules=targets or "all-linear",
        task_type="CAUSAL_LM",
    )


def _number(value: object) -> float:
    """A hyperparameter as a number (JSON renders int64 values as strings)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _list(value: object) -> list[object]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return list(value)
    raise ValueError(f"expected a list, got {value!r}")


def flag(hp: Mapping[str, object], name: str, default: bool = False) -> bool:
    """A boolean hyperparameter; strings such as "true"/"false" are read as JSON would."""
    value = hp.get(name, default)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def number(hp: Mapping[str, object], name: str, default: float | None = None) -> float:
    """A numeric hyperparameter, or `default` when absent."""
    value = hp.get(name, default)
    if value is None:
        raise ValueError(f"hyperparameter {name} is required")
    return _number(value)


def training_arguments(
    config_class: type[TrainingArguments],
    spec: TrainingSpec,
    hp: Mapping[str, object],
    staging_dir: Path,
    **extra: Any,
) -> Any:
    """A TRL config for a deterministic run on `PLACEMENT` that checkpoints into `staging_dir`.

    bf16 and gradient checkpointing are TRL's defaults and fail or slow down on the CPU, so
    both are off there (bf16 follows `PLACEMENT`'s dtype). `warmup_ratio` becomes a fractional
    `warmup_steps` (transformers 5).
    """
    max_steps = int(number(hp, "max_steps", -1))
    save_steps = int(number(hp, "save_steps", 0))
    logging_steps = int(number(hp, "logging_steps", 10))
    batch = int(number(hp, "per_device_train_batch_size", 8))
    seed = int(number(hp, "seed", 42))
    evaluate = spec.validation_file is not None
    return config_class(
        output_dir=str(staging_dir),
        learning_rate=number(hp, "learning_rate"),
        max_steps=max_steps if max_steps > 0 else -1,
        num_train_epochs=number(hp, "num_train_epochs", 1.0),
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=batch,
        gradient_accumulation_steps=int(number(hp, "gradient_accumulation_steps", 1)),
        warmup_steps=min(number(hp, "warmup_ratio", 0.0), 0.999),
        weight_decay=number(hp, "weight_decay", 0.0),
        lr_scheduler_type=str(hp.get("lr_scheduler_type", "linear")),
        logging_steps=logging_steps,
        save_strategy="steps" if save_steps > 0 else "no",
        save_steps=save_steps if save_steps > 0 else 500,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=int(number(hp, "eval_steps", logging_steps)) if evaluate else None,
        seed=seed,
        data_seed=seed,
        bf16=PLACEMENT.dtype == torch.bfloat16,
        fp16=False,
        activation_checkpointing=False,
        use_cpu=PLACEMENT.on_cpu,
        report_to=trackers(spec) or "none",
        run_name=spec.run_name or None,
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        **extra,
    )
