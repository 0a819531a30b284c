"""Teacher-forced scoring: the summed log-probability of a continuation after a prompt, as the
training loss sees it (loss, perplexity and preference scores in evaluation; rankings later).

Sequences are padded on the left, so that every continuation ends in the last columns and only
those columns' logits are needed. Position ids follow the attention mask (padding does not shift a
row's positions), so a batch scores each row as it would be scored alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

from llmops_ml.loading import LoadedModel

__all__ = ["Encoded", "encode", "sequence_logprobs"]

Encoded = tuple[list[int], int]
"""Token ids of prompt + continuation, and the index where the continuation starts."""


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
