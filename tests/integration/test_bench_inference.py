"""`bench/inference.py --quick` runs end to end (two real servers, the in-process ceiling, the
health probe) and prints its table, so the benchmark does not rot between full runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_inference_benchmark_quick_run_prints_its_table() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    done = subprocess.run(
        [sys.executable, "bench/inference.py", "--quick"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "| variant | concurrency | tok/s | TTFT p50 ms | TTFT p99 ms |" in out
    assert "| gRPC, batching on, 4 adapters round-robin | 4 |" in out
    assert "| gRPC, engine process, 4 adapters round-robin | 4 |" in out
    assert "| batching-on server (thread) at concurrency 4 |" in out
    assert "| engine-process server at concurrency 4 |" in out
    assert "- greedy answers identical: pass" in out
