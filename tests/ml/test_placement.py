"""One device/dtype rule for training and inference: the CPU in float32, a GPU in bfloat16."""

from __future__ import annotations

import pytest
import torch

from llmops_ml import loading, placement
from tests.tiny_models import TinyModels

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
without_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")


def test_the_cpu_runs_float32() -> None:
    assert placement.choose("cpu") == placement.CPU
    assert placement.CPU.device == torch.device("cpu") and placement.CPU.dtype == torch.float32
    assert placement.CPU.on_cpu


@without_cuda
def test_auto_without_cuda_is_the_cpu_and_cuda_is_refused() -> None:
    assert placement.choose() == placement.CPU
    with pytest.raises(RuntimeError, match="CUDA"):
        placement.choose("cuda")


@needs_cuda
def test_auto_with_cuda_is_the_gpu_in_bfloat16() -> None:
    chosen = placement.choose()
    assert (chosen.device.type, chosen.dtype, chosen.on_cpu) == ("cuda", torch.bfloat16, False)
    assert placement.choose("cuda") == chosen


def test_a_load_follows_the_placement(tiny_models: TinyModels) -> None:
    model = loading.load_model(tiny_models.base, placement.CPU)
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {("cpu", torch.float32)}


def test_an_inference_load_takes_the_same_rule(tiny_models: TinyModels) -> None:
    lm = loading.load_for_inference(tiny_models.base)
    expected = placement.choose()
    assert lm.device == expected.device and lm.model.dtype == expected.dtype
    assert lm.tokenizer.padding_side == "left" and not lm.model.training
    assert lm.eos_ids == (lm.tokenizer.eos_token_id,)
