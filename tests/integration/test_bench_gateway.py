"""`bench/gateway.py --quick` runs end to end (the real server, the real gateway binary, GetModel
and Generate both ways) and prints its table, so the benchmark does not rot between full runs.
No timing is asserted: the figures of a smoke run on shared cores mean nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_gateway_benchmark_quick_run_prints_its_table(binary: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    done = subprocess.run(
        [sys.executable, "bench/gateway.py", "--quick", "--gateway", str(binary)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "| operation | concurrency | direct p50 ms | gateway p50 ms | p50 x |" in out
    for row in ("| GetModel | 1 |", "| GetModel | 4 |", "| Generate | 1 |", "| Generate | 4 |"):
        assert row in out
    assert "- request failures: none" in out
