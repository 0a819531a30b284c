"""Redis lost under running and queued jobs: flushed, or stopped and started again (empty, as
the platform's Redis keeps nothing on disk). The database is the truth: the reconciler queues the
lost attempts again, the running job goes on, the worker reconnects, and every job ends
SUCCEEDED with exactly one model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import llmops
from llmops.v1 import jobs_pb2
from llmops_services.jobs.private_redis import PrivateRedis
from tests.conftest import ServerThread, make_settings
from tests.integration.workers import FAST, TERMINAL, Workers, until

pytestmark = pytest.mark.faults


@pytest.fixture
def stack(data_dir: Path, redis_server: PrivateRedis) -> Iterator[ServerThread]:
    settings = make_settings(
        data_dir, redis_url=redis_server.url, job_lease_seconds=8, reconcile_seconds=0.5
    )
    running = ServerThread(settings).start()
    yield running
    running.stop()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("loss", ["flush", "restart"])
def test_no_job_is_lost_or_run_twice_when_redis_loses_everything(
    stack: ServerThread, redis_server: PrivateRedis, tiny_model: Path, loss: str
) -> None:
    workers = Workers(stack)
    try:
        workers.start()
        with llmops.Client(stack.address, timeout=30) as client:
            client.models.create("tiny", str(tiny_model))
            params = {**FAST, "max_steps": 16, "save_steps": 4}
            jobs = [
                client.training.create("sft", "tiny", "demo-sft", hyperparameters=params)
                for _ in range(3)
            ]
            until(lambda: client.training.get(jobs[0].id).progress.step >= 2, 240, "training")
            assert client.training.get(jobs[2].id).state == jobs_pb2.JOB_STATE_QUEUED
            if loss == "flush":
                redis.Redis.from_url(redis_server.url).flushall()
            else:
                port = redis_server.port
                redis_server.stop()
                redis_server.start(port=port)

            def ended() -> bool:
                return all(client.training.get(j.id).state in TERMINAL for j in jobs)

            until(ended, 480, "every job to end")
            for job in jobs:
                done = client.training.get(job.id)
                assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, (job.id, done.error.message)
            adapters = list(client.models.list(kind="adapter"))
            made = sorted(m.origin.training_job for m in adapters)
            assert made == sorted(j.id for j in jobs)  # one model per job, none twice
        assert [p.poll() for p in workers.processes] == [None]  # the worker reconnected
    finally:
        workers.stop()
