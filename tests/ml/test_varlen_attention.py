"""Variable-length attention for padding-free and packed batches: exact, used only there."""

from __future__ import annotations

from typing import Any

import pytest

from llmops_ml import loading, placement, varlen_attention
from tests.tiny_models import TinyModels

LENGTHS = (5, 9, 3, 7)


def _model(attention: str) -> Any:
    """A random 2-layer Llama with grouped-query attention (4 query heads, 2 key/value heads)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        initializer_range=0.2,
    )
    model = LlamaForCausalLM(config)
    model.set_attn_implementation(attention)
    return model


def _sequences() -> list[Any]:
    import torch

    generator = torch.Generator().manual_seed(1)
    return [torch.randint(3, 128, (length,), generator=generator) for length in LENGTHS]


def _flattened(sequences: list[Any]) -> dict[str, Any]:
    """What TRL's padding-free collator gives a model: one row, restarting positions, boundaries."""
    import torch

    lengths = torch.tensor([len(s) for s in sequences])
    boundaries = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]).to(torch.int32)
    return {
        "input_ids": torch.cat(sequences)[None],
        "position_ids": torch.cat([torch.arange(len(s)) for s in sequences])[None],
        "cu_seq_lens_q": boundaries,
        "cu_seq_lens_k": boundaries,
        "max_length_q": int(lengths.max()),
        "max_length_k": int(lengths.max()),
    }


def test_each_sequence_of_a_flattened_batch_sees_only_itself() -> None:
    import torch

    model = _model(varlen_attention.register()).eval()
    sequences = _sequences()
    with torch.no_grad():
        alone = torch.cat([model(input_ids=s[None], use_cache=False).logits[0] for s in sequences])
        flattened = model(**_flattened(sequences), use_cache=False).logits[0]
        inputs = _flattened(sequences)
        del inputs["cu_seq_lens_q"], inputs["cu_seq_lens_k"]  # boundaries from positions alone
        from_positions = model(**inputs, use_cache=False).logits[0]
    torch.testing.assert_close(flattened, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(from_positions, alone, rtol=1e-5, atol=1e-5)


def test_a_flattened_batch_trains_exactly_as_a_padded_one() -> None:
    """Same loss and the same gradients as the padded batch under transformers' SDPA."""
    import torch

    sequences = _sequences()
    padded_model, flat_model = _model("sdpa").train(), _model(varlen_attention.register()).train()
    longest = max(LENGTHS)
    ids = torch.zeros(len(sequences), longest, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)], mask[row, : len(sequence)] = sequence, 1
    labels = ids.masked_fill(mask == 0, -100)
    flat_inputs = _flattened(sequences)
    flat_labels = torch.cat([labels[row, : len(s)] for row, s in enumerate(sequences)])[None]
    flat_labels[flat_inputs["position_ids"] == 0] = -100  # as the collator does: no label across
    padded_labels = labels.clone()
    padded_labels[:, 0] = -100
    padded = padded_model(input_ids=ids, attention_mask=mask, labels=padded_labels, use_cache=False)
    flat = flat_model(**flat_inputs, labels=flat_labels, use_cache=False)
    torch.testing.assert_close(flat.loss, padded.loss, rtol=1e-5, atol=1e-6)
    padded.loss.backward()
    flat.loss.backward()
    for (name, a), (_, b) in zip(
        padded_model.named_parameters(), flat_model.named_parameters(), strict=True
    ):
        assert a.grad is not None and b.grad is not None, name
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_padded_batches_and_generation_keep_transformers_sdpa() -> None:
    import torch

    reference, model = _model("sdpa").eval(), _model(varlen_attention.register()).eval()
    prompts = torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    with torch.no_grad():
        expected = reference(input_ids=prompts, attention_mask=mask).logits
        torch.testing.assert_close(model(input_ids=prompts, attention_mask=mask).logits, expected)
    settings: dict[str, Any] = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(
        model.generate(prompts, attention_mask=mask, **settings),
        reference.generate(prompts, attention_mask=mask, **settings),
    )


def test_the_sequence_layout_places_tokens_row_by_row() -> None:
    import torch

    index, sequences, longest = varlen_attention.sequence_layout(torch.tensor([0, 2, 5, 6]))
    assert (sequences, longest) == (3, 3)
    assert index.tolist() == [0, 1, 3, 4, 5, 6]


@pytest.mark.parametrize("flattened", [True, False])
def test_engines_pick_it_only_for_flattened_batches(
    flattened: bool, tiny_models: TinyModels
) -> None:
    model = loading.load_model(tiny_models.base, placement.CPU, flattened_batches=flattened)
    expected = varlen_attention.NAME if flattened else "sdpa"
    assert model.config._attn_implementation == expected
