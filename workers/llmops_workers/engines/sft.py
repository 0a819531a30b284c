"""LoRA SFT and QLoRA with TRL's `SFTTrainer`.

QLoRA is the same run on a 4-bit NF4 base: the base is quantized at load time, prepared for
k-bit training, and its 4-bit layers are kept from repacking for inference (see
`llmops_ml.loading.disable_cpu_inference_repack`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trl.trainer.sft_config import SFTConfig
from trl.trainer.sft_trainer import SFTTrainer

from llmops_ml import loading
from llmops_workers.engines import arguments, data, qlora
from llmops_workers.engines.spec import (
    TrainingSpec,
    resolve_hyperparameters,
)

log = logging.getLogger("llmops.engine")


def sft_config(spec: TrainingSpec, hp: Mapping[str, object], staging: Path) -> SFTConfig:
    """SFT options on top of the common ones.

    `completion_only_loss` defaults to on (the loss covers only completion tokens). Padding-free
    batches without packing need `max_length=None` in TRL, so rows are not truncated then.
    """
    packing = arguments.flag(hp, "packing")
    padding_free = arguments.flag(hp, "padding_free")
    max_length: int | None = int(arguments.number(hp, "max_length", 256))
    if padding_free and not packing:
        max_length = None
    config: SFTConfig = arguments.training_arguments(
        SFTConfig,
        spec,
        hp,
        staging,
        max_length=max_length,
        packing=packing,
        padding_free=padding_free,
        completion_only_loss=arguments.flag(hp, "completion_only_loss", True),
    )
    return config


def build_model(spec: TrainingSpec, hp: Mapping[str, object]) -> tuple[Any, Any]:
    """The model to train and the LoRA config to apply (None when continuing a parent adapter)."""
    four_bit = spec.method == "qlora"
    model = loading.load_model(
        spec.base_model_dir,
        arguments.PLACEMENT,
        four_bit=four_bit,
        double_quant=arguments.flag(hp, "double_quant", True),
        flattened_batches=arguments.flag(hp, "packing") or arguments.flag(hp, "padding_free"),
        trust_remote_code=spec.trust_remote_code,
    )
    if four_bit:
        model = qlora.prepare_for_kbit_training(model)
    if spec.parent_adapter_dir is not None:
        return loading.load_adapter(model, spec.parent_adapter_dir, trainable=True), None
    return model, arguments.lora_config(hp)


def build_trainer(spec: TrainingSpec, staging: Path) -> SFTTrainer:
    """The `SFTTrainer` that `run.train` runs, checkpointing into `staging`."""
    hp = resolve_hyperparameters(spec)
    tokenizer = loading.load_tokenizer(
        spec.base_model_dir, trust_remote_code=spec.trust_remote_code
    )
    train = data.to_dataset(data.sft_rows(data.read_jsonl(spec.train_file), spec.template))
    evaluation = None
    if spec.validation_file is not None:
        rows = data.sft_rows(data.read_jsonl(spec.validation_file), spec.template)
        evaluation = data.to_dataset(rows)
    model, peft_config = build_model(spec, hp)
    trainer = SFTTrainer(
        model=model,
        args=sft_config(spec, hp, staging),
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    if spec.method == "qlora":
        qlora.adapters_to_float32(trainer.model)
    log.info("%s: %d training rows, hyperparameters %s", spec.method, len(train), hp)
    return trainer
