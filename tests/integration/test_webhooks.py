"""Webhooks on job end, end to end: a real server with a private Redis, a real worker process,
the tiny base and a real adapter, and a local HTTP receiver that checks every delivery with the
unmodified openai SDK (`OpenAI(webhook_secret=...).webhooks.unwrap`). The receiver answers 500
to the first attempts of each event and 200 after: each job end arrives as one event, with the
same `webhook-id` on every attempt. Cancelled jobs send their cancelled events; an endpoint
that refuses connections or never answers delays no RPC and no job, and its deliveries end as
failed; a delivery pending when the services stop is sent after they start again; two
dispatchers on one PostgreSQL database never hold the same delivery."""

from __future__ import annotations

import base64
import json
import re
import shutil
import socket
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.webhooks import (
    EvalRunCanceledWebhookEvent,
    FineTuningJobCancelledWebhookEvent,
    FineTuningJobFailedWebhookEvent,
    FineTuningJobSucceededWebhookEvent,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

import llmops
from llmops.v1 import jobs_pb2
from llmops_services.db.database import Database
from llmops_services.db.tables import JobRow, WebhookDeliveryRow
from llmops_services.jobs import states
from llmops_services.webhooks import deliveries, outbox
from tests.conftest import ServerThread, make_settings
from tests.integration.workers import FAST, Workers, until
from tests.postgres import private_postgres
from tests.tiny_models import TinyModels

SECRET = "whsec_" + base64.b64encode(b"a test secret of 32 random bytes").decode()


@dataclass
class Received:
    """One request the receiver got: its webhook-id, the event openai parsed, what it answered."""

    webhook_id: str
    event: Any
    status: int


class Receiver:
    """A webhook endpoint on a free port that verifies each request with the openai SDK and
    answers 500 to the first `failures` attempts of each event, 200 after."""

    def __init__(self, failures: int = 2) -> None:
        self.failures = failures
        self.client = openai.OpenAI(api_key="unused", webhook_secret=SECRET)
        self.received: list[Received] = []
        self.refused: list[str] = []  # requests whose signature did not verify
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                status = receiver.answer({k.lower(): v for k, v in self.headers.items()}, body)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        try:
            event = self.client.webhooks.unwrap(body, headers)
        except openai.InvalidWebhookSignatureError as error:
            with self.lock:
                self.refused.append(str(error))
            return 400
        webhook_id = headers["webhook-id"]
        with self.lock:
            earlier = sum(1 for r in self.received if r.webhook_id == webhook_id)
            status = 500 if earlier < self.failures else 200
            self.received.append(Received(webhook_id, event, status))
        return status

    def of_job(self, job_id: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.event.data.id == job_id]

    def delivered(self, job_id: str) -> bool:
        return any(r.status == 200 for r in self.of_job(job_id))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _settings(data_dir: Path, urls: list[str], **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "job_lease_seconds": 8,
        "reconcile_seconds": 0.5,
        "webhook_urls": urls,
        "webhook_secret": SECRET,
        "webhook_max_attempts": 5,
        "webhook_backoff_seconds": 0.2,
        "webhook_timeout_seconds": 2,
        "webhook_poll_seconds": 0.1,
    }
    values.update(overrides)
    return make_settings(data_dir, **values)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


@pytest.fixture
def stack(data_dir: Path, receiver: Receiver) -> Iterator[ServerThread]:
    running = ServerThread(_settings(data_dir, [receiver.url])).start()
    yield running
    running.stop()


def _deliveries(stack: ServerThread, job_id: str) -> list[WebhookDeliveryRow]:
    platform = stack.process.platform
    assert platform is not None
    query = select(WebhookDeliveryRow).where(WebhookDeliveryRow.job_id == job_id)
    return platform.db.run_sync(lambda s: list(s.scalars(query).all()))


def _counter(stack: ServerThread, name: str, outcome: str) -> float:
    text = urllib.request.urlopen(stack.metrics_url, timeout=10).read().decode()
    found = re.search(rf'^{name}{{outcome="{outcome}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _register(client: llmops.Client, tiny_models: TinyModels, adapter_dir: Path) -> None:
    base = client.models.create("tiny", str(tiny_models.base))
    client.models.create("helper", str(adapter_dir), "adapter", base_model=base.id)


@pytest.mark.timeout(300)
def test_a_merge_job_end_arrives_once_signed_and_retried_with_one_webhook_id(
    stack: ServerThread, receiver: Receiver, tiny_models: TinyModels, adapter_dir: Path
) -> None:
    delivered_before = _counter(stack, "llmops_webhook_deliveries_total", "delivered")
    errors_before = _counter(stack, "llmops_webhook_delivery_attempts_total", "http_error")
    workers = Workers(stack)
    try:
        with llmops.Client(stack.address, timeout=60) as client:
            _register(client, tiny_models, adapter_dir)
            # the worker ends the job, so it records the deliveries: it needs the same settings
            workers.start(
                LLMOPS_WEBHOOK_URLS=json.dumps([receiver.url]), LLMOPS_WEBHOOK_SECRET=SECRET
            )
            job = client.models.merge("helper").wait(timeout=240, poll_interval=0.2)
            assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job.error.message
            until(lambda: receiver.delivered(job.id), 30, "the merge job's event")
    finally:
        workers.stop()

    attempts = receiver.of_job(job.id)
    assert [r.status for r in attempts] == [500, 500, 200]
    assert len({r.webhook_id for r in attempts}) == 1  # one event, the same id on each attempt
    event = attempts[-1].event
    assert event.id == attempts[-1].webhook_id and event.id.startswith("evt_")
    assert (event.type, event.object, event.data.id) == ("merge.job.succeeded", "event", job.id)
    data = event.data.model_dump()
    assert data["status"] == "succeeded" and data["result_model"] == job.result_model
    assert data["error"] is None and data["object"] == "merge.job"
    assert abs(event.created_at - time.time()) < 300 and not receiver.refused

    [row] = _deliveries(stack, job.id)
    assert (row.state, row.attempts, row.last_status, row.last_error) == ("DELIVERED", 3, 200, "")
    assert row.event_id == event.id
    assert _counter(stack, "llmops_webhook_deliveries_total", "delivered") == delivered_before + 1
    assert (
        _counter(stack, "llmops_webhook_delivery_attempts_total", "http_error") == errors_before + 2
    )


@pytest.mark.timeout(300)
def test_a_job_ended_by_a_worker_without_the_settings_still_sends_its_event(
    data_dir: Path, receiver: Receiver, tiny_models: TinyModels, adapter_dir: Path
) -> None:
    """A worker started without LLMOPS_WEBHOOK_* records no event for the job it ends; the
    services' dispatcher finds the job end without one and records it, so it arrives late,
    not never."""
    receiver.failures = 0
    stack = ServerThread(_settings(data_dir, [receiver.url], webhook_sweep_seconds=0.2)).start()
    workers = Workers(stack)
    try:
        with llmops.Client(stack.address, timeout=60) as client:
            _register(client, tiny_models, adapter_dir)
            workers.start()  # no webhook settings
            job = client.models.merge("helper").wait(timeout=240, poll_interval=0.2)
            assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job.error.message
            until(lambda: receiver.delivered(job.id), 30, "the merge job's event")
        [delivered] = receiver.of_job(job.id)
        assert delivered.event.type == "merge.job.succeeded"
        assert [row.state for row in _deliveries(stack, job.id)] == ["DELIVERED"]
    finally:
        workers.stop()
        stack.stop()


@pytest.mark.timeout(300)
def test_training_jobs_that_succeed_and_fail_send_openai_fine_tuning_events(
    stack: ServerThread, receiver: Receiver, tiny_model: Path, tmp_path: Path
) -> None:
    plain = tmp_path / "no-chat-template"  # fails a chat dataset at once (INVALID_ARGUMENT)
    shutil.copytree(tiny_model, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    chat = tmp_path / "chat.jsonl"
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    chat.write_text(json.dumps(row) + "\n")
    workers = Workers(stack)
    try:
        with llmops.Client(stack.address, timeout=30) as client:
            client.models.create("tiny", str(tiny_model))
            client.models.create("plain", str(plain))
            client.datasets.upload(chat, kind="sft", name="chat")
            workers.start(
                LLMOPS_WEBHOOK_URLS=json.dumps([receiver.url]), LLMOPS_WEBHOOK_SECRET=SECRET
            )
            short = {**FAST, "max_steps": 2}
            good = client.training.create("sft", "tiny", "demo-sft", hyperparameters=short)
            bad = client.training.create("sft", "plain", "chat", hyperparameters=short)
            good, bad = good.wait(timeout=240, poll_interval=0.2), bad.wait(timeout=240)
            assert good.state == jobs_pb2.JOB_STATE_SUCCEEDED, good.error.message
            assert bad.state == jobs_pb2.JOB_STATE_FAILED
            for job in (good, bad):
                until(partial(receiver.delivered, job.id), 30, f"the event of {job.id}")
    finally:
        workers.stop()

    succeeded = receiver.of_job(good.id)[-1].event
    assert isinstance(succeeded, FineTuningJobSucceededWebhookEvent)
    assert succeeded.data.model_dump()["result_model"] == good.result_model
    failed = receiver.of_job(bad.id)[-1].event
    assert isinstance(failed, FineTuningJobFailedWebhookEvent)
    error = failed.data.model_dump()["error"]
    assert error["code"] == "INVALID_ARGUMENT" and "no chat template" in error["message"]
    for job in (good, bad):
        assert len({r.webhook_id for r in receiver.of_job(job.id)}) == 1
        assert [row.state for row in _deliveries(stack, job.id)] == ["DELIVERED"]


def test_cancelled_jobs_send_their_cancelled_events(
    stack: ServerThread, receiver: Receiver, tiny_models: TinyModels, adapter_dir: Path
) -> None:
    receiver.failures = 0
    with llmops.Client(stack.address, timeout=30) as client:
        _register(client, tiny_models, adapter_dir)
        # no worker runs here: each job is queued and cancelled at once
        training = client.training.create("sft", "tiny", "demo-sft").cancel()
        run = client.eval.create("tiny", "demo-eval", limit=4).cancel()
        merge = client.models.merge("helper").cancel()
        for job in (training, run, merge):
            assert job.state == jobs_pb2.JOB_STATE_CANCELLED
            until(partial(receiver.delivered, job.id), 30, f"the event of {job.id}")

    [(training_event)] = [r.event for r in receiver.of_job(training.id)]
    assert isinstance(training_event, FineTuningJobCancelledWebhookEvent)
    assert training_event.type == "fine_tuning.job.cancelled"
    [run_event] = [r.event for r in receiver.of_job(run.id)]
    assert isinstance(run_event, EvalRunCanceledWebhookEvent)  # OpenAI's spelling
    [merge_event] = [r.event for r in receiver.of_job(merge.id)]
    assert merge_event.type == "merge.job.cancelled"
    assert merge_event.data.model_dump()["status"] == "cancelled"
    assert len({training_event.id, run_event.id, merge_event.id}) == 3 and not receiver.refused


def _black_hole() -> socket.socket:
    """A port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    return listener


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_dead_endpoints_delay_no_rpc_and_their_deliveries_end_failed(
    data_dir: Path, tiny_models: TinyModels, adapter_dir: Path
) -> None:
    with _black_hole() as silent:
        refused = f"http://127.0.0.1:{_closed_port()}/hooks"
        hanging = f"http://127.0.0.1:{silent.getsockname()[1]}/hooks"
        settings = _settings(
            data_dir, [refused, hanging], webhook_max_attempts=2, webhook_timeout_seconds=3
        )
        stack = ServerThread(settings).start()
        try:
            failed_before = _counter(stack, "llmops_webhook_deliveries_total", "failed")
            with llmops.Client(stack.address, timeout=30) as client:
                _register(client, tiny_models, adapter_dir)
                started = time.monotonic()
                job = client.models.merge("helper").cancel()
                assert job.state == jobs_pb2.JOB_STATE_CANCELLED
                assert time.monotonic() - started < 2  # not held by the endpoints
                # while attempts hang on the silent endpoint, RPCs answer as usual
                until(lambda: _in_flight(stack, job.id, hanging), 10, "an attempt to hang")
                started = time.monotonic()
                assert client.merges.get(job.id).state == jobs_pb2.JOB_STATE_CANCELLED
                assert [j.id for j in client.merges.list()] == [job.id]
                assert time.monotonic() - started < 2  # an attempt there takes 3 s
                until(lambda: _settled(stack, job.id), 30, "both deliveries to fail")
            rows = {row.endpoint: row for row in _deliveries(stack, job.id)}
            assert {row.state for row in rows.values()} == {"FAILED"}
            assert {row.attempts for row in rows.values()} == {2}
            assert rows[refused].last_error.startswith("connection failed")
            assert rows[hanging].last_error == "no answer within 3 s"
            assert {row.last_status for row in rows.values()} == {0}
            failed = _counter(stack, "llmops_webhook_deliveries_total", "failed")
            assert failed == failed_before + 2
        finally:
            stack.stop()


def _in_flight(stack: ServerThread, job_id: str, endpoint: str) -> bool:
    return any(row.lease_owner for row in _deliveries(stack, job_id) if row.endpoint == endpoint)


def _settled(stack: ServerThread, job_id: str) -> bool:
    rows = _deliveries(stack, job_id)
    return len(rows) == 2 and all(row.state != "PENDING" for row in rows)


def test_a_delivery_pending_when_the_services_stop_is_sent_after_they_start_again(
    data_dir: Path, receiver: Receiver, tiny_models: TinyModels, adapter_dir: Path
) -> None:
    receiver.failures = 1000  # refuses until the services are back
    settings = _settings(data_dir, [receiver.url], webhook_backoff_seconds=0.1)
    stack = ServerThread(settings).start()
    try:
        with llmops.Client(stack.address, timeout=30) as client:
            _register(client, tiny_models, adapter_dir)
            job = client.models.merge("helper").cancel()
        until(lambda: len(receiver.of_job(job.id)) >= 2, 30, "attempts to be refused")
    finally:
        stack.stop()
    assert [row.state for row in _deliveries_after_stop(settings, job.id)] == ["PENDING"]

    receiver.failures = 0
    again = ServerThread(_settings(data_dir, [receiver.url])).start()
    try:
        until(lambda: receiver.delivered(job.id), 30, "the event after the restart")
        ids = {r.webhook_id for r in receiver.of_job(job.id)}
        assert len(ids) == 1  # the same event as before the restart
        assert [row.state for row in _deliveries(again, job.id)] == ["DELIVERED"]
    finally:
        again.stop()


def _deliveries_after_stop(settings: Any, job_id: str) -> list[WebhookDeliveryRow]:
    db = Database(settings.resolved_database_url)
    try:
        query = select(WebhookDeliveryRow).where(WebhookDeliveryRow.job_id == job_id)
        return db.run_sync(lambda s: list(s.scalars(query).all()))
    finally:
        db.close()


def test_two_dispatchers_on_postgresql_never_claim_the_same_delivery() -> None:
    endpoints = [f"http://127.0.0.1:9/{n}" for n in range(8)]
    # a directory the postgres user can reach (pytest's tmp_path is private to root)
    with tempfile.TemporaryDirectory() as base, private_postgres(Path(base)) as url:
        replicas = [Database(url), Database(url)]  # two services processes' own engines
        replicas[0].migrate()
        outbox.install(replicas[0], endpoints)
        for n in range(5):
            job = JobRow(id=f"merge-{n}", kind="merge", state="QUEUED")
            replicas[0].run_sync(partial(_cancel, job=job))
        claimed: dict[str, list[str]] = {"a": [], "b": []}
        start = threading.Barrier(2)

        def claim(owner: str, db: Database) -> None:
            start.wait()
            while batch := db.run_sync(lambda s: deliveries.claim_due(s, owner, 60, 3)):
                claimed[owner] += [delivery.id for delivery in batch]

        threads = [
            threading.Thread(target=claim, args=(owner, db))
            for owner, db in zip(claimed, replicas, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for db in replicas:
            db.close()
    assert not set(claimed["a"]) & set(claimed["b"])
    assert len(claimed["a"]) + len(claimed["b"]) == 40


def _cancel(session: Session, job: JobRow) -> None:
    session.add(job)
    session.flush()
    states.move(session, job, "CANCELLED")
