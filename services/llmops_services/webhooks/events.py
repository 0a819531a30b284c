"""What an event says: its type (OpenAI's names where OpenAI has the same event) and its JSON
body in the shape of OpenAI's webhook events: `{"id": "evt_…", "object": "event",
"created_at", "type", "data": {"id": <job id>, …}}`."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

import grpc

from llmops_services.db.tables import JobRow
from llmops_services.jobs.kinds import JobKind

OBJECTS = {
    JobKind.TRAINING: "fine_tuning.job",
    JobKind.EVAL: "eval.run",
    JobKind.MERGE: "merge.job",
}
"""The prefix of each kind's event types, and its `data.object`."""
ENDINGS = {
    JobKind.TRAINING: {"SUCCEEDED": "succeeded", "FAILED": "failed", "CANCELLED": "cancelled"},
    # OpenAI spells its eval run's cancel `eval.run.canceled`; its SDK parses only that name
    JobKind.EVAL: {"SUCCEEDED": "succeeded", "FAILED": "failed", "CANCELLED": "canceled"},
    JobKind.MERGE: {"SUCCEEDED": "succeeded", "FAILED": "failed", "CANCELLED": "cancelled"},
}
_CODES = {code.value[0]: code.name for code in grpc.StatusCode}


def new_event_id() -> str:
    """An event id as OpenAI makes them: `evt_` and 32 hex digits."""
    return f"evt_{secrets.token_hex(16)}"


def event_type(kind: JobKind, state: str) -> str:
    """`fine_tuning.job.succeeded`, `eval.run.canceled`, `merge.job.failed`, …"""
    return f"{OBJECTS[kind]}.{ENDINGS[kind][state]}"


def event_body(job: JobRow, event_id: str) -> str:
    """The event of a job that has just ended, as the compact JSON every attempt sends."""
    kind = JobKind.named(job.kind)
    end = job.end_time or datetime.now(UTC)
    ended = int((end if end.tzinfo else end.replace(tzinfo=UTC)).timestamp())  # SQLite: naive UTC
    data: dict[str, Any] = {
        "id": job.id,
        "object": OBJECTS[kind],
        "status": job.state.lower(),
        "result_model": job.result_model_id or None,
        "error": (
            {"code": _CODES.get(job.error_code, str(job.error_code)), "message": job.error_message}
            if job.error_code
            else None
        ),
        "finished_at": ended,
    }
    event = {
        "id": event_id,
        "object": "event",
        "created_at": ended,
        "type": event_type(kind, job.state),
        "data": data,
    }
    return json.dumps(event, separators=(",", ":"))
