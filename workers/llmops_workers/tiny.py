"""The project's own tiny base models, built locally and deterministically (no hub downloads).

- ``llmops-tiny`` ("base"): a 4-layer, 128-wide Llama, briefly pretrained on the generic synthetic
  corpus of :mod:`llmops_workers.corpus`, so that LoRA has a language model to adapt.
- ``llmops-tiny-student`` ("student"): a 2-layer Llama with the *same* tokenizer files, the
  student for distillation (which checks that teacher and student tokenizers hash alike).

Both are plain Hugging Face model directories (``config.json``, ``model.safetensors``,
``tokenizer.json``, ``chat_template.jinja``, ...). The same seed, step count and thread count give
byte-identical weights and tokenizer files on the same machine and library versions.

Importing this module does not import torch, tokenizers or transformers: the CLI and services
import it cheaply and only a build pays for the ML stack.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llmops.tiny_models import TINY_MODEL_NAMES
from llmops_workers.corpus import generic_documents, tokenizer_training_texts

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

__all__ = [
    "BUILD_INFO_FILE",
    "TINY_MODELS",
    "TinyKind",
    "TinyModelInfo",
    "build_tiny_model",
    "build_tokenizer",
    "describe",
    "ensure_tiny_models",
]

TinyKind = Literal["base", "student"]

TINY_MODELS: dict[str, TinyKind] = dict(zip(TINY_MODEL_NAMES, ("base", "student"), strict=True))
"""The registered names of the tiny models and the kind each is built as."""

BUILD_INFO_FILE = "llmops_build.json"
"""Written into each model directory: how it was built and what pretraining achieved."""

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
VOCAB_SIZE = 3072  # the BPE trainer's cap; the corpus runs out of merges near 2,100 tokens
SEQ_LEN = 128  # pretraining row length; the demo prompts and answers fit in 64
MAX_POSITIONS = 512

# A minimal chat format: a role tag line, the content, then EOS. Assistant turns sit inside
# {% generation %} so TRL's assistant_only_loss can find them. Newlines are written as
# {{ '\n' }} because transformers renders with trim_blocks.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' }}{{ '\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}"
    "{% else %}{{ message['content'] }}{{ eos_token }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{{ '\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class _Recipe:
    """The shape and pretraining budget of one kind of tiny model."""

    layers: int
    default_steps: int
    description: str


_RECIPES: dict[TinyKind, _Recipe] = {
    "base": _Recipe(4, 280, "4-layer, 128-wide Llama"),
    "student": _Recipe(2, 150, "2-layer, 128-wide Llama (distillation student)"),
}
_HIDDEN = 128
_INTERMEDIATE = 256  # hidden and intermediate sizes stay multiples of 64 for 4-bit CPU kernels
_HEADS = 4
_BATCH = 16
_EVAL_ROWS = 64
_LEARNING_RATE = 5e-3
_WARMUP_FRACTION = 0.05
_DECAY_FROM = 0.7


@dataclass(frozen=True)
class TinyModelInfo:
    """What a build produced and how pretraining went."""

    path: Path
    parameters: int
    pretrain_seconds: float
    eval_loss_before: float
    eval_loss_after: float
    steps: int


# --- tokenizer ----------------------------------------------------------------------------------


def _train_tokenizer(texts: Sequence[str]) -> Tokenizer:
    """Byte-level BPE (any text encodes; leading spaces of completions stay one token with the
    word) with BOS prepended, trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[UNK, BOS, EOS, PAD, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return tokenizer


def build_tokenizer(datasets_dir: Path | None = None) -> PreTrainedTokenizerFast:
    """The tiny models' tokenizer, trained on the generic corpus and the bundled datasets' text.

    It does not depend on any model seed, so every tiny model gets the same tokenizer files.
    """
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=_train_tokenizer(tokenizer_training_texts(datasets_dir)),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        chat_template=CHAT_TEMPLATE,
        model_max_length=MAX_POSITIONS,
    )


# --- model and pretraining ----------------------------------------------------------------------


