"""The default hyperparameters of each training method: what `auto` falls back to.

Part of the contract: the Training service fills unset values from this table and the training
engines start from it, so both sides of the wire agree on it. Pure data, importing nothing.

Defaults are those that train the platform's tiny models well on two CPU cores (SFT at 3e-3 for
450 steps took held-out extraction and classification from 0.0 to 1.0 in about a minute; 300 steps
at 2e-3 left extraction at 0.0); they are also sane starting points for small real models, where
users usually set `learning_rate` and `max_steps` themselves.
"""

from __future__ import annotations

__all__ = ["DEFAULTS"]

_COMMON: dict[str, object] = {
    "max_steps": 300,
    "per_device_train_batch_size": 16,
    "gradient_accumulation_steps": 1,
    "max_length": 256,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,
    "target_modules": [],
    "report_to": [],
    "seed": 42,
    "warmup_ratio": 0.03,
    "weight_decay": 0.0,
    "lr_scheduler_type": "linear",
    "logging_steps": 10,
    "save_steps": 100,
    "eval_steps": 50,
}

DEFAULTS: dict[str, dict[str, object]] = {
    "sft": {
        **_COMMON,
        "learning_rate": 3e-3,
        "max_steps": 450,
        "packing": False,
        "padding_free": False,
        "completion_only_loss": True,
    },
    "qlora": {
        **_COMMON,
        "learning_rate": 3e-3,
        "max_steps": 450,
        "packing": False,
        "padding_free": False,
        "completion_only_loss": True,
        "double_quant": True,
    },
    "dpo": {**_COMMON, "learning_rate": 2e-3, "max_steps": 300, "beta": 0.5, "rpo_alpha": 1.0},
    "distill": {
        **_COMMON,
        "learning_rate": 2e-3,
        "temperature": 2.0,
        "distill_alpha": 0.5,
        "beta": 0.0,
        "full_finetune": False,
    },
}
