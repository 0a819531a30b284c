"""What every engine shares: the process set-up, data loading and template rendering, model
loading (4-bit included), LoRA and Trainer arguments, the callback that feeds `EngineEvents`,
and the run itself (train, stop on request, save the result atomically).

Imports torch and the Hugging Face stack; only the engine modules import this one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets  # type: ignore[import-untyped]
import huggingface_hub.constants
import torch
import transformers
from peft import LoraConfig, PeftModel
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from llmops.templates import render
from llmops_workers.engines import checkpoints, varlen_attention
from llmops_workers.engines.spec import (
    EngineEvents,
    StopRequest,
    TrainingResult,
    TrainingSpec,
    TrainingStatus,
)

log = logging.getLogger("llmops.engine")

# Deprecation notices that transformers raises from inside PEFT and TRL (they read the renamed
# `is_gradient_checkpointing` property); nothing in our code can avoid them, and pytest runs
# with warnings as errors. Ignored by exact message, only while an engine runs.
_THIRD_PARTY_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning),
)


@contextlib.contextmanager
def engine_runtime(threads: int) -> Iterator[None]:
    """Sets up the process for a run: thread count, no progress bars, no telemetry.

    The thread count is set explicitly because two torch processes sharing the cores with the
    default (one thread per core) slow each other down by an order of magnitude. Telemetry is
    off because a training run must not call out to the hub.
    """
    torch.set_num_threads(max(1, threads))
    huggingface_hub.constants.HF_HUB_DISABLE_TELEMETRY = True
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    with warnings.catch_warnings():
        for message, category in _THIRD_PARTY_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


# ---- data ---------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file (blank lines skipped); ValueError names the bad line."""
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path.name} line {number}: not JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path.name} line {number}: a row must be a JSON object")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path.name} has no rows")
    return rows


def render_prompt(row: Mapping[str, Any], template: str | None) -> str:
    """The row's prompt, rendered into the template's `{text}` when there is one."""
    prompt = str(row["prompt"])
    return render(template, prompt) if template else prompt


def sft_rows(rows: list[dict[str, Any]], template: str | None) -> list[dict[str, Any]]:
    """Prompt/completion rows (prompt rendered) or chat rows (used verbatim), nothing else."""
    if "messages" in rows[0]:
        return [{"messages": row["messages"]} for row in rows]
    return [
        {"prompt": render_prompt(row, template), "completion": str(row["completion"])}
        for row in rows
    ]


def preference_rows(rows: list[dict[str, Any]], template: str | None) -> list[dict[str, Any]]:
    """Prompt/chosen/rejected rows with the prompt rendered."""
    return [
        {
            "prompt": render_prompt(row, template),
            "chosen": str(row["chosen"]),
            "rejected": str(row["rejected"]),
        }
        for row in rows
    ]


def to_dataset(rows: list[dict[str, Any]]) -> Any:
    """An in-memory `datasets.Dataset` (no cache files are written)."""
    return datasets.Dataset.from_list(rows)


# ---- models -------------------------------------------------------------------------------------


def load_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a pad token (the EOS token when it has none)."""
    tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    model_dir: Path,
    *,
    four_bit: bool = False,
    double_quant: bool = True,
    flattened_batches: bool = False,
) -> Any:
    """A causal LM in float32 on the CPU, optionally quantized to 4-bit NF4 for QLoRA.

    `flattened_batches` (padding-free or packed training) picks an attention that keeps each
    sequence of a flattened batch to itself at the cost of a padded batch (`flattened_attention`).
    """
    options: dict[str, Any] = {"dtype": torch.float32}
    if flattened_batches:
        options["attn_implementation"] = flattened_attention()
    if not four_bit:
        return AutoModelForCausalLM.from_pretrained(str(model_dir), **options)
    quantization = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=torch.float32,
    )
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), quantization_config=quantization, device_map="cpu", **options
    )
    disable_cpu_inference_repack(model)
    return model


def flattened_attention() -> str:
    """The attention implementation for padding-free and packed batches.

    flash-attention's variable-length kernel where it can run (CUDA with the `flash_attn`
    package), else `varlen_attention.varlen_sdpa`: transformers' own SDPA fallback would attend
    over the whole flattened batch, at the square of its length.
    """
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return varlen_attention.register()


def disable_cpu_inference_repack(model: torch.nn.Module) -> int:
    """Keeps 4-bit layers trainable after an eval-mode forward; returns how many were changed.

    On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit weight for a faster inference kernel
    the first time a layer runs in eval mode without gradients (an evaluation, a generate).
    That kernel has no autograd, so training afterwards silently gets wrong LoRA gradients
    (the only sign is a UserWarning about `gemv_4bit`). Turning the repack off avoids it.
    """
    from bitsandbytes.nn.modules import Linear4bit

    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def prepare_for_kbit_training(model: Any) -> Any:
    """PEFT's 4-bit preparation, without gradient checkpointing (slower, no gain at this size)."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
        model, use_gradient_checkpointing=False
    )


