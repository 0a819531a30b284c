"""Per-row sampling: each row's top-k, top-p, temperature and penalty, all rows at once; the cut
is exact also when a row's nucleus is wider than the candidates looked at first."""

from __future__ import annotations

import pytest
import torch

from llmops_ml.sampling import CANDIDATES, Sampling, choose_tokens, generator_for

CPU = torch.device("cpu")


def draws(logits: torch.Tensor, sampling: Sampling, count: int) -> list[int]:
    """`count` draws for one row of `logits`, made as one batch of `count` identical rows."""
    torch.manual_seed(0)
    rows = logits.expand(count, -1)
    return choose_tokens(rows, [[0]] * count, [sampling] * count, [None] * count)


def nucleus(logits: torch.Tensor, top_p: float) -> set[int]:
    """The reference: the most likely tokens until their probability reaches top_p."""
    probs, order = torch.sort(logits.softmax(-1), descending=True)
    before = probs.cumsum(-1) - probs
    return set(order[before < top_p].tolist())


def test_top_k_keeps_the_k_most_likely() -> None:
    torch.manual_seed(1)
    logits = torch.randn(512)
    top = set(torch.topk(logits, 5).indices.tolist())
    sampled = draws(logits, Sampling(temperature=3.0, top_k=5), 400)
    assert set(sampled) == top


@pytest.mark.parametrize("scale", [4.0, 0.05])  # peaked: within the candidates; flat: beyond
def test_top_p_keeps_the_nucleus(scale: float) -> None:
    torch.manual_seed(2)
    logits = torch.randn(512) * scale
    expected = nucleus(logits, 0.5)
    assert (len(expected) > CANDIDATES) == (scale < 1)
    sampled = set(draws(logits, Sampling(temperature=1.0, top_p=0.5), 2000))
    assert sampled <= expected
    assert len(sampled) > 0.5 * len(expected)


def test_draws_follow_the_tempered_distribution() -> None:
    logits = torch.tensor([2.0, 1.0, 0.0, -30.0])
    sampled = draws(logits, Sampling(temperature=2.0), 20000)
    frequencies = torch.bincount(torch.tensor(sampled), minlength=4).float() / len(sampled)
    assert torch.allclose(frequencies, (logits / 2.0).softmax(-1), atol=0.015)


def test_a_seeded_row_draws_the_same_whatever_the_other_rows() -> None:
    torch.manual_seed(3)
    logits = torch.randn(6, 512) * 2
    seeded = Sampling(temperature=1.0, top_p=0.9, seed=11)

    def run(samplings: list[Sampling]) -> list[int]:
        generators = [generator_for(s, CPU) for s in samplings]
        return [choose_tokens(logits, [[1, 2]] * 6, samplings, generators)[0] for _ in range(10)]

    alone = run([seeded] + [Sampling()] * 5)
    mixed = run(
        [seeded, Sampling(temperature=2.0), Sampling(top_k=3, temperature=1.0, seed=4)]
        + [Sampling(repetition_penalty=2.0)] * 3
    )
    assert alone == mixed and len(set(alone)) > 1


def test_the_repetition_penalty_lowers_seen_tokens_only() -> None:
    logits = torch.tensor([[3.0, 2.9, -1.0, -1.1], [3.0, 2.9, -1.0, -1.1]])
    penalized = Sampling(repetition_penalty=2.0)
    # row 0 has seen token 0 (3.0 -> 1.5): 1 wins; row 1 has seen 2 and 3 only: 0 still wins
    assert choose_tokens(logits, [[0], [2, 3, 3]], [penalized] * 2, [None, None]) == [1, 0]
    # a negative score is multiplied: -1.0 -> -2.0 falls below -1.1
    low = torch.tensor([[-1.0, -1.1]])
    assert choose_tokens(low, [[0]], [penalized], [None]) == [1]
