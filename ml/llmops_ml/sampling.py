"""Choosing each row's next token from its logits, with that row's own sampling parameters.

A batch mixes greedy and sampled requests, so the parameters are applied row by row, in the
order transformers' logits processors apply them (repetition penalty, temperature, top-k,
top-p), and all rows at once (a tensor op per step of the pipeline, not per row). A seeded
request draws its uniforms from its own generator: it samples the same tokens alone or in a
batch, whatever the other rows do.
"""

from __future__ import annotations

import itertools
import math
from array import array
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


def _penalize(
    scores: torch.Tensor, histories: Sequence[Sequence[int]], penalties: Sequence[float]
) -> torch.Tensor:
    """CTRL's repetition penalty on each row's seen tokens: a positive score divided by the
    penalty, a negative one multiplied (as transformers' RepetitionPenaltyLogitsProcessor)."""
    # through an array: torch.tensor() of a Python list takes ~0.2 us per int, this a tenth
    flat = array("q", itertools.chain.from_iterable(histories))
    tokens = torch.frombuffer(flat, dtype=torch.long).to(scores.device)
    lengths = torch.tensor([len(history) for history in histories], device=scores.device)
    rows = torch.repeat_interleave(torch.arange(len(histories), device=scores.device), lengths)
    seen = torch.zeros_like(scores, dtype=torch.bool)
    seen[rows, tokens] = True
    penalty = torch.tensor(penalties, dtype=scores.dtype, device=scores.device)[:, None]
    return torch.where(seen, torch.where(scores < 0, scores * penalty, scores / penalty), scores)


CANDIDATES = 64
"""Top-k and top-p look at each row's most likely tokens first: on one CPU core a full sort
takes 170 ms for 64 rows of 32k tokens (1.4 ms for 64 x 512), `topk` of 64 a fraction of it.
A row whose nucleus is not within them is redone over its whole vocabulary: the cut is exact."""


def _column(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device)[:, None]


def _inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """For each row of non-negative `weights` [rows, n], the first column whose cumulative
    weight exceeds uniform x total: a draw from the normalized weights (never a zero one)."""
    cdf = weights.cumsum(-1)
    return (cdf <= uniforms[:, None] * cdf[:, -1:]).sum(-1)


def _nucleus(
    scores: torch.Tensor, samplings: Sequence[Sampling], width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The `width` most likely tokens of each row with their weights after top-k and top-p
    (0 for the dropped ones), and which rows' nucleus may reach beyond them."""
    vocab = scores.shape[-1]
    values, index = torch.topk(scores, width)  # descending
    top_k = _column([s.top_k if 0 < s.top_k < vocab else vocab for s in samplings], scores)
    values = values.masked_fill(
        torch.arange(width, device=scores.device)[None, :] >= top_k, -math.inf
    )
    # after a top-k cut the kept tokens are all among the candidates; without, the vocabulary
    normalizer = torch.where(
        top_k < vocab, values.logsumexp(-1, keepdim=True), scores.logsumexp(-1, keepdim=True)
    )
    probs = (values - normalizer).exp()
    cumulative = probs.cumsum(-1)
    top_p = _column([s.top_p for s in samplings], scores)
    drop = (cumulative - probs >= top_p) & (top_p < 1)  # the more likely ones already reach p
    drop[:, 0] = False  # the most likely token always stays
    beyond = ((top_p < 1) & (top_k >= vocab) & (cumulative[:, -1:] < top_p)).squeeze(1)
    return probs.masked_fill(drop, 0.0), index, beyond


def _uniforms(generators: Sequence[torch.Generator | None], like: torch.Tensor) -> torch.Tensor:
    """One uniform draw per row: from the row's own generator, or torch's global one."""
    draws = torch.rand(len(generators), dtype=like.dtype, device=like.device)
    for row, generator in enumerate(generators):
        if generator is not None:
            draws[row] = torch.rand(1, generator=generator, dtype=like.dtype, device=like.device)
    return draws


def _sample(
    scores: torch.Tensor,
    samplings: Sequence[Sampling],
    generators: Sequence[torch.Generator | None],
) -> torch.Tensor:
    """One draw per row after temperature, top-k and top-p, for all rows at once."""
    vocab = scores.shape[-1]
    scores = scores / _column([s.temperature for s in samplings], scores)
    uniforms = _uniforms(generators, scores)
    tokens = torch.empty(len(samplings), dtype=torch.long, device=scores.device)
    cut = [j for j, s in enumerate(samplings) if 0 < s.top_k < vocab or s.top_p < 1]
    whole = [j for j in range(len(samplings)) if j not in set(cut)]
    if whole:
        tokens[whole] = _inverse_cdf(scores[whole].softmax(-1), uniforms[whole])
    if cut:
        picked = [samplings[j] for j in cut]
        largest_k = max(s.top_k if s.top_k < vocab else 0 for s in picked)
        width = min(vocab, max(CANDIDATES, largest_k))
        weights, index, beyond = _nucleus(scores[cut], picked, width)
        if bool(beyond.any()):
            redo = beyond.nonzero().squeeze(1).tolist()
            full = _nucleus(scores[[cut[j] for j in redo]], [picked[j] for j in redo], vocab)
            weights = torch.cat([weights, weights.new_zeros(len(cut), vocab - width)], dim=1)
            index = torch.cat([index, index.new_zeros(len(cut), vocab - width)], dim=1)
            weights[redo], index[redo] = full[0], full[1]
        choice = _inverse_cdf(weights, uniforms[cut])
        tokens[cut] = index.gather(1, choice[:, None]).squeeze(1)
    return tokens


def choose_tokens(
    logits: torch.Tensor,
    histories: Sequence[Sequence[int]],
    samplings: Sequence[Sampling],
    generators: Sequence[torch.Generator | None],
) -> list[int]:
    """The next token of each row of `logits` ([rows, vocab]).

    Plain greedy rows take the batched argmax; the others are processed together, each with
    its own parameters (`histories`: each row's prompt and answer ids so far, for the penalty).
    """
    tokens = logits.argmax(-1)
    rows = [row for row, sampling in enumerate(samplings) if not sampling.plain_greedy]
    if not rows:
        plain: list[int] = tokens.tolist()
        return plain
    picked = [samplings[row] for row in rows]
    scores = logits[rows].float()
    penalized = [j for j, s in enumerate(picked) if s.repetition_penalty != 1.0]
    if penalized:
        scores[penalized] = _penalize(
            scores[penalized],
            [histories[rows[j]] for j in penalized],
            [picked[j].repetition_penalty for j in penalized],
        )
    chosen = scores.argmax(-1)  # what the greedy ones among them take
    sampled = [j for j, s in enumerate(picked) if not s.greedy]
    if sampled:
        chosen[sampled] = _sample(
            scores[sampled],
            [picked[j] for j in sampled],
            [generators[rows[j]] for j in sampled],
        )
    tokens[rows] = chosen.to(tokens.dtype)
    out: list[int] = tokens.tolist()
    return out