def _new_model(kind: TinyKind, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=_HIDDEN,
        intermediate_size=_INTERMEDIATE,
        num_hidden_layers=_RECIPES[kind].layers,
        num_attention_heads=_HEADS,
        num_key_value_heads=_HEADS,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def _rows(tokenizer: PreTrainedTokenizerFast, documents: Sequence[str]) -> torch.Tensor:
    """One ``SEQ_LEN``-token row per document (``<s> text </s>``, cut to length or padded).

    Rows are not packed with several documents: a row about one person is what teaches the
    model to copy names from its context (see :mod:`llmops_workers.corpus`), and every row
    starts at position 0 with ``<s>``, as prompts do.
    """
    import torch

    rows = torch.full((len(documents), SEQ_LEN), tokenizer.pad_token_id, dtype=torch.long)
    for i, ids in enumerate(tokenizer(list(documents))["input_ids"]):
        row = [*ids, tokenizer.eos_token_id][:SEQ_LEN]
        rows[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return rows


def _loss(model: LlamaForCausalLM, rows: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Mean next-token loss over the real tokens of ``rows`` (padding is masked out)."""
    labels = rows.masked_fill(rows == pad_id, -100)
    loss: torch.Tensor = model(input_ids=rows, labels=labels).loss
    return loss


def _eval_loss(model: LlamaForCausalLM, data: torch.Tensor, pad_id: int) -> float:
    import torch

    model.train(False)  # eval mode (transformers' eval() override is untyped)
    with torch.no_grad():
        losses = [float(_loss(model, batch, pad_id)) for batch in torch.split(data, _BATCH)]
    model.train()
    return sum(losses) / len(losses)


def _lr_factor(step: int, steps: int) -> float:
    """Warmup, a long constant stretch, then a linear decay to a tenth over the last 30%.

    The model learns to copy names from its context in a sudden jump that needs a high
    learning rate; a cosine schedule decays too early and made that jump come later or not at
    all within the step budget.
    """
    warmup = max(1, int(steps * _WARMUP_FRACTION))
    decay_from = int(steps * _DECAY_FROM)
    if step < warmup:
        return (step + 1) / warmup
    if step < decay_from:
        return 1.0
    return 0.1 + 0.9 * (steps - step) / max(1, steps - decay_from)


def _pretrain(
    model: LlamaForCausalLM, train: torch.Tensor, pad_id: int, steps: int, seed: int
) -> float:
    """A plain fp32 AdamW loop over seeded random batches (no Trainer: fewer moving parts to
    keep bit-exact); trains ``model`` in place and returns the seconds it took."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=_LEARNING_RATE, betas=(0.9, 0.95), weight_decay=0.01
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, steps))
    model.train()
    started = time.perf_counter()
    for _ in range(steps):
        batch = train[torch.randint(len(train), (_BATCH,), generator=generator)]
        loss = _loss(model, batch, pad_id)
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


@contextlib.contextmanager
def _torch_settings(threads: int) -> Iterator[None]:
    """Fixed thread count, deterministic kernels and a private RNG state for the build; the
    caller's settings and random state are restored afterwards."""
    import torch

    threads_before = torch.get_num_threads()
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
        torch.set_num_threads(threads_before)


def build_tiny_model(
    output_dir: Path,
    *,
    kind: TinyKind = "base",
    seed: int = 0,
    pretrain_steps: int | None = None,
    threads: int = 1,
    datasets_dir: Path | None = None,
) -> TinyModelInfo:
    """Builds, pretrains and saves one tiny model into ``output_dir`` (created if missing).

    ``pretrain_steps`` defaults to the kind's budget (base: 280 steps, ~45-50 s on one core;
    student: 150 steps); 0 saves the randomly initialised model. ``datasets_dir`` (default: the
    checkout's ``config/datasets``) adds the task text to the tokenizer's training text.
    """
    if kind not in _RECIPES:
        raise ValueError(f"unknown tiny model kind {kind!r} (expected one of {sorted(_RECIPES)})")
    steps = _RECIPES[kind].default_steps if pretrain_steps is None else pretrain_steps
    if steps < 0:
        raise ValueError(f"pretrain_steps must be >= 0, got {steps}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    import torch

    with _torch_settings(threads):
        tokenizer = build_tokenizer(datasets_dir)
        torch.manual_seed(seed)
        model = _new_model(kind, tokenizer)
        pad_id = tokenizer.pad_token_id
        train = _rows(tokenizer, generic_documents(seed, max(steps, 1) * _BATCH, split="train"))
        held_out = _rows(tokenizer, generic_documents(seed, _EVAL_ROWS, split="eval"))
        before = _eval_loss(model, held_out, pad_id)
        seconds = _pretrain(model, train, pad_id, steps, seed) if steps else 0.0
        after = _eval_loss(model, held_out, pad_id)
        _save(model, tokenizer, output_dir)
    info = TinyModelInfo(
        path=output_dir,
        parameters=sum(p.numel() for p in model.parameters()),
        pretrain_seconds=round(seconds, 3),
        eval_loss_before=round(before, 4),
        eval_loss_after=round(after, 4),
        steps=steps,
    )
    _write_build_info(output_dir, kind, seed, threads, info)
    return info


def _save(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, output_dir: Path) -> None:
    """``save_pretrained`` both, without transformers' progress bar in the caller's output."""
    from transformers.utils import logging as hf_logging

    output_dir.mkdir(parents=True, exist_ok=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
    finally:
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
    for path in output_dir.iterdir():
        path.chmod(0o644)  # the weights are written private (a temp file renamed); make all alike


def _write_build_info(
    output_dir: Path, kind: TinyKind, seed: int, threads: int, info: TinyModelInfo
) -> None:
    record: dict[str, Any] = {
        "kind": kind,
        "architecture": _RECIPES[kind].description,
        "seed": seed,
        "threads": threads,
        "parameters": info.parameters,
        "pretrain_steps": info.steps,
        "pretrain_seconds": info.pretrain_seconds,
        "eval_loss_before": info.eval_loss_before,
        "eval_loss_after": info.eval_loss_after,
    }
    (output_dir / BUILD_INFO_FILE).write_text(json.dumps(record, indent=2) + "\n")


def describe(path: Path) -> str:
    """A one-line description of a built tiny model, from its build record (for registration)."""
    try:
        record = json.loads((path / BUILD_INFO_FILE).read_text())
        return (
            f"{record['architecture']} with a local BPE tokenizer, pretrained "
            f"{record['pretrain_steps']} steps on generic synthetic text "
            f"(eval loss {record['eval_loss_before']:.2f} -> {record['eval_loss_after']:.2f})"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "tiny local Llama built by llmops"


# --- building on first need ---------------------------------------------------------------------


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so concurrent processes build each model once."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_tiny_models(
    root: Path,
    *,
    seed: int = 0,
    pretrain_steps: int | None = None,
    threads: int = 1,
) -> dict[str, Path]:
    """Builds every tiny model missing under ``root/<name>/`` and returns all their paths.

    A model is built in a temporary directory beside its final one and renamed into place when
    complete, so ``root/<name>`` is either absent or a whole model, never a half-written one;
    leftovers of an interrupted build are removed. Existing models are not rebuilt.
    """
    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    with _lock(root / ".tiny-models.lock"):
        for name, kind in TINY_MODELS.items():
            final = root / name
            paths[name] = final
            for stale in root.glob(f".{name}.building-*"):
                shutil.rmtree(stale, ignore_errors=True)
            if final.is_dir():
                continue
            staging = Path(tempfile.mkdtemp(prefix=f".{name}.building-", dir=root))
            try:
                build_tiny_model(
                    staging, kind=kind, seed=seed, pretrain_steps=pretrain_steps, threads=threads
                )
                staging.chmod(0o755)  # mkdtemp makes it private; a model dir is shared
                os.rename(staging, final)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
    return paths
