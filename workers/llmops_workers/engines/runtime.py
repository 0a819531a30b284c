"""The process set-up of an engine run (training or evaluation): thread count, no progress bars,
no telemetry, and the third-party warnings that nothing of ours can avoid.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import datasets  # type: ignore[import-untyped]
import huggingface_hub.constants
import torch
import transformers

__all__ = ["engine_runtime"]

# Deprecation notices that transformers raises from inside PEFT and TRL (they read the renamed
# `is_gradient_checkpointing` property); nothing in our code can avoid them, and pytest runs
# with warnings as errors. Ignored by exact message, only while an engine runs.
_THIRD_PARTY_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning),
)


@contextlib.contextmanager
def engine_runtime(threads: int) -> Iterator[None]:
    """Sets up the process for a run: thread count, no progress bars, no telemetry.

    The thread count is set explicitly because two torch processes sharing the cores with the
    default (one thread per core) slow each other down by an order of magnitude. Telemetry is
    off because a training run must not call out to the hub.
    """
    torch.set_num_threads(max(1, threads))
    huggingface_hub.constants.HF_HUB_DISABLE_TELEMETRY = True
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    with warnings.catch_warnings():
        for message, category in _THIRD_PARTY_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield
