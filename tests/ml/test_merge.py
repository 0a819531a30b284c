"""An adapter merged to disk: a standalone safetensors model whose greedy answers are the
adapter's, written atomically."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops_ml import generation, loading, merge, placement
from tests.ml.conftest import GRADIENT_CHECKPOINTING_NOTICE
from tests.tiny_models import TinyModels

pytestmark = pytest.mark.filterwarnings(f"ignore:{GRADIENT_CHECKPOINTING_NOTICE}:FutureWarning")

PROMPTS = [
    "Extract the person's full name.\nText: Ada Lovelace lives in London.\nName:",
    "Classify the topic.\nText: The match ended in a draw.\nTopic:",
    "Summarize:",
]


def _greedy(lm: loading.LoadedModel) -> list[str]:
    return generation.generate(lm, PROMPTS, generation.generation_config(lm, max_new_tokens=8))


def _unmerged(base_dir: Path, adapter_dir: Path) -> loading.LoadedModel:
    """The adapter kept as a PEFT wrapper over the base, as an engine serving adapters holds it."""
    tokenizer = loading.load_tokenizer(base_dir, padding_side="left")
    base = loading.load_model(base_dir, placement.CPU)
    model = loading.load_adapter(base, adapter_dir, trainable=False).eval()
    return loading.LoadedModel(
        model, tokenizer, placement.CPU.device, loading.eos_ids(model, tokenizer)
    )


def test_the_merged_model_answers_as_the_adapter_does(
    tiny_models: TinyModels, adapter_dir: Path, tmp_path: Path
) -> None:
    out = merge.merge_adapter(tiny_models.base, adapter_dir, tmp_path / "merged")
    assert out == tmp_path / "merged"
    files = {path.name for path in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= files
    assert not [name for name in files if name.endswith((".bin", ".pt", ".pth"))]
    assert not (out / "adapter_config.json").exists()  # a plain model, no PEFT left
    assert [path.name for path in tmp_path.iterdir()] == ["merged"]  # no temporary left

    merged = loading.load_for_inference(out, placement=placement.CPU)
    adapted = _unmerged(tiny_models.base, adapter_dir)
    base = loading.load_for_inference(tiny_models.base, placement=placement.CPU)
    assert _greedy(merged) == _greedy(adapted)
    assert _greedy(merged) != _greedy(base)  # the adapter does change the answers


def test_a_merge_replaces_an_earlier_one_and_a_failed_merge_leaves_nothing(
    tiny_models: TinyModels, adapter_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "stale.txt").write_text("from an earlier attempt")
    merge.merge_adapter(tiny_models.base, adapter_dir, tmp_path / "merged")
    assert not (tmp_path / "merged" / "stale.txt").exists()

    with pytest.raises(FileNotFoundError, match=r"adapter_model\.safetensors"):
        merge.merge_adapter(tiny_models.base, tmp_path / "no-adapter", tmp_path / "other")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["merged"]
