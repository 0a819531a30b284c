"""What every benchmark script shares: failing with a message instead of a traceback, progress
on stderr, percentiles, and stopping the processes it started.

The scripts run as `python bench/NAME.py`, so this directory is first on `sys.path` and they
import this module as `_common`.
"""

from __future__ import annotations

import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["BenchError", "fail", "log", "percentile", "read_line", "stop"]


class BenchError(Exception):
    """A failure that ends the benchmark with a message instead of a traceback."""


def fail(message: str) -> NoReturn:
    raise BenchError(message)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def read_line(process: subprocess.Popen[str], prefix: str, timeout: float) -> str:
    """The first stdout line of `process` that contains `prefix`, waiting at most `timeout`."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                break
            line = process.stdout.readline()
            if not line:
                fail(f"it exited ({process.wait()}) before printing a {prefix.strip()!r} line")
            if prefix in line:
                return line
    fail(f"it printed no {prefix.strip()!r} line within {timeout:.0f} s")


def stop(process: subprocess.Popen[str], *, close_stdout: bool = True) -> None:
    """SIGTERM, then SIGKILL after 15 s; closes its stdout pipe unless a reader thread owns it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if close_stdout and process.stdout is not None:
        process.stdout.close()
