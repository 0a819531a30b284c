"""QLoRA's training-only preparation of a 4-bit model (loading it is `llmops_ml.loading`'s).

Kept here rather than in the model package: both steps exist for the optimizer (k-bit
preparation before PEFT wraps the model, float32 adapters after TRL has cast them); inference on
a 4-bit model needs neither.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["adapters_to_float32", "prepare_for_kbit_training"]


def prepare_for_kbit_training(model: Any) -> Any:
    """PEFT's 4-bit preparation, without gradient checkpointing (slower, no gain at this size)."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
        model, use_gradient_checkpointing=False
    )


def adapters_to_float32(model: Any) -> None:
    """Undoes TRL's cast of a quantized model's LoRA weights to bfloat16.

    TRL follows the QLoRA paper's bfloat16 adapters (meant for GPUs); on the CPU the compute
    dtype is float32, and float32 adapters keep the optimizer's small updates exact.
    """
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.to(torch.float32)
