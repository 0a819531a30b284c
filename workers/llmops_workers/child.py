"""The training child process: runs one engine, reports over a queue, dies with its parent.

Training runs here rather than in the worker's event loop: a blocking loop would stall arq's
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

STOP_NONE, STOP_CANCEL, STOP_PAUSE = 0, 1, 2
_HINT = "install it on the workers (4-bit QLoRA needs: pip install 'bitsandbytes>=0.48')"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
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
        self._queue.put(("start", total_steps))

    def on_log(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        self._queue.put(("log", step, total_steps, dict(metrics)))

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        self._queue.put(("checkpoint", step, str(path), dict(metrics)))

    def should_stop(self) -> Literal["", "cancel", "pause"]:
        value = self._control.value
        return "cancel" if value == STOP_CANCEL else "pause" if value == STOP_PAUSE else ""


def child_main(spec: TrainingSpec, queue: Queue[Any], control: Synchronized[int]) -> None:
    """Entry point of the child: runs the engine and sends its result or its error."""
    _die_with_parent()
    logging.basicConfig(level=logging.WARNING)
    try:
        import torch

        torch.set_num_threads(spec.threads)
        from llmops_workers.engines import run_training

        result: TrainingResult = run_training(spec, QueueEvents(queue, control))
        queue.put(("result", result))
    except (ValueError, KeyError, FileNotFoundError) as error:
        queue.put(("error", "input", f"{type(error).__name__}: {error}"))
    except ImportError as error:  # a library this method needs cannot load on this worker
        module = error.name or "a library"
        queue.put(("error", "precondition", f"this worker cannot load {module} ({error}); {_HINT}"))
    except Exception as error:
        queue.put(
            ("error", "internal", f"{type(error).__name__}: {error}\n{traceback.format_exc()}")
        )
