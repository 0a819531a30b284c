"""What the job tests share: a pool of real `llmops worker` processes for a test stack, fast
training settings for the tiny model, and polling for an observable state with a deadline."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from llmops.v1 import jobs_pb2
from tests.conftest import ServerThread

ROOT = Path(__file__).resolve().parents[2]
FAST = {
    "per_device_train_batch_size": 4,
    "max_length": 64,
    "logging_steps": 1,
    "lora_r": 4,
    "lora_alpha": 8,
    "warmup_ratio": 0.0,
}

TERMINAL = (jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELLED)


class Workers:
    """Worker processes of one stack, as `llmops worker` starts them."""

    def __init__(
        self,
        server: ServerThread | None = None,
        *,
        redis_url: str = "",
        data_dir: Path | None = None,
        database_url: str = "",
    ) -> None:
        """Workers of `server`'s stack, or of the stack on `redis_url`, `data_dir` and
        `database_url` (empty: SQLite in the data dir) of services processes of a test's own."""
        store: dict[str, str] = {}
        if server is not None:
            redis_url, data_dir = server.settings.redis_url, server.settings.data_dir
            database_url = server.settings.database_url
            if server.settings.artifacts_url:  # the services' store, if not the data dir's
                store["LLMOPS_ARTIFACTS_URL"] = server.settings.artifacts_url
                store["LLMOPS_S3_ENDPOINT_URL"] = server.settings.s3_endpoint_url
        assert redis_url and data_dir is not None
        self.env = {**os.environ, "LLMOPS_REDIS_URL": redis_url, "LLMOPS_JOB_LEASE_SECONDS": "8"}
        self.env.update(store)
        if database_url:  # the services' PostgreSQL
            self.env["LLMOPS_DATABASE_URL"] = database_url
        self.redis_url = redis_url
        self.data_dir = data_dir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, **env: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "llmops", "worker", "--data-dir", str(self.data_dir)]
        process = subprocess.Popen(
            command, env={**self.env, **env}, cwd=ROOT, stdout=subprocess.DEVNULL
        )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Polls `condition` (a real observable state, not a guess at timing) until it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
