"""Distillation: a student learns the teacher's temperature-softened next-token distributions on
the dataset's completions, blended with ordinary cross-entropy on the same tokens.

    loss = alpha * T^2 * [(1 - beta) * KL(teacher || student) + beta * KL(student || teacher)]
           + (1 - alpha) * cross_entropy(student, labels)

over the completion tokens (all tokens for chat rows), with the softmaxes taken at temperature T.

Why our own small trainer rather than TRL's: `DistillationTrainer` is on-policy only (the
student samples completions, slow on a CPU and not deterministic across thread counts), and
`GKDTrainer` (experimental) ignores the temperature in its loss and has no cross-entropy term.
Subclassing `SFTTrainer` keeps TRL's tokenization, completion masks, packing and PEFT handling;
only the loss is ours.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from trl.trainer.sft_trainer import SFTTrainer

from llmops_ml import loading
from llmops_workers.engines import arguments, data, sft
from llmops_workers.engines.spec import (
    TrainingSpec,
    resolve_hyperparameters,
)

log = logging.getLogger("llmops.engine")


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed (blended loss, KD term, cross-entropy) over the label tokens, and their count.

    Logits are (batch, seq, vocab) for the same inputs; `labels` are unshifted with -100 where
    no loss applies. Sums rather than means, so the caller can normalise over a whole
    gradient-accumulation window.
    """
    shifted_labels = labels[:, 1:]
    mask = shifted_labels != -100
    student = student_logits[:, :-1][mask]
    teacher = teacher_logits[:, :-1][mask].to(student.dtype)
    targets = shifted_labels[mask]
    cross_entropy = F.cross_entropy(student, targets, reduction="sum")
    student_log_probs = F.log_softmax(student / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher / temperature, dim=-1)
    forward_kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="sum", log_target=True)
    reverse_kl = F.kl_div(teacher_log_probs, student_log_probs, reduction="sum", log_target=True)
    kd = ((1.0 - beta) * forward_kl + beta * reverse_kl) * temperature**2
    loss = alpha * kd + (1.0 - alpha) * cross_entropy
    return loss, kd.detach(), cross_entropy.detach(), mask.sum()


class LogitDistillationTrainer(SFTTrainer):
    """`SFTTrainer` whose loss is `distillation_loss` against a frozen teacher."""

    # The loss is normalised by the token count of the whole accumulation window (below).
    loss_is_scaled_for_ga = True  # type: ignore[assignment]  # TRL declares it as None

    def __init__(
        self,
        *args: Any,
        teacher: torch.nn.Module,
        temperature: float,
        alpha: float,
        beta: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        teacher.eval()
        teacher.requires_grad_(False)
        self.teacher = teacher
        self.temperature = temperature
        self.alpha = alpha
        self.beta = beta

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        """The blended loss; per-term means go to the logged metrics as kd_loss and ce_loss."""
        labels = inputs["labels"]
        forward_inputs = {key: value for key, value in inputs.items() if key != "labels"}
        outputs = model(**forward_inputs, use_cache=False)
        with torch.no_grad():
            teacher_logits = self.teacher(**forward_inputs, use_cache=False).logits
        loss, kd, cross_entropy, count = distillation_loss(
            outputs.logits,
            teacher_logits,
            labels,
            temperature=self.temperature,
            alpha=self.alpha,
            beta=self.beta,
        )
        mode = "train" if model.training else "eval"
        tokens = count.clamp(min=1)
        self._metrics[mode]["kd_loss"].append((kd / tokens).item())
        self._metrics[mode]["ce_loss"].append((cross_entropy / tokens).item())
        if num_items_in_batch is not None:
            loss = loss / torch.as_tensor(num_items_in_batch, device=loss.device).clamp(min=1)
        else:
            loss = loss / tokens
            if model.training:
                loss = loss / self.current_gradient_accumulation_steps
        return (loss, outputs) if return_outputs else loss


def load_teacher(spec: TrainingSpec) -> Any:
    """The teacher: a full model directory, or a base with an adapter merged into it."""
    if spec.teacher_model_dir is None:
        raise ValueError("distillation needs a teacher model")
    return loading.load_merged(
        spec.teacher_model_dir,
        spec.teacher_adapter_dir,
        arguments.PLACEMENT,
        trust_remote_code=spec.teacher_trust_remote_code,
    )


def build_student(spec: TrainingSpec, hp: Mapping[str, object]) -> tuple[Any, Any]:
    """The student and its LoRA config (None for full fine-tuning or a parent adapter)."""
    model = loading.load_model(
        spec.base_model_dir, arguments.PLACEMENT, trust_remote_code=spec.trust_remote_code
    )
    if spec.parent_adapter_dir is not None:
        return loading.load_adapter(model, spec.parent_adapter_dir, trainable=True), None
    if arguments.flag(hp, "full_finetune"):
        return model, None
    return model, arguments.lora_config(hp)


def check_vocabularies(student: Any, teacher: Any) -> None:
    """Logit distillation compares whole distributions, so both must share the vocabulary."""
    student_size = student.get_output_embeddings().weight.shape[0]
    teacher_size = teacher.get_output_embeddings().weight.shape[0]
    if student_size != teacher_size:
        raise ValueError(
            f"the student's vocabulary ({student_size}) differs from the teacher's "
            f"({teacher_size}); logit distillation needs a shared tokenizer"
        )


def build_trainer(spec: TrainingSpec, staging: Path) -> LogitDistillationTrainer:
    """The trainer that `run.train` runs, checkpointing into `staging`."""
    hp = resolve_hyperparameters(spec)
    tokenizer = loading.load_tokenizer(
        spec.base_model_dir, trust_remote_code=spec.trust_remote_code
    )
    train = data.to_dataset(data.sft_rows(data.read_jsonl(spec.train_file), spec.template))
    evaluation = None
    if spec.validation_file is not None:
        rows = data.sft_rows(data.read_jsonl(spec.validation_file), spec.template)
        evaluation = data.to_dataset(rows)
    teacher = load_teacher(spec)
    student, peft_config = build_student(spec, hp)
    check_vocabularies(student, teacher)
    trainer = LogitDistillationTrainer(
        model=student,
        args=sft.sft_config(spec, hp, staging),
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=peft_config,
        teacher=teacher,
        temperature=arguments.number(hp, "temperature", 2.0),
        alpha=arguments.number(hp, "distill_alpha", 0.5),
        beta=arguments.number(hp, "beta", 0.0),
    )
    log.info("distill: %d rows, hyperparameters %s", len(train), hp)
    return trainer
