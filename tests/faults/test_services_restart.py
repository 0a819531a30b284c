"""The services process killed (SIGKILL) and started again while a training job runs, a watcher
watches it and an answer streams: the worker carries on with the same attempt, the SDK's watcher
reconnects with backoff and misses no event, and the interrupted stream ends with UNAVAILABLE
rather than as if the answer were complete."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import llmops
from llmops.v1 import jobs_pb2
from tests.faults.processes import ServicesProcess
from tests.integration.workers import FAST, TERMINAL, Workers, until

pytestmark = pytest.mark.faults


@pytest.mark.timeout(600)
def test_a_restart_of_the_services_loses_no_event_and_truncates_no_answer_silently(
    services: ServicesProcess, tiny_model: Path
) -> None:
    workers = Workers(redis_url=services.redis_url, data_dir=services.data_dir)
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
