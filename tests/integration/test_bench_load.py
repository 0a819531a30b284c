"""`bench/load.py --quick` runs end to end (`llmops up` with a worker, jobs created twice per
key with pollers and watchers, then streams with cancels on the platform server) and prints its
tables, so the benchmark does not rot between full runs. Its own checks (no job lost or doubled,
no stream failed, no slot leaked) decide its exit status; no timing is asserted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_load_benchmark_quick_run_holds_its_checks() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    done = subprocess.run(
        [sys.executable, "bench/load.py", "--quick"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "| keys with one job | jobs listed | succeeded |" in done.stdout
    assert "| 8 / 8 | 8 | 8 | 8 | 8 / 8 |" in done.stdout
    assert "| answers | cancelled | failed |" in done.stdout
    assert "- checks: all held" in done.stdout
