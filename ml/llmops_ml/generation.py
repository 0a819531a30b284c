"""Batched generation for evaluation and for reference answers.

- `generate_continuous` runs the serving engine's step loop (`batching.BatchEngine`) over a
  batch of prompts: what an eval run generates with, so that the gates judge answers produced
  by the code that serves them. A row leaves the batch as soon as it ends, so a batch costs
  its rows' own lengths, not its longest one's on every row.
- `generate` is one plain left-padded `model.generate`: transformers' own decoding, the
  reference the engine's answers are tested against (greedy, they are the same).

Prompts are padded on the left, so that every row of a batch ends at the same column and new
tokens are appended there. Position ids follow the attention mask (padding does not shift a
row's positions), so with greedy decoding a batch gives the same answers as its rows one at a
time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import GenerationConfig

from llmops_ml.loading import LoadedModel
from llmops_ml.sampling import Sampling

__all__ = ["answer", "generate", "generate_continuous", "generation_config"]


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


def generate_continuous(
    lm: LoadedModel,
    prompts: Sequence[str],
    sampling: Sampling,
    *,
    seeds: Sequence[int] | None = None,
) -> list[str]:
    """The model's answer to each prompt, all decoded together by `BatchEngine`.

    With a temperature, row i samples from its own generator seeded with `seeds[i]`, so a row's
    answer does not depend on which rows share its batch.
    """
    from dataclasses import replace

    from llmops_ml.batching import BatchEngine, Request

    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    engine = BatchEngine(
        lm.model,
        lm.eos_ids,
        int(lm.tokenizer.pad_token_id),
        max_batch_size=max(1, len(prompts)),
        device=lm.device,
    )
    for i, prompt in enumerate(prompts):
        row_sampling = sampling if seeds is None else replace(sampling, seed=seeds[i])
        engine.add(Request(str(i), list(lm.tokenizer(prompt)["input_ids"]), row_sampling))
    tokens: list[list[int]] = [[] for _ in prompts]
    while engine.has_work():
        for token in engine.step():
            if token.token_id is not None:
                tokens[int(token.request_id)].append(token.token_id)
    return [answer(lm, row) for row in tokens]
