"""The sync SDK is generated from the async one: stale generated files fail here, before they
can land (`make unasync` rewrites them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from scripts.unasync import FILES, ROOT, header


def test_the_sync_client_is_generated_from_the_async_one(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "unasync.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True)
    for source, target in FILES.items():
        committed = (ROOT / target).read_bytes()
        assert committed.startswith(header(source).encode())
        assert (tmp_path / target).read_bytes() == committed, (
            f"{target} is stale: edit {source.name} and run `make unasync`"
        )
