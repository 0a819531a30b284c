"""The services as a process of their own (`llmops serve` on a fixed port, so that a restart
keeps the address clients know), for the fault tests that kill and restart them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import llmops
from llmops_services.jobs.private_redis import free_port
from tests.integration.workers import ROOT, until


class ServicesProcess:
    """`llmops serve` on a fixed port with a short lease and a quick reconciler."""

    def __init__(self, data_dir: Path, redis_url: str, database_url: str = "") -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.redis_url = redis_url
        self.env = {
            **os.environ,
            "LLMOPS_REDIS_URL": redis_url,
            "LLMOPS_JOB_LEASE_SECONDS": "8",
            "LLMOPS_RECONCILE_SECONDS": "0.5",
            "LLMOPS_INFERENCE_DEVICE": "cpu",
            "LLMOPS_INFERENCE_THREADS": "1",
            "LLMOPS_PROTECTED_ALIASES": "[]",
        }
        if database_url:
            self.env["LLMOPS_DATABASE_URL"] = database_url
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServicesProcess:
        return self.launch().wait_ready()

    def launch(self) -> ServicesProcess:
        """Starts the process without waiting for it (to start several at once)."""
        command = [sys.executable, "-m", "llmops", "serve", "--grpc-port", str(self.port)]
        command += ["--metrics-port", "-1", "--data-dir", str(self.data_dir)]
        self.process = subprocess.Popen(command, env=self.env, cwd=ROOT)
        return self

    def wait_ready(self) -> ServicesProcess:
        """Waits until the services answer; fails at once if the process has exited."""
        with llmops.Client(self.address, timeout=5) as client:

            def answers() -> bool:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(f"llmops serve exited with {self.process.returncode}")
                return _answers(client)

            until(answers, 60, "the services to answer")
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _answers(client: llmops.Client) -> bool:
    try:
        client.datasets.list_page(page_size=1)
    except llmops.Unavailable:
        return False
    return True
