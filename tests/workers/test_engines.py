"""The training engines on a tiny random Llama: each method trains, reports, checkpoints
atomically, stops on request, and resumes bit-exactly; `check_spec` catches bad input early."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from llmops_workers.engines import (
    DEFAULT_HYPERPARAMETERS,
    StopRequest,
    TrainingResult,
    TrainingSpec,
    check_spec,
    run_training,
)
from llmops_workers.engines import checkpoints as ckpt
from llmops_workers.engines.spec import resolve_hyperparameters
from tests.tiny_models import TinyModels, read_rows, write_rows

GEMV_4BIT = ".*gemv_4bit.*"
PHASES = ("setup", "train", "checkpoint", "save")
SFT_HP: dict[str, object] = {
    "max_steps": 12,
    "per_device_train_batch_size": 4,
    "logging_steps": 1,
    "save_steps": 6,
    "learning_rate": 3e-3,
    "lora_r": 8,
    "lora_alpha": 16,
}


@dataclass
class Recorder:
    """EngineEvents that remember every call and stop when told to (by step number)."""

    stop_at: dict[int, StopRequest] = field(default_factory=dict)
    starts: list[int] = field(default_factory=list)
    logs: list[tuple[int, int, dict[str, float]]] = field(default_factory=list)
    checkpoints: list[tuple[int, Path, list[str]]] = field(default_factory=list)
    polls: int = 0

    def on_start(self, total_steps: int) -> None:
        self.starts.append(total_steps)

    def on_log(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        self.logs.append((step, total_steps, metrics))

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        self.checkpoints.append((step, path, sorted(p.name for p in path.iterdir())))

    def should_stop(self) -> StopRequest:
        self.polls += 1
        return self.stop_at.get(self.polls, "")

    def train_losses(self) -> dict[int, float]:
        return {step: m["loss"] for step, _, m in self.logs if "loss" in m}

    def eval_losses(self) -> dict[int, float]:
        return {step: m["eval_loss"] for step, _, m in self.logs if "eval_loss" in m}


@dataclass
class Run:
    spec: TrainingSpec
    result: TrainingResult
    events: Recorder
    seconds: float


def make_spec(models: TinyModels, data: Path, out: Path, **changes: Any) -> TrainingSpec:
    values: dict[str, Any] = {
        "method": "sft",
        "base_model_dir": models.base,
        "output_dir": out,
        "train_file": data / "sft.jsonl",
        "hyperparameters": SFT_HP,
        "threads": 1,
    }
    values.update(changes)
    return TrainingSpec(**values)


def train(spec: TrainingSpec, events: Recorder | None = None) -> Run:
    recorder = events or Recorder()
    started = time.perf_counter()
    result = run_training(spec, recorder)
    return Run(spec, result, recorder, time.perf_counter() - started)


def safetensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def sft_run(
    tiny_models: TinyModels, engine_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Run:
    """One uninterrupted LoRA SFT run, the reference for several tests."""
    return train(make_spec(tiny_models, engine_data, tmp_path_factory.mktemp("sft")))


@pytest.fixture
def gemv_4bit_is_an_error() -> Iterator[None]:
    """The 4-bit CPU trap shows itself only through this warning: make it fail the test."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=GEMV_4BIT)
        yield


# ---- LoRA SFT -----------------------------------------------------------------------------------


def test_sft_runs_to_completion_and_saves_a_safetensors_adapter(sft_run: Run) -> None:
    result = sft_run.result
    assert result.status == "completed" and result.steps == 12
    assert result.adapter_dir == sft_run.spec.output_dir / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {
        p.name for p in result.adapter_dir.iterdir()
    }
    weights = safetensors(result.adapter_dir / "adapter_model.safetensors")
    assert weights and all("lora_" in name for name in weights)
    assert all(w.abs().sum() > 0 for name, w in weights.items() if "lora_B" in name)
    assert result.last_checkpoint == ckpt.checkpoint_dir(sft_run.spec.output_dir, 12)
    assert {"loss", "train_loss", "train_runtime", "tokens_per_second"} <= set(result.metrics)


