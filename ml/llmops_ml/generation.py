"""Batched generation: what the eval worker runs and the serving engine will run, so that the
eval gates judge the answers that are served.

Prompts are padded on the left, so that every row of a batch ends at the same column and new
tokens are appended there. `generate` derives position ids from the attention mask (padding
does not shift a row's positions), so with greedy decoding a batch gives the same answers as its
rows one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import GenerationConfig

from llmops_ml.loading import LoadedModel

__all__ = ["answer", "generate", "generation_config"]


def generation_config(
    lm: LoadedModel, *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0
) -> GenerationConfig:
    """Greedy for temperature 0; else temperature and nucleus sampling (no top-k cut).

    Every EOS id of the model ends an answer; padding uses the tokenizer's pad token.
    """
    sampling = temperature > 0
    options: dict[str, Any] = {"temperature": temperature, "top_p": top_p, "top_k": 0}
    return GenerationConfig(  # type: ignore[no-untyped-call]
        max_new_tokens=max_new_tokens,
        do_sample=sampling,
        pad_token_id=lm.tokenizer.pad_token_id,
        eos_token_id=list(lm.eos_ids),
        **(options if sampling else {}),
    )


def answer(lm: LoadedModel, new_tokens: Sequence[int]) -> str:
    """The text of the new tokens up to the first EOS (what follows is padding)."""
    end = next((i for i, token in enumerate(new_tokens) if token in lm.eos_ids), len(new_tokens))
    text: str = lm.tokenizer.decode(list(new_tokens[:end]), skip_special_tokens=True)
    return text


def generate(lm: LoadedModel, prompts: Sequence[str], config: GenerationConfig) -> list[str]:
    """The model's answer to each prompt (new tokens only, decoded), generated as one batch.

    Sampling draws from torch's global generator: seed it (`transformers.set_seed`) for
    repeatable samples.
    """
    batch = lm.tokenizer(list(prompts), return_tensors="pt", padding=True).to(lm.device)
    output = lm.model.generate(**batch, generation_config=config)
    width = batch["input_ids"].shape[1]
    return [answer(lm, row) for row in output[:, width:].tolist()]
