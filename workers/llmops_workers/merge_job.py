"""What a merge job's process runs: the adapter merged into its base and written as a standalone
safetensors model (`llmops_ml.merge`). The spec and result are pure Python, so the worker can
build and pass them to the child without loading the ML stack; torch loads in the child only."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

__all__ = ["MergeEvents", "MergeResult", "MergeSpec", "run_merge"]

MergeStatus = Literal["completed", "cancelled"]


@dataclass(frozen=True)
class MergeSpec:
    """One merge, resolved to local paths: `adapter_dir` over `base_dir`, written to
    `output_dir` (replaced whole if an earlier attempt left one)."""

    base_dir: Path
    adapter_dir: Path
    output_dir: Path
    threads: int = 1
    trust_remote_code: bool = False
    """Whether the base model's own code may run (`Model.trust_remote_code`, set by an admin)."""


@dataclass(frozen=True)
class MergeResult:
    """How a merge ended; `model_dir` is the merged model when it completed."""

    status: MergeStatus
    model_dir: Path | None = None
    seconds: float = 0.0


class MergeEvents(Protocol):
    """What a merge reports, and how it is asked to stop (before it starts: a merge is one
    call that leaves nothing behind when it fails, so it is not interrupted half way)."""

    def on_start(self, total: int) -> None:
        """The merge is about to start; `total` steps (one) will be done."""

    def on_progress(self, done: int, total: int, metrics: dict[str, float]) -> None:
        """The merge is done and written."""

    def should_stop(self) -> bool:
        """True cancels a merge that has not started."""
        ...


def run_merge(spec: MergeSpec, events: MergeEvents) -> MergeResult:
    """Merges and saves; a cancel asked for before the start ends it with nothing written."""
    if events.should_stop():
        return MergeResult("cancelled")
    from llmops_ml.merge import merge_adapter

    events.on_start(1)
    began = time.monotonic()
    merged = merge_adapter(
        spec.base_dir, spec.adapter_dir, spec.output_dir, trust_remote_code=spec.trust_remote_code
    )
    seconds = time.monotonic() - began
    events.on_progress(1, 1, {"merge_seconds": seconds})
    return MergeResult("completed", merged, seconds)
