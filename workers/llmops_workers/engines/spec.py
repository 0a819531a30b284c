"""What a training engine takes and gives back. Pure Python: no torch, so the worker, the CLI and
the services can build and check a spec without paying for the ML stack."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from llmops.training_defaults import DEFAULTS

__all__ = [
    "DEFAULT_HYPERPARAMETERS",
    "HYPERPARAMETER_NAMES",
    "METHODS",
    "EngineEvents",
    "Method",
    "StopRequest",
    "TrainingResult",
    "TrainingSpec",
    "TrainingStatus",
    "resolve_hyperparameters",
    "spec_from_dict",
    "spec_to_dict",
]

Method = Literal["sft", "qlora", "dpo", "distill"]
METHODS: tuple[Method, ...] = ("sft", "qlora", "dpo", "distill")
StopRequest = Literal["", "cancel", "pause"]
Strategy = Literal["", "ddp", "fsdp"]
TrainingStatus = Literal["completed", "cancelled", "paused"]

DEFAULT_HYPERPARAMETERS: dict[str, dict[str, object]] = DEFAULTS
"""Per method, the Training service's `auto` values (one table for both): they train the
platform's tiny Llama well on two CPU cores. `beta` is DPO's implicit reward temperature, and in
distillation the weight of the reverse KL against the forward KL."""

HYPERPARAMETER_NAMES: frozenset[str] = frozenset(
    {name for values in DEFAULT_HYPERPARAMETERS.values() for name in values} | {"num_train_epochs"}
)


@dataclass(frozen=True)
class TrainingSpec:
    """One training run, fully resolved: local paths and final hyperparameter values.

    `output_dir` belongs to this run alone (one per attempt): checkpoints are written to
    `output_dir/checkpoints/step-N/` and the final adapter to `output_dir/adapter/` (a full
    model to `output_dir/model/` when distilling with `full_finetune`).

    `hyperparameters` overlay `DEFAULT_HYPERPARAMETERS[method]` (names as in TRL/PEFT);
    `save_steps` 0 writes no periodic checkpoints (a pause always writes one). `template`
    renders each row's `prompt` (chat rows are used verbatim). `resume_from` must be a complete
    checkpoint this platform wrote; `parent_adapter_dir` continues an existing adapter (for DPO
    it is also the reference policy).
    """

    method: Method
    base_model_dir: Path
    output_dir: Path
    train_file: Path
    validation_file: Path | None = None
    template: str | None = None
    hyperparameters: Mapping[str, object] = field(default_factory=dict)
    teacher_model_dir: Path | None = None
    parent_adapter_dir: Path | None = None
    resume_from: Path | None = None
    threads: int = 1
    teacher_adapter_dir: Path | None = None
    """Distillation from an adapter: the teacher is `teacher_model_dir` with this adapter merged."""
    trust_remote_code: bool = False
    """Whether the base model's own code may run (`Model.trust_remote_code`, set by an admin)."""
    teacher_trust_remote_code: bool = False
    run_name: str = ""
    """What experiment trackers (`report_to`) call the run: the job's id."""
    gpus: int = 0
    """Processes (one per GPU) the run is launched on; 0 or 1 runs in the calling process."""
    strategy: Strategy = ""
    """How several processes share the work: "ddp" ("" too) or "fsdp"."""
    processes_on_cpu: bool = False
    """Run the `gpus` processes on the CPU (gloo) rather than on GPUs: for machines without one."""

    @property
    def distributed(self) -> bool:
        """Whether the run is launched on several processes."""
        return self.gpus > 1


@dataclass(frozen=True)
class TrainingResult:
    """How a run ended and what it left behind."""

    status: TrainingStatus
    adapter_dir: Path | None
    steps: int
    metrics: dict[str, float]
    last_checkpoint: Path | None
    model_dir: Path | None = None
    """Set instead of `adapter_dir` when a full model was trained (distill with full_finetune)."""


class EngineEvents(Protocol):
    """What an engine reports while it trains, and how it is asked to stop."""

    def on_start(self, total_steps: int) -> None:
        """Training begins; `total_steps` optimizer steps are planned."""

    def on_log(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        """Metrics of a logging step (loss, learning_rate, grad_norm, ...) or an evaluation."""

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        """A checkpoint is complete on disk (never called for a partial one)."""

    def should_stop(self) -> StopRequest:
        """Polled after every optimizer step: "" to go on, "pause" or "cancel" to stop."""
        ...


_PATHS = frozenset(f.name for f in dataclasses.fields(TrainingSpec) if "Path" in str(f.type))


def spec_to_dict(spec: TrainingSpec) -> dict[str, Any]:
    """The spec as JSON-ready values, for the processes of a multi-GPU run."""
    values = dataclasses.asdict(spec)
    return {
        key: (str(value) if key in _PATHS and value is not None else value)
        for key, value in values.items()
    } | {"hyperparameters": dict(spec.hyperparameters)}


def spec_from_dict(values: Mapping[str, Any]) -> TrainingSpec:
    """The spec that `spec_to_dict` wrote."""
    fields: dict[str, Any] = {
        key: (Path(value) if key in _PATHS and value is not None else value)
        for key, value in values.items()
    }
    return TrainingSpec(**fields)


def resolve_hyperparameters(spec: TrainingSpec) -> dict[str, object]:
    """The method's defaults overlaid with the spec's values.

    As in the Training service, giving `num_train_epochs` without `max_steps` drops the default
    step count so that the epochs decide; `None` means "use the default".
    """
    given = {key: value for key, value in spec.hyperparameters.items() if value is not None}
    values = dict(DEFAULT_HYPERPARAMETERS[spec.method])
    if "num_train_epochs" in given and "max_steps" not in given:
        values.pop("max_steps")
    values.update(given)
    return values
