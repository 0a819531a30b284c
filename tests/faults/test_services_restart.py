"""The services process killed (SIGKILL) and started again while a training job runs, a watcher
watches it and an answer streams: the worker carries on with the same attempt, the SDK's watcher
reconnects with backoff and misses no event, and the interrupted stream ends with UNAVAILABLE
rather than as if the answer were complete."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import llmops
from llmops.v1 import jobs_pb2
from llmops_services.jobs.private_redis import PrivateRedis
from tests.integration.workers import FAST, ROOT, TERMINAL, Workers, until

pytestmark = pytest.mark.faults


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServicesProcess:
    """`llmops serve` on a fixed port, so that a restart keeps the address clients know."""

    def __init__(self, data_dir: Path, redis_url: str) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "LLMOPS_REDIS_URL": redis_url,
            "LLMOPS_JOB_LEASE_SECONDS": "8",
            "LLMOPS_RECONCILE_SECONDS": "0.5",
            "LLMOPS_INFERENCE_DEVICE": "cpu",
            "LLMOPS_INFERENCE_THREADS": "1",
            "LLMOPS_PROTECTED_ALIASES": "[]",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServicesProcess:
        command = [sys.executable, "-m", "llmops", "serve", "--grpc-port", str(self.port)]
        command += ["--metrics-port", "-1", "--data-dir", str(self.data_dir)]
        self.process = subprocess.Popen(command, env=self.env, cwd=ROOT)
        with llmops.Client(self.address, timeout=5) as client:
            until(lambda: _answers(client), 60, "the services to answer")
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


class _Stack:
    """Enough of a ServerThread for `Workers`: settings with the Redis URL and data dir."""

    def __init__(self, redis_url: str, data_dir: Path) -> None:
        self.settings = type("S", (), {"redis_url": redis_url, "data_dir": data_dir})()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.mark.timeout(600)
def test_a_restart_of_the_services_loses_no_event_and_truncates_no_answer_silently(
    tmp_path: Path, redis_server: PrivateRedis, tiny_model: Path
) -> None:
    services = ServicesProcess(tmp_path / "data", redis_server.url).start()
    workers = Workers(_Stack(redis_server.url, services.data_dir))  # type: ignore[arg-type]
    watched: list[jobs_pb2.JobEvent] = []
    watch_error: list[BaseException] = []
    try:
        workers.start(LLMOPS_REGISTRY_ADDRESS=services.address)
        with llmops.Client(services.address, timeout=30) as client:
            client.models.create("llmops-tiny", str(tiny_model))
            params = {**FAST, "max_steps": 40, "save_steps": 10}
            job = client.training.create("sft", "llmops-tiny", "demo-sft", hyperparameters=params)

            def watch() -> None:
                with llmops.Client(services.address, timeout=30) as watcher:
                    try:
                        watched.extend(watcher.training.get(job.id).watch())
                    except BaseException as error:  # reported by the test below
                        watch_error.append(error)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            until(lambda: client.training.get(job.id).progress.step >= 2, 240, "training")
            seen_before = len(watched)

            stream = client.inference.stream(
                "llmops-tiny", "Once upon a time", max_new_tokens=480, temperature=1.0, seed=7
            )
            first = next(stream)
            services.kill()
            received = [first]
            with pytest.raises(llmops.Unavailable):
                received.extend(stream)  # never a quiet end of an unfinished answer
            assert not any(r.finish_reason for r in received)

            services.start()
            until(lambda: client.training.get(job.id).state in TERMINAL, 300, "the job")
            watcher.join(60)
            assert not watcher.is_alive() and not watch_error, watch_error
            done = client.training.get(job.id)
            assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.error.message
            assert done.attempt == 1  # the worker carried on through the restart
            events = list(client.training.events(job.id))
            assert [e.sequence for e in watched] == [e.sequence for e in events]
            assert [e.sequence for e in events] == list(range(1, len(events) + 1))
            assert len(watched) > seen_before
    finally:
        workers.stop()
        services.stop()
