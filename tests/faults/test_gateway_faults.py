"""The REST gateway under load while what is behind it, or the gateway itself, restarts.

The services SIGKILLed and started again: every request in the gap is answered 503 within the
gateway's deadline (none hangs), and 200s come back by themselves. The gateway SIGKILLed and
started again on its port: clients that retry what failed to connect, with idempotency keys,
lose nothing and create nothing twice."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from llmops_services.gateway import GatewayProcess
from llmops_services.jobs.private_redis import free_port
from tests.faults.processes import ServicesProcess
from tests.integration.helpers import make_base_model_dir
from tests.integration.workers import until

pytestmark = pytest.mark.faults

DEADLINE = 3.0


class Gateway(GatewayProcess):
    """The gateway on a fixed port with a short default deadline."""

    def __init__(self, binary: Path, backend: str, port: int) -> None:
        super().__init__(binary, backend, f"127.0.0.1:{port}", grace=2)
        self.command += ["-timeout", f"{DEADLINE:g}s"]

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.mark.timeout(300)
def test_the_gateway_answers_503_while_the_services_restart_and_recovers_by_itself(
    tmp_path: Path, binary: Path, services: ServicesProcess
) -> None:
    gateway = Gateway(binary, services.address, free_port())
    answers: list[tuple[float, float, int]] = []  # (sent, seconds, status)
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            while not stop.is_set():
                sent = time.monotonic()
                status = http.get("/v1/promptTemplates/summarization").status_code
                answers.append((sent, time.monotonic() - sent, status))

    try:
        gateway.start()
        clients = [threading.Thread(target=load, daemon=True) for _ in range(4)]
        for client in clients:
            client.start()
        until(lambda: len(answers) >= 20, 30, "answers before the restart")
        killed = time.monotonic()
        services.kill()
        until(lambda: any(s == 503 for t, _, s in answers if t > killed), 30, "a 503")
        services.start()
        restarted = time.monotonic()
        until(lambda: any(s == 200 for t, _, s in answers if t > restarted), 60, "a 200 again")
        recovered = min(t for t, _, s in answers if t > restarted and s == 200)
        settled = recovered + 1.0  # the gateway's connection may still be reconnecting by then
        until(lambda: sum(t > settled for t, _, _ in answers) >= 40, 30, "answers after it")
        stop.set()
        for client in clients:
            client.join(30)
        statuses = {status for _, _, status in answers}
        assert statuses == {200, 503}, statuses
        slowest = max(seconds for _, seconds, _ in answers)
        assert slowest < DEADLINE + 1.0, slowest  # nothing hangs past the deadline
        assert {s for t, _, s in answers if t > settled} == {200}  # recovered for good
    finally:
        stop.set()
        gateway.stop()


@pytest.mark.timeout(300)
def test_clients_that_retry_lose_nothing_when_the_gateway_restarts(
    tmp_path: Path, binary: Path, services: ServicesProcess
) -> None:
    port = free_port()
    gateway = Gateway(binary, services.address, port)
    keys = [f"job-{n}" for n in range(40)]
    created: dict[str, set[str]] = {key: set() for key in keys}
    retried = [0]
    failures: list[str] = []

    def create(key: str) -> None:
        body = {
            "method": "TRAINING_METHOD_SFT",
            "base_model": "base",
            "dataset": "demo-sft",
            "idempotency_key": key,
        }
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            while time.monotonic() < deadline:
                try:
                    answer = http.post("/v1/trainingJobs", json=body)
                except httpx.TransportError:  # the gateway is down: try again
                    retried[0] += 1
                    time.sleep(0.1)
                    continue
                if answer.status_code == 503:
                    retried[0] += 1
                    time.sleep(0.1)
                    continue
                if answer.status_code != 200:
                    failures.append(f"{key}: {answer.status_code} {answer.text}")
                    return
                created[key].add(answer.json()["id"])
                return
        failures.append(f"{key}: no answer within 60 s")

    try:
        gateway.start()
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            uri = str(make_base_model_dir(tmp_path, "base"))
            model = {"name": "base", "kind": "MODEL_KIND_BASE", "uri": uri}
            assert http.post("/v1/models", json={"model": model}).status_code == 200

        def clients(batch: list[str]) -> list[threading.Thread]:
            return [threading.Thread(target=create, args=(key,), daemon=True) for key in batch]

        first = clients(keys[:20])
        for thread in first:
            thread.start()
        gateway.kill()  # while the first batch is being sent
        second = clients(keys[20:])
        for thread in second:
            thread.start()
        gateway.start()
        for thread in first + second:
            thread.join(90)
        assert not failures, failures
        assert all(len(ids) == 1 for ids in created.values()), created
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            listed = http.get("/v1/trainingJobs", params={"page_size": 100}).json()
        ids = sorted(job["id"] for job in listed["training_jobs"])
        assert ids == sorted(next(iter(found)) for found in created.values())  # none twice
        assert retried[0] > 0  # the restart was felt
    finally:
        gateway.stop()