def adapters_to_float32(model: Any) -> None:
    """Undoes TRL's cast of a quantized model's LoRA weights to bfloat16.

    TRL follows the QLoRA paper's bfloat16 adapters (meant for GPUs); on the CPU the compute
    dtype is float32, and float32 adapters keep the optimizer's small updates exact.
    """
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.to(torch.float32)


def load_adapter(model: Any, adapter_dir: Path, *, trainable: bool) -> Any:
    """`model` wrapped with the adapter in `adapter_dir` (named "default")."""
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)


def lora_config(hp: Mapping[str, object]) -> LoraConfig:
    """LoRA on the listed modules, or on every linear layer but the LM head when none are."""
    targets = [str(name) for name in _list(hp.get("target_modules"))]
    return LoraConfig(
        r=int(_number(hp["lora_r"])),
        lora_alpha=int(_number(hp["lora_alpha"])),
        lora_dropout=float(_number(hp["lora_dropout"])),
        target_modules=targets or "all-linear",
        task_type="CAUSAL_LM",
    )


def _number(value: object) -> float:
    """A hyperparameter as a number (JSON renders int64 values as strings)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _list(value: object) -> list[object]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return list(value)
    raise ValueError(f"expected a list, got {value!r}")


def flag(hp: Mapping[str, object], name: str, default: bool = False) -> bool:
    """A boolean hyperparameter; strings such as "true"/"false" are read as JSON would."""
    value = hp.get(name, default)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def number(hp: Mapping[str, object], name: str, default: float | None = None) -> float:
    """A numeric hyperparameter, or `default` when absent."""
    value = hp.get(name, default)
    if value is None:
        raise ValueError(f"hyperparameter {name} is required")
    return _number(value)


# ---- trainer arguments --------------------------------------------------------------------------


def training_arguments(
    config_class: type[TrainingArguments],
    spec: TrainingSpec,
    hp: Mapping[str, object],
    staging_dir: Path,
    **extra: Any,
) -> Any:
    """A TRL config for a deterministic CPU run that writes its checkpoints into `staging_dir`.

    bf16 and gradient checkpointing are TRL's defaults and fail or slow down on the CPU, so
    both are off. `warmup_ratio` becomes a fractional `warmup_steps` (transformers 5).
    """
    max_steps = int(number(hp, "max_steps", -1))
    save_steps = int(number(hp, "save_steps", 0))
    logging_steps = int(number(hp, "logging_steps", 10))
    batch = int(number(hp, "per_device_train_batch_size", 8))
    seed = int(number(hp, "seed", 42))
    evaluate = spec.validation_file is not None
    return config_class(
        output_dir=str(staging_dir),
        learning_rate=number(hp, "learning_rate"),
        max_steps=max_steps if max_steps > 0 else -1,
        num_train_epochs=number(hp, "num_train_epochs", 1.0),
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=batch,
        gradient_accumulation_steps=int(number(hp, "gradient_accumulation_steps", 1)),
        warmup_steps=min(number(hp, "warmup_ratio", 0.0), 0.999),
        weight_decay=number(hp, "weight_decay", 0.0),
        lr_scheduler_type=str(hp.get("lr_scheduler_type", "linear")),
        logging_steps=logging_steps,
        save_strategy="steps" if save_steps > 0 else "no",
        save_steps=save_steps if save_steps > 0 else 500,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=int(number(hp, "eval_steps", logging_steps)) if evaluate else None,
        seed=seed,
        data_seed=seed,
        bf16=False,
        fp16=False,
        activation_checkpointing=False,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        **extra,
    )


@contextlib.contextmanager
def staging_dir(output_dir: Path) -> Iterator[Path]:
    """A private directory the Trainer writes checkpoints into before they are published.

    Private (a fresh name per run) so that a stale attempt writing into the same tree cannot
    mix its files in; removed when the run ends, whichever way it ends.
    """
    root = checkpoints.checkpoints_root(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ---- events -------------------------------------------------------------------------------------


def _numeric(logs: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of a Trainer log, with the platform's names."""
    metrics: dict[str, float] = {}
    for key, value in logs.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        name = "tokens_per_second" if key == "train_tokens_per_second" else key
        if math.isfinite(value):
            metrics[name] = float(value)
    return metrics