def test_sft_reports_where_its_time_went(sft_run: Run) -> None:
    """The phases add up to no more than the run, checkpoints are part of training."""
    metrics = sft_run.result.metrics
    phases = {name: metrics[f"phase_{name}_seconds"] for name in PHASES}
    assert all(seconds > 0 for seconds in phases.values()), phases
    assert phases["checkpoint"] < phases["train"]  # two checkpoints, inside train()
    assert phases["train"] >= metrics["train_runtime"] * 0.9
    assert sum(phases[name] for name in ("setup", "train", "save")) <= sft_run.seconds


def test_sft_loss_decreases_on_a_repeated_dataset(sft_run: Run) -> None:
    losses = list(sft_run.events.train_losses().values())
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05


def test_sft_reports_start_logs_and_only_complete_checkpoints(sft_run: Run) -> None:
    events = sft_run.events
    assert events.starts == [12]
    assert [step for step, _, _ in events.logs] == list(range(1, 13))
    for _, total, metrics in events.logs:
        assert total == 12
        assert {"loss", "learning_rate", "grad_norm", "tokens_per_second", "epoch"} <= set(metrics)
    assert [(step, path.name) for step, path, _ in events.checkpoints] == [
        (6, "step-6"),
        (12, "step-12"),
    ]
    for _, _, files in events.checkpoints:
        assert {ckpt.COMPLETE_MARKER, "adapter_model.safetensors", "optimizer.pt"} <= set(files)
    root = ckpt.checkpoints_root(sft_run.spec.output_dir)
    assert sorted(p.name for p in root.iterdir()) == ["step-12", "step-6"]  # no staging left
    assert ckpt.latest_complete(sft_run.spec.output_dir) == root / "step-12"


