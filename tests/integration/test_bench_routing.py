"""`bench/routing.py --quick` runs end to end (two real Inference replicas, the real gateway binary
routing by affinity and round-robin, six adapters over a budget of three per replica) and prints
its table, so the benchmark does not rot between full runs. Only correctness is asserted (no
failed request, one greedy answer per adapter in both modes): the figures of a smoke run on
shared cores mean nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_routing_benchmark_quick_run_prints_its_table(binary: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    done = subprocess.run(
        [sys.executable, "bench/routing.py", "--quick", "--gateway", str(binary)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "| metric | affinity | round-robin | affinity / round-robin |" in out
    for row in ("| adapter cache hit rate |", "| p50 latency ms |", "| throughput req/s |"):
        assert row in out
    assert "- request failures: none" in out
    assert "- greedy answers: one per adapter, in both modes (6 adapters answered)" in out