@dataclass
class EventsBridge(TrainerCallback):
    """Feeds `EngineEvents` from the Trainer, publishes checkpoints, and honours stop requests."""

    events: EngineEvents
    output_dir: Path
    stop: StopRequest = ""
    last_train: dict[str, float] = field(default_factory=dict)
    last_eval: dict[str, float] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)
    last_checkpoint: Path | None = None
    last_eval_step: int = -1

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        self.events.on_start(int(state.max_steps))

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        request = self.events.should_stop()
        if request == "cancel":
            control.should_save = False
            control.should_evaluate = False
            control.should_training_stop = True
            self.stop = "cancel"
        elif request == "pause" and state.global_step < state.max_steps:
            control.should_save = True
            control.should_evaluate = False
            control.should_training_stop = True
            self.stop = "pause"

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> None:
        metrics = _numeric(logs or {})
        if "train_runtime" in metrics and "train_loss" in metrics:
            self.summary = metrics  # the Trainer's end-of-training summary
            return
        if any(key.startswith("eval_") for key in metrics):
            self.last_eval = metrics
            self.last_eval_step = state.global_step
        elif "loss" in metrics:
            self.last_train = metrics
        else:
            return
        self.events.on_log(int(state.global_step), int(state.max_steps), metrics)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        step = int(state.global_step)
        staged = Path(str(args.output_dir)) / f"checkpoint-{step}"
        metrics = {**self.last_train, **self.last_eval}
        path = checkpoints.publish(staged, self.output_dir, step, metrics)
        self.last_checkpoint = path
        log.info("checkpoint %s complete", path)
        self.events.on_checkpoint(step, path, metrics)


# ---- the run ------------------------------------------------------------------------------------


def check_resume_source(spec: TrainingSpec) -> None:
    """Refuses to resume from anything but a complete checkpoint this platform wrote."""
    if spec.resume_from is not None:
        checkpoints.require_complete(spec.resume_from)


def attach(trainer: Trainer, bridge: EventsBridge) -> None:
    """Adds the bridge and removes the Trainer's console printers (engines never print)."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(bridge)


def run(
    trainer: Trainer, spec: TrainingSpec, bridge: EventsBridge, *, full_model: bool = False
) -> TrainingResult:
    """Trains (resuming if asked), then saves the result unless the run was stopped."""
    resume = str(spec.resume_from) if spec.resume_from is not None else None
    trainer.train(resume_from_checkpoint=resume)
    steps = int(trainer.state.global_step)
    if bridge.stop:
        status: TrainingStatus = "cancelled" if bridge.stop == "cancel" else "paused"
        log.info("training %s at step %d", status, steps)
        return TrainingResult(
            status=status,
            adapter_dir=None,
            steps=steps,
            metrics=_result_metrics(bridge),
            last_checkpoint=bridge.last_checkpoint,
        )
    if spec.validation_file is not None and bridge.last_eval_step != steps:
        trainer.evaluate()
    saved = save_result(trainer, spec.output_dir, full_model=full_model)
    log.info("training completed at step %d; saved %s", steps, saved)
    return TrainingResult(
        status="completed",
        adapter_dir=None if full_model else saved,
        model_dir=saved if full_model else None,
        steps=steps,
        metrics=_result_metrics(bridge),
        last_checkpoint=bridge.last_checkpoint,
    )


def _result_metrics(bridge: EventsBridge) -> dict[str, float]:
    """The last training and evaluation metrics, and the Trainer's summary."""
    return {**bridge.last_train, **bridge.last_eval, **bridge.summary}


def save_result(trainer: Trainer, output_dir: Path, *, full_model: bool) -> Path:
    """Writes the adapter (or the whole model) to a temporary directory, then renames it in place.

    Only the "default" adapter is saved: DPO from a parent adapter also holds a frozen "ref"
    copy of it, which is not part of the result.
    """
    target = output_dir / ("model" if full_model else "adapter")
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=output_dir))
    model: PreTrainedModel | PeftModel = trainer.accelerator.unwrap_model(trainer.model)
    if isinstance(model, PeftModel):
        model.save_pretrained(str(temporary), selected_adapters=["default"])
    else:
        model.save_pretrained(str(temporary))
        if trainer.processing_class is not None:
            trainer.processing_class.save_pretrained(str(temporary))
    if target.exists():
        shutil.rmtree(target)
    os.replace(temporary, target)
    return target
