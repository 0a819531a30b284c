"""Where checkpoints live and when one counts as complete. No torch: the worker uses this to find
the checkpoint to resume from.

Hugging Face's Trainer writes a checkpoint file by file, and a half-written one breaks resume
(huggingface/transformers#35782). So the engine lets the Trainer write into a private staging
directory, marks it complete, and only then renames it into place: a `step-N` directory either
holds a whole checkpoint with its marker, or does not exist.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "COMPLETE_MARKER",
    "CheckpointWriteError",
    "checkpoint_dir",
    "checkpoints_root",
    "is_complete",
    "latest_complete",
    "publish",
    "require_complete",
    "writing",
]

COMPLETE_MARKER = "COMPLETE"
_PREFIX = "step-"
log = logging.getLogger("llmops.engine")


class CheckpointWriteError(RuntimeError):
    """Writing a checkpoint failed (a full disk, a file size limit, a store gone away).

    The libraries that write a checkpoint's files each word this their own way (an OSError,
    torch's `PytorchStreamWriter failed writing file`, a safetensors `IoError`), so the job's
    event would not say what was being done; this names the step and keeps their text. The
    worker retries it like any other internal error, from the last complete checkpoint.
    """


@contextlib.contextmanager
def writing(step: int) -> Iterator[None]:
    """Turns any failure while the checkpoint of `step` is written into `CheckpointWriteError`."""
    try:
        yield
    except Exception as error:
        cause = f"{type(error).__name__}: {error}".splitlines()[0]
        message = f"writing the checkpoint of step {step} failed ({cause})"
        raise CheckpointWriteError(message) from error


def checkpoints_root(output_dir: Path) -> Path:
    """The directory that holds a run's `step-N` checkpoints."""
    return output_dir / "checkpoints"


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    """Where the checkpoint of `step` lives once it is complete."""
    return checkpoints_root(output_dir) / f"{_PREFIX}{step}"


def is_complete(path: Path) -> bool:
    """Whether `path` is a checkpoint this platform finished writing."""
    return (path / COMPLETE_MARKER).is_file()


def require_complete(path: Path) -> None:
    """Refuses a resume source that this platform did not finish writing.

    A checkpoint holds pickles (optimizer, RNG state) that resuming loads with `torch.load`, so
    only directories carrying our own completeness marker are accepted.
    """
    if not path.is_dir():
        raise ValueError(f"cannot resume from {path}: not a directory")
    if not is_complete(path):
        raise ValueError(
            f"cannot resume from {path}: it has no {COMPLETE_MARKER} marker, so it is either "
            "incomplete or was not written by this platform"
        )


def _step_of(path: Path) -> int | None:
    suffix = path.name.removeprefix(_PREFIX)
    return int(suffix) if path.name.startswith(_PREFIX) and suffix.isdigit() else None


def latest_complete(output_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step under `output_dir`, if any."""
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return None
    steps = [
        (step, path)
        for path in root.iterdir()
        if (step := _step_of(path)) is not None and is_complete(path)
    ]
    return max(steps)[1] if steps else None


def _fsync_tree(path: Path) -> None:
    """Flushes every file under `path`, so that the marker never outlives the data on a crash."""
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        with file.open("rb") as handle:
            os.fsync(handle.fileno())


def publish(staged: Path, output_dir: Path, step: int, metrics: dict[str, float]) -> Path:
    """Marks a fully written staging directory complete and renames it to `step-N`."""
    _fsync_tree(staged)
    marker = {"step": step, "time": time.time(), "metrics": metrics}
    with (staged / COMPLETE_MARKER).open("w", encoding="utf-8") as handle:
        json.dump(marker, handle)
        handle.flush()
        os.fsync(handle.fileno())
    target = checkpoint_dir(output_dir, step)
    if target.exists():
        log.warning("replacing the existing checkpoint %s", target)
        shutil.rmtree(target)
    os.replace(staged, target)
    return target
