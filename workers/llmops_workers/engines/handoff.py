"""What crosses between a job's process and the processes of its multi-GPU run, all through
files of one run directory: the spec (JSON) in, events out (JSON lines, appended by rank 0
only, and any rank's error), and the stop request in (a file the job's process replaces).

Files rather than a socket or a multiprocessing queue: the processes are started by `accelerate
launch`, not forked from the worker, and a file survives the order in which they start and
end. Pure Python: the job's process reads these without importing torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_workers.engines.spec import StopRequest, TrainingResult, TrainingSpec, spec_to_dict

__all__ = ["RunFiles", "decode_result", "encode_result", "read_stop", "write_stop"]


@dataclass(frozen=True)
class RunFiles:
    """The files of one launched run, all under `root`."""

    root: Path

    @property
    def spec(self) -> Path:
        return self.root / "spec.json"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def stop(self) -> Path:
        return self.root / "stop"

    @property
    def staging(self) -> Path:
        """Where the Trainer of every rank writes checkpoints: one directory for all ranks (each
        writes its own RNG state there), published by rank 0 once all are done."""
        return self.root / "staging"

    @property
    def log(self) -> Path:
        """The launcher's and the processes' output, quoted when they fail."""
        return self.root / "launch.log"

    def prepare(self, spec: TrainingSpec) -> None:
        """Writes the spec and makes the empty events file and staging directory."""
        self.staging.mkdir(parents=True, exist_ok=True)
        self.spec.write_text(json.dumps(spec_to_dict(spec)), encoding="utf-8")
        self.events.touch()

    def append(self, event: dict[str, Any]) -> None:
        """Adds one event as one line, written in one call and flushed to the file at once."""
        line = (json.dumps(event) + "\n").encode()
        descriptor = os.open(self.events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, line)
        finally:
            os.close(descriptor)


def write_stop(path: Path, request: StopRequest) -> None:
    """Replaces the stop file at once (rename), so that a reader never sees half of it."""
    temporary = path.with_suffix(".next")
    temporary.write_text(request, encoding="utf-8")
    os.replace(temporary, path)


def read_stop(path: Path) -> StopRequest:
    """The stop request the job's process last wrote ("" when none)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""
    if text == "cancel":
        return "cancel"
    return "pause" if text == "pause" else ""


def encode_result(result: TrainingResult) -> dict[str, Any]:
    """A result as JSON-ready values."""
    return {
        "status": result.status,
        "adapter_dir": _text(result.adapter_dir),
        "model_dir": _text(result.model_dir),
        "steps": result.steps,
        "metrics": result.metrics,
        "last_checkpoint": _text(result.last_checkpoint),
    }


def decode_result(values: dict[str, Any]) -> TrainingResult:
    """The result that `encode_result` wrote."""
    return TrainingResult(
        status=values["status"],
        adapter_dir=_path(values["adapter_dir"]),
        model_dir=_path(values["model_dir"]),
        steps=int(values["steps"]),
        metrics={str(k): float(v) for k, v in values["metrics"].items()},
        last_checkpoint=_path(values["last_checkpoint"]),
    )


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _path(text: str | None) -> Path | None:
    return None if text is None else Path(text)
