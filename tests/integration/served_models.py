"""What the inference tests serve and compare against: LoRA adapters with random weights on a
tiny base, and the plain `model.generate` answer of a base or adapter (the reference every
engine must equal for greedy decoding)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

PEFT_NOTICE = "`is_gradient_checkpointing` is deprecated"

Reference = Callable[[Path | None, str, int], str]
"""(adapter dir or None for the base, prompt, max new tokens) -> the greedy answer."""


def make_lora_adapters(base: Path, root: Path, seeds: Sequence[int] = (1, 2)) -> list[Path]:
    """LoRA adapters on `base` with random (not zero) B matrices, one per seed, so that each
    changes the base's answers, differently."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for seed in seeds:
        path = root / f"adapter-{seed}"
        model = AutoModelForCausalLM.from_pretrained(str(base))
        torch.manual_seed(seed)
        config = LoraConfig(
            r=4, lora_alpha=16, target_modules="all-linear", init_lora_weights=False
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", PEFT_NOTICE, FutureWarning)
            get_peft_model(model, config).save_pretrained(str(path))
        paths.append(path)
    return paths


def plain_generate(base: Path) -> Reference:
    """Plain greedy `model.generate` on `base`, or on `base` with one adapter (PEFT, unmerged),
    through the model package's batched generation; answers are cached."""
    from llmops_ml import generation, loading, placement

    cache: dict[tuple[Path | None, str, int], str] = {}

    def answer(adapter: Path | None, prompt: str, max_new_tokens: int) -> str:
        key = (adapter, prompt, max_new_tokens)
        if key not in cache:
            tokenizer = loading.load_tokenizer(base, padding_side="left")
            model = loading.load_model(base, placement.CPU)
            if adapter is not None:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", PEFT_NOTICE, FutureWarning)
                    model = loading.load_adapter(model, adapter, trainable=False)
            model.eval()
            lm = loading.LoadedModel(
                model, tokenizer, placement.CPU.device, loading.eos_ids(model, tokenizer)
            )
            config = generation.generation_config(lm, max_new_tokens=max_new_tokens)
            cache[key] = generation.generate(lm, [prompt], config)[0]
        return cache[key]

    return answer
