"""How many GPUs a training job asks for, checked twice: the request's values here, and whether a
live worker has that many CUDA devices (its advertisement's `cuda_devices`) before it is queued.

0 or 1 GPU is the single training process every job ran in before; more runs one process per
GPU under `accelerate launch` on one worker (docs/training.md#multi-gpu-jobs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmops.v1 import training_service_pb2 as pb
from llmops_services.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PreconditionViolation,
)

MAX_GPUS = 64
"""The most GPUs one job may ask for: a job runs on one worker, and no single machine has more."""

STRATEGIES = {
    pb.DISTRIBUTED_STRATEGY_UNSPECIFIED: "",
    pb.DISTRIBUTED_STRATEGY_DDP: "ddp",
    pb.DISTRIBUTED_STRATEGY_FSDP: "fsdp",
}
STRATEGY_VALUES = {name: value for value, name in STRATEGIES.items()}


def check_request(request: pb.CreateTrainingJobRequest, method: str) -> tuple[int, str]:
    """The job's GPU count and strategy ("", "ddp" or "fsdp"); INVALID_ARGUMENT naming each bad
    field otherwise."""
    count, strategy = request.gpu_count, STRATEGIES.get(request.distributed_strategy)
    bad: list[FieldViolation] = []
    if not 0 <= count <= MAX_GPUS:
        bad.append(FieldViolation("gpu_count", f"must be between 0 and {MAX_GPUS}, not {count}"))
    if strategy is None:
        bad.append(FieldViolation("distributed_strategy", "must be DDP or FSDP"))
    elif strategy and count <= 1:
        bad.append(
            FieldViolation("distributed_strategy", "only a job on more than one GPU takes one")
        )
    elif strategy == "fsdp" and method == "qlora":
        bad.append(
            FieldViolation(
                "distributed_strategy", "QLORA shards no 4-bit weights with FSDP; use DDP"
            )
        )
    if bad:
        raise InvalidArgument("the job's GPUs are out of range", violations=bad)
    return count, strategy or ""


def _processes(worker: dict[str, Any]) -> int:
    """How many processes a worker can run a job on: its CUDA devices, or any number for a
    worker that runs them on the CPU (`LLMOPS_WORKER_DISTRIBUTED_ON_CPU`, machines without GPUs)."""
    return MAX_GPUS if worker.get("distributed_on_cpu") else int(worker.get("cuda_devices") or 0)


def check_workers(workers: Sequence[dict[str, Any]], count: int) -> None:
    """Refuses a job on `count` GPUs (more than one) when workers run and none has that many.

    With no live worker (or one still probing) the job is queued: the worker that takes it fails
    it with the same message if it has too few GPUs.
    """
    if count <= 1 or not workers or any(w.get("probing") for w in workers):
        return
    most = max(_processes(w) for w in workers)
    if most >= count:
        return
    raise FailedPrecondition(
        f"no live worker has {count} GPUs (the most any of the {len(workers)} live worker(s) "
        f"has is {most}); ask for at most {most} or 0 for a single process, or start a worker "
        f"with {count} GPUs",
        violations=[
            PreconditionViolation(
                "CAPABILITY", "gpu_count", f"needs a worker with {count} CUDA devices; most: {most}"
            )
        ],
    )
