"""DPO with TRL's `DPOTrainer` and LoRA.

The reference policy costs no second model: without a parent adapter it is the base with the
adapter disabled; with one (DPO after SFT), TRL keeps a frozen copy of the parent adapter as the
reference and trains the "default" copy, so the result is still an adapter on the base.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trl.trainer.dpo_config import DPOConfig
from trl.trainer.dpo_trainer import DPOTrainer

from llmops_ml import loading
from llmops_workers.engines import arguments, data
from llmops_workers.engines.spec import (
    TrainingSpec,
    resolve_hyperparameters,
)

log = logging.getLogger("llmops.engine")


def dpo_config(spec: TrainingSpec, hp: Mapping[str, object], staging: Path) -> DPOConfig:
    """DPO options on top of the common ones: sigmoid loss with `beta`.

    `rpo_alpha` > 0 adds the chosen answers' negative log-likelihood with that weight (RPO,
    Pang et al. 2024; TRL's "sft" loss term): plain DPO can lower the likelihood of the chosen
    answers along with the rejected ones, and with it the policy's own preference for them.
    """
    rpo_alpha = arguments.number(hp, "rpo_alpha", 0.0)
    losses: dict[str, list[str] | list[float]] = {"loss_type": ["sigmoid"]}
    if rpo_alpha > 0:
        losses = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, rpo_alpha]}
    config: DPOConfig = arguments.training_arguments(
        DPOConfig,
        spec,
        hp,
        staging,
        beta=arguments.number(hp, "beta", 0.1),
        max_length=int(arguments.number(hp, "max_length", 256)),
        **losses,
    )
    return config


def build_policy(spec: TrainingSpec, hp: Mapping[str, object]) -> tuple[Any, Any]:
    """The policy and the LoRA config to apply (None when it continues a parent adapter)."""
    model = loading.load_model(
        spec.base_model_dir, arguments.PLACEMENT, trust_remote_code=spec.trust_remote_code
    )
    if spec.parent_adapter_dir is not None:
        return loading.load_adapter(model, spec.parent_adapter_dir, trainable=True), None
    return model, arguments.lora_config(hp)


def build_trainer(spec: TrainingSpec, staging: Path) -> DPOTrainer:
    """The `DPOTrainer` that `run.train` runs, checkpointing into `staging`."""
    hp = resolve_hyperparameters(spec)
    tokenizer = loading.load_tokenizer(
        spec.base_model_dir, trust_remote_code=spec.trust_remote_code
    )
    rows = data.preference_rows(data.read_jsonl(spec.train_file), spec.template)
    train = data.to_dataset(rows)
    evaluation = None
    if spec.validation_file is not None:
        held_out = data.preference_rows(data.read_jsonl(spec.validation_file), spec.template)
        evaluation = data.to_dataset(held_out)
    model, peft_config = build_policy(spec, hp)
    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        args=dpo_config(spec, hp, staging),
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    log.info("dpo: %d preference rows, hyperparameters %s", len(train), hp)
    return trainer
