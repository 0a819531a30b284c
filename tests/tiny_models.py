"""Tiny random Llama models for the tests of model code, training and evaluation: one pair per
session (a fixture in tests/conftest.py) and small data files cut from the bundled datasets.

The models are built here rather than with `llmops_workers.tiny` on purpose: the tests need
models that build in well under a second (no pretraining), and they must not change when the
real tiny-model recipe does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATASETS = Path(__file__).resolve().parents[1] / "config" / "datasets"
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}"
    "{{ eos_token }}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)


@dataclass(frozen=True)
class TinyModels:
    """A 2-layer teacher/base and a 1-layer student sharing one tokenizer."""

    base: Path
    student: Path


def read_rows(name: str, count: int) -> list[dict[str, Any]]:
    """The first `count` rows of a bundled dataset."""
    lines = (DATASETS / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:count]]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _build_tokenizer(directory: Path) -> Any:
    """A byte-level BPE tokenizer (512 tokens) trained on the bundled SFT text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [row["prompt"] + row["completion"] for row in read_rows("demo-sft.train.jsonl", 1200)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    wrapped = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    wrapped.chat_template = CHAT_TEMPLATE
    wrapped.save_pretrained(str(directory))
    return wrapped


def _build_llama(directory: Path, tokenizer: Any, layers: int) -> None:
    """A random Llama; a wide initializer makes the teacher's distributions far from uniform."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        initializer_range=0.1,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))


def build_tiny_models(root: Path) -> TinyModels:
    """A 2-layer base and a 1-layer student sharing one tokenizer, built under `root`."""
    import torch
    import transformers

    torch.set_num_threads(1)
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    tokenizer = _build_tokenizer(root / "tokenizer")
    models = TinyModels(base=root / "base", student=root / "student")
    _build_llama(models.base, tokenizer, layers=2)
    _build_llama(models.student, tokenizer, layers=1)
    return models
