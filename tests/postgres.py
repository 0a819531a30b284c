"""A private PostgreSQL server for tests, started from the Debian binaries in a temporary dir."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llmops_services.jobs.private_redis import free_port


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql")
    return Path(found[-1]).parent


class PrivatePostgres:
    """A PostgreSQL server of the test's own, in `base`, that can be stopped and started again
    on the same port (its data kept)."""

    def __init__(self, base: Path) -> None:
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
        self.port = free_port()
        self._options = f"-p {self.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl = [*as_postgres, str(binaries / "pg_ctl"), "-D", str(data)]
        self._pg_ctl += ["-l", str(root / "log")]
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> PrivatePostgres:
        subprocess.run(
            [*self._pg_ctl, "-o", self._options, "-w", "start"], check=True, capture_output=True
        )
        return self

    def stop(self, mode: str = "immediate") -> None:
        subprocess.run([*self._pg_ctl, "-m", mode, "stop"], check=False, capture_output=True)


@contextmanager
def private_postgres(base: Path) -> Iterator[str]:
    """Yields a SQLAlchemy URL of a fresh server; stops it and removes its files afterwards."""
    server = PrivatePostgres(base).start()
    try:
        yield server.url
    finally:
        server.stop()
