"""Fixtures for the model package's tests: a random LoRA adapter on the tiny base (the tiny
models are tests/conftest.py's `tiny_models`)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from tests.tiny_models import TinyModels

GRADIENT_CHECKPOINTING_NOTICE = "`is_gradient_checkpointing` is deprecated"
"""A transformers deprecation notice PEFT trips when it wraps a model; not ours to fix."""


@pytest.fixture(scope="session")
def adapter_dir(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter with random (not zero) B matrices, so that it changes the base's answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    path = tmp_path_factory.mktemp("adapter") / "adapter"
    base = AutoModelForCausalLM.from_pretrained(str(tiny_models.base))
    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", GRADIENT_CHECKPOINTING_NOTICE, FutureWarning)
        get_peft_model(base, config).save_pretrained(str(path))
    return path
