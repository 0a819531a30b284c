"""The model side of an eval run: loading, batched generation, and teacher-forced log-probabilities
of continuations. Imports torch; only `engine` imports this module.

Both generation and scoring pad on the left, so that every row of a batch ends at the same
column: generation appends there, and scoring needs the logits of the last columns only. Position
ids follow the attention mask (padding does not shift a row's positions), as `generate` does on
its own, so with greedy decoding a batch gives the same answers as its rows one at a time.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoModelForCausalLM, GenerationConfig

from llmops_workers.engines import common
from llmops_workers.evaluation.spec import EvalSpec

__all__ = ["Encoded", "LoadedModel", "encode", "generate", "load", "sequence_logprobs"]

log = logging.getLogger("llmops.eval")

Encoded = tuple[list[int], int]
"""Token ids of prompt + continuation, and the index where the continuation starts."""


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference, its tokenizer (padding on the left), and where it runs."""

    model: Any
    tokenizer: Any
    device: torch.device
    eos_ids: tuple[int, ...]
    """Every token id that ends an answer: the tokenizer's EOS and the model's own."""

    @property
    def dtype(self) -> str:
        return str(self.model.dtype).removeprefix("torch.")


def load(spec: EvalSpec) -> LoadedModel:
    """The model (with the adapter merged in) in float32 on the CPU, or bfloat16 on a GPU.

    The adapter is merged rather than kept as a PEFT wrapper: inference is then a plain
    forward of the base architecture, with nothing left of LoRA to compute per token.
    """
    tokenizer = common.load_tokenizer(spec.model_dir)
    tokenizer.padding_side = "left"
    model: Any
    if torch.cuda.is_available():
        device = torch.device("cuda")
        model = AutoModelForCausalLM.from_pretrained(str(spec.model_dir), dtype=torch.bfloat16)
        model = model.to(device)
    else:
        device = torch.device("cpu")
        model = common.load_model(spec.model_dir)
    if spec.adapter_dir is not None:
        model = common.load_adapter(model, spec.adapter_dir, trainable=False).merge_and_unload()
    model.eval()
    configured = model.generation_config.eos_token_id
    eos = [configured] if isinstance(configured, int) else list(configured or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
        eos.insert(0, tokenizer.eos_token_id)
    log.info("evaluating %s on %s (%s)", spec.model_dir, device, model.dtype)
    return LoadedModel(model, tokenizer, device, tuple(eos))


# ---- generation ---------------------------------------------------------------------------------


def _generation_config(lm: LoadedModel, spec: EvalSpec) -> GenerationConfig:
    """Greedy for temperature 0; else temperature and nucleus sampling (no top-k cut)."""
    sampling = spec.temperature > 0
    options: dict[str, Any] = {"temperature": spec.temperature, "top_p": spec.top_p, "top_k": 0}
    return GenerationConfig(  # type: ignore[no-untyped-call]
        max_new_tokens=spec.max_new_tokens,
        do_sample=sampling,
        pad_token_id=lm.tokenizer.pad_token_id,
        eos_token_id=list(lm.eos_ids),
        **(options if sampling else {}),
    )


def _answer(lm: LoadedModel, new_tokens: list[int]) -> str:
    """The text of the new tokens up to the first EOS (what follows is padding)."""
    end = next((i for i, token in enumerate(new_tokens) if token in lm.eos_ids), len(new_tokens))
    text: str = lm.tokenizer.decode(new_tokens[:end], skip_special_tokens=True)
    return text


def generate(lm: LoadedModel, prompts: Sequence[str], spec: EvalSpec) -> list[str]:
    """The model's answer to each prompt (new tokens only, decoded), generated as one batch."""
    batch = lm.tokenizer(list(prompts), return_tensors="pt", padding=True).to(lm.device)
    output = lm.model.generate(**batch, generation_config=_generation_config(lm, spec))
    width = batch["input_ids"].shape[1]
    return [_answer(lm, row) for row in output[:, width:].tolist()]


# ---- scoring ------------------------------------------------------------------------------------


def _common_prefix(first: Sequence[int], second: Sequence[int]) -> int:
    length = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        length += 1
    return length


def encode(tokenizer: Any, prompt: str, continuations: Sequence[str]) -> list[Encoded]:
    """Each continuation after the prompt, tokenized as TRL does when training on it.

    As in TRL's SFT and DPO trainers: the continuation gets the EOS token, prompt and
    continuation are tokenized together (a tokenizer may merge tokens across the boundary, and
    SentencePiece ones tokenize a lone continuation differently), and the continuation starts
    where the tokens of the prompt alone and of the whole diverge (for several continuations, the
    earliest such point, so that all are scored from the same context). The first token is never
    scored: nothing predicts it.
    """
    eos = tokenizer.eos_token or ""
    prompt_ids = tokenizer(prompt)["input_ids"]
    full = [
        tokenizer(prompt + text + ("" if text.endswith(eos) else eos))["input_ids"]
        for text in continuations
    ]
    start = max(1, min(_common_prefix(prompt_ids, ids) for ids in full))
    return [(ids, start) for ids in full]


def _accepts_logits_to_keep(model: Any) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def sequence_logprobs(
    lm: LoadedModel, sequences: Sequence[Encoded], batch_size: int
) -> list[tuple[float, int]]:
    """(summed log-probability, token count) of each sequence's continuation, teacher-forced.

    Left padding puts every continuation in the last columns, so only the logits of the
    longest continuation's width are computed (`logits_to_keep`) rather than the whole
    sequence's, which for a large vocabulary is most of the memory. Log-softmax runs in float32.
    """
    results: list[tuple[float, int]] = []
    pad = lm.tokenizer.pad_token_id
    keep_only_last = _accepts_logits_to_keep(lm.model)
    for first in range(0, len(sequences), batch_size):
        chunk = sequences[first : first + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        counts = [len(ids) - start for ids, start in chunk]
        keep = max(counts) + 1
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids, _ in chunk])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids, _ in chunk])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        extra = {"logits_to_keep": keep} if keep_only_last else {}
        logits = lm.model(
            input_ids=input_ids.to(lm.device),
            attention_mask=mask.to(lm.device),
            position_ids=positions.to(lm.device),
            **extra,
        ).logits[:, -keep:-1]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        targets = input_ids[:, width - keep + 1 :].to(lm.device)
        token_logprobs = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1).cpu()
        for row, count in enumerate(counts):  # a row's continuation is its last `count` columns
            total = float(token_logprobs[row, keep - 1 - count :].sum()) if count else 0.0
            results.append((total, count))
    return results
