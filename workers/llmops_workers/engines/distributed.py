"""One process of a multi-GPU training run, started by `accelerate launch` (or torchrun on the
CPU) as `python -m llmops_workers.engines.distributed RUN_DIR` (`engines.launch`).

Every rank runs the same engine (`sft`, `dpo`, `distill`) as a single-process run; what differs
is who speaks. Rank 0 alone reports (metrics, checkpoints, the result) by appending to the run's
events file, publishes checkpoints, and saves the final adapter. Stop requests reach every rank
at the same step: after each optimizer step rank 0 reads the stop file and broadcasts what it
read, so that the ranks stop (or checkpoint) together and never wait for one another forever.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops_workers.engines.handoff import RunFiles, encode_result, read_stop
from llmops_workers.engines.spec import StopRequest, TrainingResult, TrainingSpec, spec_from_dict

if TYPE_CHECKING:
    from transformers import Trainer, TrainerControl, TrainerState, TrainingArguments

__all__ = ["main"]

log = logging.getLogger("llmops.engine")

_STOPS: tuple[StopRequest, ...] = ("", "cancel", "pause")


@dataclass
class RankEvents:
    """EngineEvents for one rank: rank 0 appends to the events file, the others stay silent;
    every rank asks `should_stop` at every step and gets rank 0's answer."""

    files: RunFiles
    rank: int
    on_cpu: bool

    def on_start(self, total_steps: int) -> None:
        if self.rank == 0:
            self.files.append({"type": "started", "total_steps": total_steps})

    def on_log(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        if self.rank == 0:
            self.files.append(
                {"type": "metrics", "step": step, "total_steps": total_steps, "metrics": metrics}
            )

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        if self.rank == 0:
            self.files.append(
                {"type": "checkpoint", "step": step, "path": str(path), "metrics": metrics}
            )

    def should_stop(self) -> StopRequest:
        import torch
        import torch.distributed as dist

        code = _STOPS.index(read_stop(self.files.stop)) if self.rank == 0 else 0
        # NCCL broadcasts tensors on this rank's GPU only
        device = torch.device("cpu") if self.on_cpu else torch.device("cuda")
        message = torch.tensor([code], dtype=torch.int64, device=device)
        dist.broadcast(message, src=0)
        return _STOPS[int(message.item())]


def _bridge_class() -> type[Any]:
    """`EventsBridge` whose checkpoints are published by rank 0 once every rank has written its
    part (the model and optimizer come from rank 0, each rank's RNG state from that rank)."""
    import torch.distributed as dist

    from llmops_workers.engines.events import EventsBridge

    @dataclass
    class RankBridge(EventsBridge):
        rank: int = 0

        def on_save(
            self,
            args: TrainingArguments,
            state: TrainerState,
            control: TrainerControl,
            **kwargs: Any,
        ) -> None:
            dist.barrier()
            if self.rank == 0:
                super().on_save(args, state, control, **kwargs)

    return RankBridge


def _saver(rank: int, strategy: str) -> Callable[..., Path]:
    """Writes the final adapter (or model) once: rank 0 alone with DDP (every rank holds the whole
    model); with FSDP every rank takes part in gathering the full weights and rank 0 writes."""
    import torch.distributed as dist

    from llmops_workers.engines.run import save_result

    def save(trainer: Trainer, output_dir: Path, *, full_model: bool) -> Path:
        target = output_dir / ("model" if full_model else "adapter")
        if strategy == "fsdp":
            gathering = output_dir / f".{target.name}-gathered"
            trainer.save_model(str(gathering))
            dist.barrier()
            if rank == 0:
                if target.exists():
                    shutil.rmtree(target)
                os.replace(gathering, target)
        elif rank == 0:
            save_result(trainer, output_dir, full_model=full_model)
        dist.barrier()
        return target

    return save


def train(spec: TrainingSpec, files: RunFiles, rank: int) -> TrainingResult:
    """This rank's part of the run: the engine's Trainer on this rank's share of each batch."""
    from peft import PeftModel

    from llmops_workers.engines import check_spec, run
    from llmops_workers.engines.runtime import engine_runtime

    problems = check_spec(spec)
    if problems:
        raise ValueError("invalid training spec: " + "; ".join(problems))
    run.check_resume_source(spec)
    with engine_runtime(spec.threads):
        build: Callable[[TrainingSpec, Path], Trainer]
        if spec.method in ("sft", "qlora"):
            from llmops_workers.engines.sft import build_trainer as build
        elif spec.method == "dpo":
            from llmops_workers.engines.dpo import build_trainer as build
        else:
            from llmops_workers.engines.distill import build_trainer as build
        bridge = _bridge_class()(
            RankEvents(files, rank, spec.processes_on_cpu), spec.output_dir, rank=rank
        )
        with bridge.clock.timed("setup"):
            trainer = build(spec, files.staging)
        run.attach(trainer, bridge)
        full_model = not isinstance(trainer.model, PeftModel)
        # processes on the CPU always run DDP (`engines.launch`), whatever the job asked for
        saver = _saver(rank, "ddp" if spec.processes_on_cpu else spec.strategy)
        return run.run(trainer, spec, bridge, full_model=full_model, save=saver)


def main(argv: list[str]) -> int:
    """Runs this rank; rank 0 appends the result, any rank that fails appends its error."""
    from llmops_workers.child import classify, die_with_parent

    die_with_parent()
    logging.basicConfig(level=logging.WARNING)
    files = RunFiles(Path(argv[0]))
    rank = int(os.environ.get("RANK", "0"))
    if not files.spec.is_file():
        log.error("no spec at %s", files.spec)
        return 2
    spec = spec_from_dict(json.loads(files.spec.read_text(encoding="utf-8")))
    try:
        if not spec.processes_on_cpu:
            import torch

            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        result = train(spec, files, rank)
    except Exception as error:
        cause, text = classify(error)
        files.append({"type": "error", "cause": cause, "text": f"rank {rank}: {text}"})
        return 1
    finally:
        _leave_group()
    if rank == 0:
        files.append({"type": "result", "result": encode_result(result)})
    return 0


def _leave_group() -> None:
    """Destroys the process group, as torch asks of every process before it exits."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
