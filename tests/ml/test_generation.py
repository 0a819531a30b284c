"""Batched, left-padded generation: the answers one batch gives are the answers its prompts give
one at a time, and an answer ends at the first EOS."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops_ml import generation, loading, placement
from llmops_ml.sampling import Sampling
from tests.ml.conftest import GRADIENT_CHECKPOINTING_NOTICE
from tests.tiny_models import TinyModels, read_rows

pytestmark = pytest.mark.filterwarnings(f"ignore:{GRADIENT_CHECKPOINTING_NOTICE}:FutureWarning")


@pytest.mark.parametrize("with_adapter", [False, True])
def test_a_batch_answers_as_its_prompts_do_one_at_a_time(
    with_adapter: bool, tiny_models: TinyModels, adapter_dir: Path
) -> None:
    lm = loading.load_for_inference(
        tiny_models.base, adapter_dir if with_adapter else None, placement=placement.CPU
    )
    prompts = [row["prompt"] for row in read_rows("demo-eval.test.jsonl", 6)]
    assert len({len(lm.tokenizer(p)["input_ids"]) for p in prompts}) > 1  # padding will happen
    config = generation.generation_config(lm, max_new_tokens=8)
    batched = generation.generate(lm, prompts, config)
    alone = [generation.generate(lm, [prompt], config)[0] for prompt in prompts]
    assert batched == alone
    assert all(batched)


@pytest.mark.parametrize("with_adapter", [False, True])
def test_the_serving_step_loop_answers_as_plain_generate(
    with_adapter: bool, tiny_models: TinyModels, adapter_dir: Path
) -> None:
    lm = loading.load_for_inference(
        tiny_models.base, adapter_dir if with_adapter else None, placement=placement.CPU
    )
    prompts = [row["prompt"] for row in read_rows("demo-eval.test.jsonl", 16)]
    config = generation.generation_config(lm, max_new_tokens=24)
    expected = generation.generate(lm, prompts, config)
    continuous = generation.generate_continuous(lm, prompts, Sampling(max_new_tokens=24))
    assert continuous == expected
    assert len(set(continuous)) > 1


def test_seeded_rows_sample_the_same_whatever_their_batch(tiny_models: TinyModels) -> None:
    lm = loading.load_for_inference(tiny_models.base, placement=placement.CPU)
    prompts = [row["prompt"] for row in read_rows("demo-eval.test.jsonl", 6)]
    sampling = Sampling(max_new_tokens=8, temperature=1.0)
    together = generation.generate_continuous(lm, prompts, sampling, seeds=range(6))
    alone = [
        generation.generate_continuous(lm, [p], sampling, seeds=[i])[0]
        for i, p in enumerate(prompts)
    ]
    assert together == alone
    reseeded = generation.generate_continuous(lm, prompts, sampling, seeds=range(10, 16))
    assert reseeded != together
    with pytest.raises(ValueError, match="2 seeds for 6 prompts"):
        generation.generate_continuous(lm, prompts, sampling, seeds=[1, 2])


def test_greedy_unless_a_temperature_is_given(tiny_models: TinyModels) -> None:
    lm = loading.load_for_inference(tiny_models.base, placement=placement.CPU)
    greedy = generation.generation_config(lm, max_new_tokens=4)
    assert not greedy.do_sample and greedy.eos_token_id == list(lm.eos_ids)
    sampled = generation.generation_config(lm, max_new_tokens=4, temperature=0.7, top_p=0.9)
    assert (sampled.do_sample, sampled.temperature, sampled.top_p, sampled.top_k) == (
        True,
        0.7,
        0.9,
        0,
    )


def test_an_answer_ends_at_the_first_eos(tiny_models: TinyModels) -> None:
    lm = loading.load_for_inference(tiny_models.base, placement=placement.CPU)
    words = lm.tokenizer(" Ada Lovelace")["input_ids"]
    eos = lm.eos_ids[0]
    pad = lm.tokenizer.pad_token_id
    assert generation.answer(lm, [*words, eos, *words, pad]) == " Ada Lovelace"
    assert generation.answer(lm, words) == " Ada Lovelace"