def test_training_loads_and_trains_on_the_cpu_in_float32(
    tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    """The model package's placement rule, asked for the CPU; the Trainer's arguments agree."""
    import torch
    from trl.trainer.sft_config import SFTConfig

    from llmops_ml import placement
    from llmops_workers.engines import arguments, sft

    assert arguments.PLACEMENT == placement.CPU
    spec = make_spec(tiny_models, engine_data, tmp_path / "out")
    config: SFTConfig = sft.sft_config(spec, resolve_hyperparameters(spec), tmp_path / "staging")
    assert (config.use_cpu, config.bf16, config.fp16) == (True, False, False)
    model, _ = sft.build_model(spec, resolve_hyperparameters(spec))
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_sft_trains_only_the_adapter_on_completion_tokens_of_rendered_prompts(
    tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    import torch

    from llmops_workers.engines import sft
    from llmops_workers.engines.runtime import engine_runtime

    rows = [{"prompt": "Ada Lovelace lives in London.", "completion": " Ada Lovelace"}] * 8
    spec = make_spec(
        tiny_models,
        engine_data,
        tmp_path / "out",
        train_file=write_rows(tmp_path / "raw.jsonl", rows),
        template="Extract the person's full name.\nText: {text}\nName:",
        hyperparameters={**SFT_HP, "max_steps": 3},
    )
    with engine_runtime(1):
        trainer = sft.build_trainer(spec, tmp_path / "staging")
        tokenizer: Any = trainer.processing_class
        dataset: Any = trainer.train_dataset
        model: Any = trainer.model
        example = dataset[0]
        text = tokenizer.decode(example["input_ids"])
        assert text.startswith(
            "Extract the person's full name.\nText: Ada Lovelace lives in London."
        )
        completion = [t for t in example["labels"] if t != -100]
        assert tokenizer.decode(completion) == " Ada Lovelace</s>"
        assert example["labels"][: len(example["input_ids"]) - len(completion)] == [-100] * (
            len(example["input_ids"]) - len(completion)
        )
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        trainer.train()
    after = dict(model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed and all("lora_" in n for n in changed)
    assert {n for n in before if "lora_B" in n} <= changed


def test_sft_with_a_validation_file_reports_eval_loss(
    tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    spec = make_spec(
        tiny_models,
        engine_data,
        tmp_path,
        validation_file=engine_data / "sft-validation.jsonl",
        hyperparameters={**SFT_HP, "max_steps": 5, "eval_steps": 2, "save_steps": 0},
    )
    run = train(spec)
    assert sorted(run.events.eval_losses()) == [2, 4, 5]  # plus a final evaluation
    assert run.result.metrics["eval_loss"] == run.events.eval_losses()[5]
    assert run.result.last_checkpoint is None


def test_sft_on_chat_rows(tiny_models: TinyModels, engine_data: Path, tmp_path: Path) -> None:
    rows = [
        {
            "messages": [
                {"role": "user", "content": row["prompt"]},
                {"role": "assistant", "content": row["completion"].strip()},
            ]
        }
        for row in read_rows("demo-sft.train.jsonl", 8)
    ]
    spec = make_spec(
        tiny_models,
        engine_data,
        tmp_path,
        train_file=write_rows(tmp_path / "chat.jsonl", rows),
        hyperparameters={**SFT_HP, "max_steps": 2, "save_steps": 0},
    )
    assert train(spec).result.status == "completed"


@pytest.mark.parametrize("option", ["packing", "padding_free"])
def test_sft_packing_and_padding_free_batches(
    option: str, tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    hp = {**SFT_HP, "max_steps": 2, "save_steps": 0, "logging_steps": 2, option: True}
    run = train(make_spec(tiny_models, engine_data, tmp_path, hyperparameters=hp))
    assert run.result.status == "completed"
    assert run.events.train_losses()[2] == pytest.approx(run.result.metrics["loss"])


def test_padding_free_sft_starts_from_the_padded_runs_loss(
    tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    """The first step sees the same rows either way: the same loss when the attention is exact."""
    hp = {**SFT_HP, "max_steps": 1, "save_steps": 0, "logging_steps": 1}
    losses = {}
    for padding_free in (False, True):
        spec = make_spec(
            tiny_models,
            engine_data,
            tmp_path / str(padding_free),
            hyperparameters={**hp, "padding_free": padding_free},
        )
        losses[padding_free] = train(spec).events.train_losses()[1]
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


# ---- stopping and resuming ----------------------------------------------------------------------


def test_cancel_stops_without_saving(
    tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    spec = make_spec(
        tiny_models, engine_data, tmp_path, hyperparameters={**SFT_HP, "save_steps": 3}
    )
    run = train(spec, Recorder(stop_at={3: "cancel"}))
    assert run.result.status == "cancelled" and run.result.steps == 3
    assert run.result.adapter_dir is None and run.result.last_checkpoint is None
    assert not (tmp_path / "adapter").exists()
    assert run.events.checkpoints == []
    assert list(ckpt.checkpoints_root(tmp_path).iterdir()) == []


def test_pause_checkpoints_and_resume_continues_bit_exactly(
    sft_run: Run, tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    first = make_spec(tiny_models, engine_data, tmp_path / "attempt-1")
    paused = train(first, Recorder(stop_at={5: "pause"}))
    assert paused.result.status == "paused" and paused.result.steps == 5
    assert paused.result.adapter_dir is None
    checkpoint = ckpt.checkpoint_dir(first.output_dir, 5)
    assert paused.result.last_checkpoint == checkpoint and ckpt.is_complete(checkpoint)
    assert [step for step, _, _ in paused.events.checkpoints] == [5]

    second = replace(first, output_dir=tmp_path / "attempt-2", resume_from=checkpoint)
    resumed = train(second)
    assert resumed.result.status == "completed" and resumed.result.steps == 12
    reference = sft_run.events.train_losses()
    losses = resumed.events.train_losses()
    assert sorted(losses) == list(range(6, 13))
    for step, loss in losses.items():
        assert loss == pytest.approx(reference[step], abs=1e-6)
    assert resumed.result.adapter_dir is not None and sft_run.result.adapter_dir is not None
    ours = safetensors(resumed.result.adapter_dir / "adapter_model.safetensors")
    theirs = safetensors(sft_run.result.adapter_dir / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys()
    assert all((ours[k] - theirs[k]).abs().max() <= 1e-6 for k in ours)


def test_resume_refuses_a_checkpoint_without_the_marker(
    sft_run: Run, tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    import shutil

    forged = tmp_path / "step-6"
    shutil.copytree(ckpt.checkpoint_dir(sft_run.spec.output_dir, 6), forged)
    (forged / ckpt.COMPLETE_MARKER).unlink()
    spec = make_spec(tiny_models, engine_data, tmp_path / "out", resume_from=forged)
    with pytest.raises(ValueError, match="no COMPLETE marker"):
        run_training(spec, Recorder())
    assert not (tmp_path / "out").exists()


def test_latest_complete_ignores_partial_and_staging_dirs(tmp_path: Path) -> None:
    root = ckpt.checkpoints_root(tmp_path)
    for name in ("step-3", "step-20", ".staging-x", "step-7"):
        (root / name).mkdir(parents=True)
    staged = root / ".staging-x"
    (staged / "weights").write_text("w")
    assert ckpt.latest_complete(tmp_path) is None
    published = ckpt.publish(staged, tmp_path, 7, {"loss": 1.0})
    (root / "step-3" / ckpt.COMPLETE_MARKER).write_text("{}")
    assert published == root / "step-7" and not staged.exists()
    assert json.loads((published / ckpt.COMPLETE_MARKER).read_text())["step"] == 7
    assert ckpt.latest_complete(tmp_path) == published  # step-20 has no marker


def test_a_failed_checkpoint_write_names_the_step_and_keeps_the_cause(tmp_path: Path) -> None:
    gone = ckpt.checkpoints_root(tmp_path) / ".staging-gone"  # as if the disk lost it
    with pytest.raises(ckpt.CheckpointWriteError) as raised, ckpt.writing(12):
        ckpt.publish(gone, tmp_path, 12, {})
    message = str(raised.value)
    assert message.startswith("writing the checkpoint of step 12 failed (FileNotFoundError: ")
    assert isinstance(raised.value.__cause__, FileNotFoundError)
    assert ckpt.latest_complete(tmp_path) is None


# ---- QLoRA --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("gemv_4bit_is_an_error")
def test_qlora_trains_through_evaluations(
    tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    spec = make_spec(
        tiny_models,
        engine_data,
        tmp_path,
        method="qlora",
        validation_file=engine_data / "sft-validation.jsonl",
        hyperparameters={**SFT_HP, "max_steps": 6, "eval_steps": 2, "save_steps": 0},
    )
    run = train(spec)
    assert run.result.status == "completed"
    assert sorted(run.events.eval_losses()) == [2, 4, 6]
    losses = list(run.events.train_losses().values())
    assert losses[-1] < losses[0]
    assert run.result.adapter_dir is not None
    weights = safetensors(run.result.adapter_dir / "adapter_model.safetensors")
    assert {str(w.dtype) for w in weights.values()} == {"torch.float32"}


def _qlora_grads_after_eval_forward(model_dir: Path, *, fix: bool) -> dict[str, Any]:
    """LoRA-B gradients of one training step on a 4-bit model that ran in eval mode first."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from llmops_ml import loading, placement
    from llmops_workers.engines import qlora

    torch.manual_seed(0)
    if fix:
        model = loading.load_model(model_dir, placement.CPU, four_bit=True)
    else:
        quantization = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
        )
        model = AutoModelForCausalLM.from_pretrained(
            str(model_dir), quantization_config=quantization, device_map="cpu"
        )
    model = get_peft_model(
        qlora.prepare_for_kbit_training(model),
        LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    batch = AutoTokenizer.from_pretrained(str(model_dir))(["Ada Lovelace"], return_tensors="pt")
    model.eval()
    with torch.no_grad():
        model(**batch)
    model.train()
    model(**batch, labels=batch["input_ids"]).loss.backward()
    return {n: p.grad for n, p in model.named_parameters() if "lora_B" in n}


@pytest.mark.usefixtures("gemv_4bit_is_an_error")
def test_qlora_gradients_survive_an_eval_mode_forward(tiny_models: TinyModels) -> None:
    from llmops_workers.engines.runtime import engine_runtime

    with engine_runtime(1):
        grads = _qlora_grads_after_eval_forward(tiny_models.base, fix=True)
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())


def test_without_the_fix_the_4bit_trap_shows_as_the_gemv_warning(tiny_models: TinyModels) -> None:
    """The control for the test above: on this CPU the trap is real and the warning is its sign."""
    from bitsandbytes.functional import has_avx512bf16

    from llmops_workers.engines.runtime import engine_runtime

    if not has_avx512bf16():  # type: ignore[no-untyped-call]
        pytest.skip("no AVX512-BF16 on this CPU: bitsandbytes never repacks, no trap to show")
    with engine_runtime(1), pytest.warns(UserWarning, match=GEMV_4BIT):
        _qlora_grads_after_eval_forward(tiny_models.base, fix=False)


# ---- DPO ----------------------------------------------------------------------------------------


def test_dpo_runs_and_reports_rewards(
    tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    spec = make_spec(
        tiny_models,
        engine_data,
        tmp_path,
        method="dpo",
        train_file=engine_data / "preference.jsonl",
        hyperparameters={"max_steps": 6, "per_device_train_batch_size": 4, "logging_steps": 2},
    )
    run = train(spec)
    assert run.result.status == "completed" and run.result.adapter_dir is not None
    assert [step for step, _, _ in run.events.logs] == [2, 4, 6]
    for _, _, metrics in run.events.logs:
        assert {"loss", "rewards/chosen", "rewards/accuracies", "rewards/margins"} <= set(metrics)
    assert (run.result.adapter_dir / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("rpo_alpha", [0.0, 1.0])
def test_rpo_alpha_adds_the_chosen_answers_nll_to_the_dpo_loss(
    rpo_alpha: float, tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    """At the first step the policy is its reference, so the DPO term is exactly log 2."""
    hp = {"max_steps": 1, "per_device_train_batch_size": 4, "logging_steps": 1, "save_steps": 0}
    spec = make_spec(
        tiny_models,
        engine_data,
        tmp_path,
        method="dpo",
        train_file=engine_data / "preference.jsonl",
        hyperparameters={**hp, "rpo_alpha": rpo_alpha},
    )
    loss = train(spec).events.train_losses()[1]
    if rpo_alpha == 0:
        assert loss == pytest.approx(math.log(2), abs=1e-4)
    else:
        assert loss > math.log(2) + 1  # plus the chosen answers' NLL: nats, on a random model


def test_dpo_continues_a_parent_adapter_against_it_as_reference(
    sft_run: Run, tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    parent = sft_run.result.adapter_dir
    assert parent is not None
    spec = make_spec(
        tiny_models,
        engine_data,
        tmp_path,
        method="dpo",
        train_file=engine_data / "preference.jsonl",
        parent_adapter_dir=parent,
        hyperparameters={"max_steps": 3, "per_device_train_batch_size": 4, "logging_steps": 1},
    )
    run = train(spec)
    assert run.result.status == "completed" and run.result.adapter_dir is not None
    first = run.events.logs[0][2]
    # At the first step the policy is the parent adapter itself: zero implicit reward shows the
    # reference is the parent (the base alone would give a nonzero reward).
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)
    assert not (run.result.adapter_dir / "ref").exists()
    ours = safetensors(run.result.adapter_dir / "adapter_model.safetensors")
    theirs = safetensors(parent / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys()
    assert any((ours[k] - theirs[k]).abs().max() > 0 for k in ours)


# ---- distillation -------------------------------------------------------------------------------


def test_distill_from_an_adapter_teacher_lowers_the_student_loss(
    sft_run: Run, tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    spec = make_spec(
        tiny_models,
        engine_data,
        tmp_path,
        method="distill",
        base_model_dir=tiny_models.student,
        teacher_model_dir=tiny_models.base,
        teacher_adapter_dir=sft_run.result.adapter_dir,
        validation_file=engine_data / "sft-validation.jsonl",
        hyperparameters={**SFT_HP, "logging_steps": 4, "eval_steps": 12, "save_steps": 0},
    )
    run = train(spec)
    assert run.result.status == "completed" and run.result.adapter_dir is not None
    logs = [metrics for _, _, metrics in run.events.logs if "loss" in metrics]
    assert len(logs) == 3 and logs[-1]["loss"] < logs[0]["loss"]
    assert all(m["kd_loss"] > 0 and m["ce_loss"] > 0 for m in logs)
    assert {"eval_loss", "eval_kd_loss", "eval_ce_loss"} <= set(run.result.metrics)


def test_distill_loss_is_normalised_over_gradient_accumulation(
    tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    """Two micro-batches of 4 must train exactly like one batch of 8."""
    losses: list[dict[int, tuple[float, float]]] = []
    for batch, accumulation in ((8, 1), (4, 2)):
        hp = {
            **SFT_HP,
            "max_steps": 2,
            "save_steps": 0,
            "per_device_train_batch_size": batch,
            "gradient_accumulation_steps": accumulation,
        }
        spec = make_spec(
            tiny_models,
            engine_data,
            tmp_path / str(batch),
            method="distill",
            base_model_dir=tiny_models.student,
            teacher_model_dir=tiny_models.base,
            hyperparameters=hp,
        )
        logs = train(spec).events.logs
        losses.append({step: (m["loss"], m["grad_norm"]) for step, _, m in logs if "loss" in m})
    assert losses[0].keys() == losses[1].keys() == {1, 2}
    for step in (1, 2):  # the same loss, and the same gradient (Adam alone would hide a 2x)
        assert losses[0][step] == pytest.approx(losses[1][step], rel=1e-5)


def test_distill_full_finetune_saves_a_whole_model(
    tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    spec = make_spec(
        tiny_models,
        engine_data,
        tmp_path,
        method="distill",
        base_model_dir=tiny_models.student,
        teacher_model_dir=tiny_models.base,
        hyperparameters={"max_steps": 2, "per_device_train_batch_size": 4, "full_finetune": True},
    )
    result = train(spec).result
    assert result.adapter_dir is None and result.model_dir == tmp_path / "model"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in result.model_dir.iterdir()
    }


def test_distillation_loss_blends_kl_and_cross_entropy_over_label_tokens() -> None:
    import torch
    import torch.nn.functional as F

    from llmops_workers.engines.distill import distillation_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.randint(0, 11, (2, 5))
    labels[0, :2] = -100
    loss, kd, ce, count = distillation_loss(
        logits, logits, labels, temperature=2.0, alpha=0.5, beta=0.3
    )
    assert int(count) == 7 and float(kd) == pytest.approx(0.0, abs=1e-5)  # a perfect student
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1))
    assert float(ce) / 7 == pytest.approx(float(expected), rel=1e-5)
    assert float(loss) == pytest.approx(0.5 * float(ce), rel=1e-5)

    teacher = logits + torch.randn(2, 5, 11)
    mask = labels[:, 1:] != -100
    s_log = F.log_softmax(logits[:, :-1][mask] / 2.0, dim=-1)
    t_log = F.log_softmax(teacher[:, :-1][mask] / 2.0, dim=-1)
    forward_kl = float((t_log.exp() * (t_log - s_log)).sum()) * 4.0
    reverse_kl = float((s_log.exp() * (s_log - t_log)).sum()) * 4.0
    for beta, expected_kd in ((0.0, forward_kl), (1.0, reverse_kl)):
        loss, kd, _, _ = distillation_loss(
            logits, teacher, labels, temperature=2.0, alpha=1.0, beta=beta
        )
        assert float(kd) == pytest.approx(expected_kd, rel=1e-5) and float(loss) == float(kd)


# ---- the spec and its checks --------------------------------------------------------------------


def test_importing_the_engines_does_not_import_torch() -> None:
    code = "import sys, llmops_workers.engines; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_every_hyperparameter_the_service_accepts_has_a_default() -> None:
    """The engines fill in what a spec leaves unset from the service's table of rules."""
    from llmops_services.training.hyperparameters import RULES

    for method, defaults in DEFAULT_HYPERPARAMETERS.items():
        accepted = {name for name, rule in RULES.items() if method in rule.methods}
        assert set(defaults) | {"num_train_epochs"} == accepted


def test_epochs_replace_the_default_step_count(tmp_path: Path) -> None:
    spec = TrainingSpec("dpo", tmp_path, tmp_path, tmp_path, hyperparameters={"beta": 0.2})
    resolved = resolve_hyperparameters(spec)
    assert resolved["beta"] == 0.2 and resolved["max_steps"] == 300
    by_epochs = resolve_hyperparameters(replace(spec, hyperparameters={"num_train_epochs": 2}))
    assert "max_steps" not in by_epochs


def test_a_good_spec_has_no_problems(
    sft_run: Run, tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    assert check_spec(sft_run.spec) == []
    distill = make_spec(
        tiny_models,
        engine_data,
        tmp_path,
        method="distill",
        base_model_dir=tiny_models.student,
        teacher_model_dir=tiny_models.base,
        teacher_adapter_dir=sft_run.result.adapter_dir,
        resume_from=sft_run.result.last_checkpoint,
        hyperparameters={"temperature": "2.5", "full_finetune": "true", "max_steps": "10"},
    )
    assert check_spec(distill) == []


def test_check_spec_finds_the_problems(
    tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    other_vocab = tmp_path / "other"
    other_vocab.mkdir()
    (other_vocab / "config.json").write_text(json.dumps({"vocab_size": 99}))
    no_template = tmp_path / "plain"
    no_template.mkdir()
    (no_template / "config.json").write_text("{}")
    chat = write_rows(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "x"}]}])
    cases: list[tuple[dict[str, Any], str]] = [
        ({"base_model_dir": tmp_path / "missing"}, "base model"),
        ({"train_file": tmp_path / "missing.jsonl"}, "does not exist"),
        ({"train_file": engine_data / "preference.jsonl"}, 'rows must be {"prompt", "completion"}'),
        ({"method": "dpo"}, 'rows must be {"prompt", "chosen", "rejected"} for dpo'),
        ({"method": "distill"}, "distill needs a teacher"),
        ({"teacher_model_dir": tiny_models.base}, "only used by distill"),
        (
            {"method": "distill", "teacher_model_dir": other_vocab},
            "vocabulary (512) differs from the teacher's (99)",
        ),
        ({"template": "no field"}, "template: template must contain {text}"),
        ({"hyperparameters": {"learnig_rate": 1}}, "learnig_rate is unknown for sft"),
        ({"hyperparameters": {"beta": 0.1}}, "beta is not used by sft"),
        ({"hyperparameters": {"max_steps": "many"}}, "max_steps='many' must be a number"),
        ({"hyperparameters": {"packing": 3}}, "packing=3 must be true or false"),
        ({"hyperparameters": {"target_modules": [1]}}, "must be a list of names"),
        ({"hyperparameters": {"report_to": ["mlfow"]}}, "report_to 'mlfow' is not a tracker"),
        (
            {"hyperparameters": {"report_to": ["clearml"]}},
            "report_to 'clearml': the clearml package is not installed on this worker",
        ),
        ({"parent_adapter_dir": tmp_path}, "not a PEFT adapter"),
        ({"resume_from": tmp_path}, "no COMPLETE marker"),
        ({"threads": 0}, "threads must be at least 1"),
        ({"method": "rlhf"}, "unknown method 'rlhf'"),
        ({"train_file": chat, "base_model_dir": no_template}, "no chat template"),
    ]
    for changes, fragment in cases:
        problems = check_spec(make_spec(tiny_models, engine_data, tmp_path / "out", **changes))
        assert any(fragment in problem for problem in problems), (changes, problems)


def test_run_training_refuses_a_spec_with_problems(
    tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    spec = make_spec(tiny_models, engine_data, tmp_path, method="distill")
    with pytest.raises(ValueError, match="distill needs a teacher"):
        run_training(spec, Recorder())
