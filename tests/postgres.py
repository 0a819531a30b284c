"""A private PostgreSQL server for tests, started from the Debian binaries in a temporary dir."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def private_postgres(base: Path) -> Iterator[str]:
    """Yields a SQLAlchemy URL of a fresh server; stops it and removes its files afterwards."""
    binaries = _binaries()
    root = base / "pg"
    data = root / "data"
    root.mkdir(parents=True)
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        os.chmod(base, 0o755)
        as_postgres = ["runuser", "-u", "postgres", "--"]
    run = [*as_postgres, str(binaries / "initdb"), "-D", str(data), "-U", "postgres"]
    subprocess.run([*run, "-A", "trust", "--no-sync"], check=True, capture_output=True)
    port = _free_port()
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [*as_postgres, str(binaries / "pg_ctl"), "-D", str(data), "-l", str(root / "log")]
    subprocess.run([*pg_ctl, "-o", options, "-w", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], check=False, capture_output=True)
