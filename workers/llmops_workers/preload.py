"""What the worker's fork server imports once, before it forks each job's process.

A job runs in a process of its own (a crash or OOM cannot take the worker down), and a fresh
Python process spends most of a short job importing torch, transformers, PEFT and TRL: ~14 s on a
2-core VM with bytecode compiled, ~31 s without. The worker's processes are therefore forked
from a fork server (`multiprocessing`'s `forkserver` start method) that has imported them
already, and each job's process starts in milliseconds.

Where CUDA is available only torch is imported here: bitsandbytes (which PEFT imports) queries
the devices on import, and a process that has initialized CUDA cannot fork a child that uses it.
`PYTORCH_NVML_BASED_CUDA_CHECK` makes torch's own availability check ask NVML, which does not
initialize CUDA either.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys

os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

import torch  # after the variable above: torch reads it

PRELOADED_ML_STACK = not torch.cuda.is_available()
"""True where the training and eval engines (and with them the whole ML stack) are imported."""

if PRELOADED_ML_STACK:
    # A library that fails to import must not take the fork server down with it (every job
    # would then fail to start): the job's process imports it again and reports the error.
    with contextlib.suppress(Exception):
        import llmops_workers.engines.distill
        import llmops_workers.engines.dpo
        import llmops_workers.engines.sft
        import llmops_workers.evaluation.engine  # noqa: F401


def _exit_now() -> None:
    os._exit(0)


if any("multiprocessing.forkserver" in arg for arg in sys.orig_argv):
    # The fork server exits when its worker does; tearing down the interpreter with the ML
    # stack loaded only prints triton's nanobind leak warnings into the worker's log.
    atexit.register(_exit_now)
