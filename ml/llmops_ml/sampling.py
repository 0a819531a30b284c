"""Choosing each row's next token from its logits, with that row's own sampling parameters.

A batch mixes greedy and sampled requests, so the parameters are applied row by row, in the
order transformers' logits processors apply them (repetition penalty, temperature, top-k,
top-p). A seeded request draws from its own generator: it samples the same tokens alone or in a
batch, whatever the other rows do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["Sampling", "choose_tokens", "generator_for"]


@dataclass(frozen=True)
class Sampling:
    """How one request picks its tokens; the defaults are greedy decoding of 64 tokens."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    """0 = greedy (argmax); above 0, the logits are divided by it before sampling."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p."""
    top_k: int = 0
    """Keep the k most likely tokens; 0 = no cut."""
    repetition_penalty: float = 1.0
    """CTRL's penalty on every token of the prompt and the answer so far (1 = none)."""
    seed: int | None = None
    """A per-request generator, so a seeded request samples the same alone or batched."""

    def __post_init__(self) -> None:
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be at least 1, not {self.max_new_tokens}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            problems.append(f"temperature must be 0 or more, not {self.temperature}")
        if not (0 < self.top_p <= 1):
            problems.append(f"top_p must be in (0, 1], not {self.top_p}")
        if self.top_k < 0:
            problems.append(f"top_k must be 0 or more, not {self.top_k}")
        if not (math.isfinite(self.repetition_penalty) and self.repetition_penalty > 0):
            problems.append(f"repetition_penalty must be above 0, not {self.repetition_penalty}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def plain_greedy(self) -> bool:
        """Greedy with nothing to apply: the argmax of the raw logits."""
        return self.greedy and self.repetition_penalty == 1.0


def generator_for(sampling: Sampling, device: torch.device) -> torch.Generator | None:
    """The request's own generator when it is seeded and samples; None = torch's global one."""
    if sampling.seed is None or sampling.greedy:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(sampling.seed)
    return generator


def _penalize(scores: torch.Tensor, history: Sequence[int], penalty: float) -> torch.Tensor:
    seen = torch.tensor(sorted(set(history)), dtype=torch.long, device=scores.device)
    picked = scores[seen]
    scores[seen] = torch.where(picked < 0, picked * penalty, picked / penalty)
    return scores


def _top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    if 0 < k < scores.shape[-1]:
        kth = torch.topk(scores, k).values[-1]
        scores = scores.masked_fill(scores < kth, -math.inf)
    return scores


def _top_p(scores: torch.Tensor, p: float) -> torch.Tensor:
    if p >= 1:
        return scores
    ordered, order = torch.sort(scores, descending=True)
    probs = ordered.softmax(-1)
    before = probs.cumsum(-1) - probs  # probability of the more likely tokens
    drop = before >= p
    drop[0] = False  # the most likely token always stays
    unsorted = torch.empty_like(drop).scatter_(0, order, drop)
    return scores.masked_fill(unsorted, -math.inf)


def _next_token(
    logits: torch.Tensor,
    history: Sequence[int],
    sampling: Sampling,
    generator: torch.Generator | None,
) -> int:
    scores = logits.float().clone()
    if sampling.repetition_penalty != 1.0:
        scores = _penalize(scores, history, sampling.repetition_penalty)
    if sampling.greedy:
        return int(scores.argmax())
    scores = _top_p(_top_k(scores / sampling.temperature, sampling.top_k), sampling.top_p)
    token = torch.multinomial(scores.softmax(-1), 1, generator=generator)
    return int(token)


def choose_tokens(
    logits: torch.Tensor,
    histories: Sequence[Sequence[int]],
    samplings: Sequence[Sampling],
    generators: Sequence[torch.Generator | None],
) -> list[int]:
    """The next token of each row of `logits` ([rows, vocab]).

    Plain greedy rows take one batched argmax; only rows that sample or penalize repetition
    are processed one by one (`histories` are their prompt and answer ids so far).
    """
    tokens: list[int] = logits.argmax(-1).tolist()
    for row, sampling in enumerate(samplings):
        if not sampling.plain_greedy:
            tokens[row] = _next_token(logits[row], histories[row], sampling, generators[row])
    return tokens
