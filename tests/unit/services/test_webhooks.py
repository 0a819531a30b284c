"""Webhooks without a server: the signature against the Standard Webhooks example and the
openai SDK's verifier, settings refused with a clear message that never repeats the secret,
event shapes the openai SDK parses, and the outbox on a real SQLite database (written with the
job's end and only then, one claim per delivery, backoff to a final failure)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pydantic
import pytest
from openai.types.webhooks import (
    EvalRunCanceledWebhookEvent,
    FineTuningJobFailedWebhookEvent,
    FineTuningJobSucceededWebhookEvent,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from llmops_services.db.database import Database
from llmops_services.db.tables import JobRow, WebhookDeliveryRow, utcnow
from llmops_services.jobs import states
from llmops_services.jobs.kinds import JobKind
from llmops_services.settings import Settings
from llmops_services.webhooks import deliveries, outbox
from llmops_services.webhooks.deliveries import RetryPolicy
from llmops_services.webhooks.dispatcher import where
from llmops_services.webhooks.events import event_body, event_type
from llmops_services.webhooks.signing import Signer, check_secret

# The example of the Standard Webhooks specification (and of Svix, whose scheme it is).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
ENDPOINTS = ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"]


def test_the_signature_is_the_specifications_example() -> None:
    at = datetime.fromtimestamp(SPEC_TIMESTAMP, UTC)
    headers = Signer(SPEC_SECRET).headers(SPEC_ID, SPEC_BODY, at)
    assert headers == {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }


def test_the_openai_sdk_verifies_what_is_signed_and_refuses_a_changed_body() -> None:
    body = b'{"id":"evt_1","object":"event","created_at":1,"type":"fine_tuning.job.succeeded",'
    body += b'"data":{"id":"ftjob-1"}}'
    headers = Signer(SECRET).headers("evt_1", body, datetime.now(UTC))
    client = openai.OpenAI(api_key="unused", webhook_secret=SECRET)
    event = client.webhooks.unwrap(body, headers)
    assert isinstance(event, FineTuningJobSucceededWebhookEvent) and event.data.id == "ftjob-1"
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(body.replace(b"ftjob-1", b"ftjob-2"), headers)
    assert "AAEC" not in repr(Signer(SECRET))  # the key is not in its repr


def _settings(**values: Any) -> Settings:
    return Settings(**values)


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must be whsec_"),
        ("whsec_not base64!!", "not valid base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "5-byte key"),
    ],
)
def test_a_bad_secret_is_refused_at_start_without_repeating_it(secret: str, says: str) -> None:
    assert says in check_secret(secret)
    with pytest.raises(pydantic.ValidationError) as refused:
        _settings(webhook_urls=ENDPOINTS, webhook_secret=secret)
    assert "LLMOPS_WEBHOOK_SECRET" in str(refused.value) and says in str(refused.value)
    assert secret not in str(refused.value)


def test_urls_need_a_secret_and_must_be_http() -> None:
    with pytest.raises(pydantic.ValidationError, match="needs LLMOPS_WEBHOOK_SECRET"):
        _settings(webhook_urls=ENDPOINTS)
    with pytest.raises(pydantic.ValidationError, match="not an http"):
        _settings(webhook_urls=["ftp://example.com/x"], webhook_secret=SECRET)
    settings = _settings(webhook_urls=ENDPOINTS, webhook_secret=SECRET)
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    assert _settings().webhook_urls == []  # off by default


def test_event_types_follow_openai_where_it_has_the_event() -> None:
    assert event_type(JobKind.TRAINING, "SUCCEEDED") == "fine_tuning.job.succeeded"
    assert event_type(JobKind.TRAINING, "CANCELLED") == "fine_tuning.job.cancelled"
    assert event_type(JobKind.EVAL, "CANCELLED") == "eval.run.canceled"  # OpenAI's spelling
    assert event_type(JobKind.MERGE, "FAILED") == "merge.job.failed"


def test_event_bodies_parse_as_openai_events_and_carry_the_outcome() -> None:
    from openai._models import construct_type
    from openai.types.webhooks.unwrap_webhook_event import UnwrapWebhookEvent

    ended = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    failed = JobRow(id="ftjob-1", kind="training", state="FAILED", end_time=ended)
    failed.error_code, failed.error_message, failed.result_model_id = 3, "bad row 4", ""
    body = json.loads(event_body(failed, "evt_1"))
    assert body["data"] == {
        "id": "ftjob-1",
        "object": "fine_tuning.job",
        "status": "failed",
        "result_model": None,
        "error": {"code": "INVALID_ARGUMENT", "message": "bad row 4"},
        "finished_at": int(ended.timestamp()),
    }
    parsed = construct_type(type_=UnwrapWebhookEvent, value=body)
    assert isinstance(parsed, FineTuningJobFailedWebhookEvent)
    assert (parsed.id, parsed.created_at, parsed.object) == ("evt_1", body["created_at"], "event")

    run = JobRow(id="eval-1", kind="eval", state="CANCELLED", end_time=ended)
    run.error_code, run.error_message, run.result_model_id = 0, "", ""
    parsed = construct_type(type_=UnwrapWebhookEvent, value=json.loads(event_body(run, "evt_2")))
    assert isinstance(parsed, EvalRunCanceledWebhookEvent) and parsed.data.id == "eval-1"


def test_logs_show_an_endpoint_without_its_credentials_or_query() -> None:
    assert where("https://user:pw@hooks.example.com:8443/in?token=t#x") == (
        "https://hooks.example.com:8443/in"
    )


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'hooks.db'}")
    database.migrate()
    outbox.install(database, ENDPOINTS)
    return database


def _job(session: Session, job_id: str, state: str = "RUNNING") -> JobRow:
    row = JobRow(id=job_id, kind="merge", state=state, attempt=1)
    session.add(row)
    session.flush()
    return row


def _deliveries(db: Database) -> list[WebhookDeliveryRow]:
    return db.run_sync(
        lambda s: list(s.scalars(select(WebhookDeliveryRow).order_by("endpoint")).all())
    )


def test_a_job_end_records_one_event_per_endpoint_in_its_own_transaction(db: Database) -> None:
    db.run_sync(lambda s: states.move(s, _job(s, "merge-1"), "CANCELLING"))
    assert _deliveries(db) == []  # not an end

    def end_then_fail(session: Session) -> None:
        row = session.get(JobRow, "merge-1")
        assert row is not None
        states.move(session, row, "CANCELLED")
        raise RuntimeError("the transaction rolls back")

    with pytest.raises(RuntimeError):
        db.run_sync(end_then_fail)
    assert _deliveries(db) == []  # no event for an end that did not happen

    def end(session: Session) -> None:
        row = session.get(JobRow, "merge-1")
        assert row is not None
        row.result_model_id = "mdl-1"  # set after the move, still in the event
        states.move(session, row, "CANCELLED")

    db.run_sync(end)
    sent = _deliveries(db)
    assert [d.endpoint for d in sent] == ENDPOINTS
    assert sent[0].event_id == sent[1].event_id and sent[0].body == sent[1].body
    assert sent[0].event_id.startswith("evt_") and sent[0].event_type == "merge.job.cancelled"
    assert json.loads(sent[0].body)["data"]["result_model"] == "mdl-1"
    assert {d.state for d in sent} == {"PENDING"}


def test_one_dispatcher_holds_a_delivery_at_a_time_and_failures_back_off(db: Database) -> None:
    db.run_sync(lambda s: states.move(s, _job(s, "merge-2"), "FAILED"))
    first = db.run_sync(lambda s: deliveries.claim_due(s, "a", 60, 10))
    assert [c.endpoint for c in sorted(first, key=lambda c: c.endpoint)] == ENDPOINTS
    assert db.run_sync(lambda s: deliveries.claim_due(s, "b", 60, 10)) == []  # leased to a

    policy = RetryPolicy(max_attempts=2, backoff_seconds=30, backoff_max_seconds=40)
    assert [policy.delay(n) for n in (1, 2, 3)] == [30, 40, 40]
    one, other = first
    assert db.run_sync(lambda s: deliveries.settle(s, one, "b", 500, "HTTP 500", policy)) == ""
    assert db.run_sync(lambda s: deliveries.settle(s, one, "a", 200, "", policy)) == "DELIVERED"
    assert db.run_sync(lambda s: deliveries.settle(s, other, "a", 0, "refused", policy)) == (
        "PENDING"
    )
    assert db.run_sync(lambda s: deliveries.claim_due(s, "b", 60, 10)) == []  # not due yet

    def due_now(session: Session) -> None:
        row = session.get(WebhookDeliveryRow, other.id)
        assert row is not None  # SQLite gives back naive UTC
        assert row.next_attempt_time.replace(tzinfo=UTC) > utcnow() + timedelta(seconds=25)
        row.next_attempt_time = utcnow()

    db.run_sync(due_now)
    again = db.run_sync(lambda s: deliveries.claim_due(s, "b", 60, 10))
    assert [(c.id, c.event_id, c.attempts) for c in again] == [(other.id, other.event_id, 1)]
    assert db.run_sync(lambda s: deliveries.settle(s, again[0], "b", 503, "HTTP 503", policy)) == (
        "FAILED"
    )
    settled = {d.id: d for d in _deliveries(db)}
    assert (settled[other.id].attempts, settled[other.id].last_status) == (2, 503)
    assert settled[other.id].last_error == "HTTP 503" and not settled[other.id].lease_owner
    assert (settled[one.id].state, settled[one.id].attempts) == ("DELIVERED", 1)


def test_a_stopping_dispatcher_hands_its_leases_back(db: Database) -> None:
    db.run_sync(lambda s: states.move(s, _job(s, "merge-3"), "SUCCEEDED"))
    assert len(db.run_sync(lambda s: deliveries.claim_due(s, "a", 60, 10))) == 2
    db.run_sync(lambda s: deliveries.release(s, "a"))
    assert len(db.run_sync(lambda s: deliveries.claim_due(s, "b", 60, 10))) == 2
