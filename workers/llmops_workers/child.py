"""The child process of a job: runs one engine (training, eval or merge), reports over a queue,
and dies with its parent.

Engines run here rather than in the worker's event loop: a blocking loop would stall arq's
polling and heartbeats, and a crash or OOM here cannot take the worker down with it.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import traceback
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any, Literal

from llmops_workers.engines.spec import TrainingResult, TrainingSpec
from llmops_workers.evaluation.spec import EvalResult, EvalSpec
from llmops_workers.merge_job import MergeResult, MergeSpec
from llmops_workers.messages import Checkpoint, Error, ErrorCause, Metrics, Result, Started

STOP_NONE, STOP_CANCEL, STOP_PAUSE, STOP_HANDBACK = 0, 1, 2, 3
"""What the worker asks of the child: nothing, cancel, pause (checkpoint and stop), or hand
back (the worker is stopping: training checkpoints and stops as for a pause, eval and merge
stop at once and start over elsewhere)."""
_HINT = "install it on the workers (4-bit QLoRA needs: pip install 'bitsandbytes>=0.48')"
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Asks Linux to SIGKILL this process when the worker dies, even by SIGKILL."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the worker's own shutdown still stops the child
        pass


class QueueEvents:
    """EngineEvents that forward to the parent and read its stop flag."""

    def __init__(self, queue: Queue[Any], control: Synchronized[int]) -> None:
        self._queue = queue
        self._control = control

    def on_start(self, total_steps: int) -> None:
        self._queue.put(Started(total_steps))

    def on_log(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        self._queue.put(Metrics(step, total_steps, dict(metrics)))

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        self._queue.put(Checkpoint(step, str(path), dict(metrics)))

    def should_stop(self) -> Literal["", "cancel", "pause"]:
        value = self._control.value
        if value == STOP_CANCEL:
            return "cancel"
        return "pause" if value in (STOP_PAUSE, STOP_HANDBACK) else ""


class QueueEvalEvents:
    """EvalEvents (and MergeEvents) that forward progress to the parent and read its stop
    flag."""

    def __init__(self, queue: Queue[Any], control: Synchronized[int]) -> None:
        self._queue = queue
        self._control = control

    def on_start(self, total: int) -> None:
        self._queue.put(Started(total))

    def on_progress(self, done: int, total: int, metrics: dict[str, float]) -> None:
        self._queue.put(Metrics(done, total, dict(metrics)))

    def should_stop(self) -> bool:
        return self._control.value in (STOP_CANCEL, STOP_HANDBACK)


def _run(
    spec: TrainingSpec | EvalSpec | MergeSpec, queue: Queue[Any], control: Synchronized[int]
) -> TrainingResult | EvalResult | MergeResult:
    import torch

    torch.set_num_threads(spec.threads)
    if isinstance(spec, MergeSpec):
        from llmops_workers.merge_job import run_merge

        return run_merge(spec, QueueEvalEvents(queue, control))
    if isinstance(spec, EvalSpec):
        from llmops_workers.evaluation import run_eval

        return run_eval(spec, QueueEvalEvents(queue, control))
    if spec.distributed:
        from llmops_workers.distributed_child import run_launched

        return run_launched(spec, QueueEvents(queue, control))
    from llmops_workers.engines import run_training

    return run_training(spec, QueueEvents(queue, control))


class LaunchedError(Exception):
    """An error the processes of a multi-GPU run reported (or their launcher's failure), with
    the cause they gave it."""

    def __init__(self, cause: ErrorCause, text: str) -> None:
        super().__init__(text)
        self.cause: ErrorCause = cause
        self.text = text


def classify(error: BaseException) -> tuple[ErrorCause, str]:
    """Why an engine failed, which decides whether its job is retried: `input` (the job's data
    or model), `precondition` (a library or device missing on this worker) or `internal`."""
    if isinstance(error, LaunchedError):
        return error.cause, error.text
    if isinstance(error, ValueError | KeyError | FileNotFoundError):
        return "input", f"{type(error).__name__}: {error}"
    if isinstance(error, ImportError):  # a library this method needs cannot load on this worker
        module = error.name or "a library"
        return "precondition", f"this worker cannot load {module} ({error}); {_HINT}"
    return "internal", f"{type(error).__name__}: {error}\n{traceback.format_exc()}"


def child_main(
    spec: TrainingSpec | EvalSpec | MergeSpec, queue: Queue[Any], control: Synchronized[int]
) -> None:
    """Entry point of the child: runs the training, eval or merge engine and sends its result or its
    error, classified (`classify`; an `internal` error is retried by the worker)."""
    die_with_parent()
    logging.basicConfig(level=logging.WARNING)
    try:
        queue.put(Result(_run(spec, queue, control)))
    except Exception as error:
        queue.put(Error(*classify(error)))
