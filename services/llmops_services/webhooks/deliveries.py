"""Claiming and settling deliveries. With several service replicas on one database, a delivery
is sent by one dispatcher at a time: a claim is a conditional UPDATE that sets a lease (owner
and expiry) only where none is live, so of two dispatchers that read the same due row, one
updates it and the other updates nothing. On PostgreSQL the read also takes the rows
`FOR UPDATE SKIP LOCKED`, so concurrent dispatchers pick different rows instead of queueing on
each other's locks. A dispatcher that dies mid-send leaves its lease to expire; the delivery
is then sent again, with the same `webhook-id`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, or_, select, update
from sqlalchemy.orm import Session

from llmops_services.db.tables import WebhookDeliveryRow, utcnow

PENDING, DELIVERED, FAILED = "PENDING", "DELIVERED", "FAILED"


@dataclass(frozen=True)
class Claimed:
    """A delivery one dispatcher holds the lease of: what it needs to send it."""

    id: str
    event_id: str
    event_type: str
    job_id: str
    endpoint: str
    body: str
    attempts: int


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how late a failing delivery is tried again."""

    max_attempts: int
    backoff_seconds: float
    backoff_max_seconds: float

    def delay(self, attempts: int) -> float:
        """The wait after the `attempts`-th failed attempt: backoff, doubled each time, capped."""
        return min(self.backoff_seconds * 2.0 ** (attempts - 1), self.backoff_max_seconds)


def _claimable(now: datetime) -> ColumnElement[bool]:
    row = WebhookDeliveryRow
    return (
        (row.state == PENDING)
        & (row.next_attempt_time <= now)
        & or_(row.lease_expires.is_(None), row.lease_expires < now)
    )


def claim_due(session: Session, owner: str, lease_seconds: float, limit: int) -> list[Claimed]:
    """Leases up to `limit` due deliveries to `owner`, oldest due first."""
    now = utcnow()
    query = (
        select(WebhookDeliveryRow.id)
        .where(_claimable(now))
        .order_by(WebhookDeliveryRow.next_attempt_time)
        .limit(limit)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite serializes writers anyway
    )
    expires = now + timedelta(seconds=lease_seconds)
    won = []
    for delivery_id in session.scalars(query).all():
        claim = (
            update(WebhookDeliveryRow)
            .where(WebhookDeliveryRow.id == delivery_id, _claimable(now))
            .values(lease_owner=owner, lease_expires=expires)
            .execution_options(synchronize_session=False)
        )
        if cast(CursorResult[Any], session.execute(claim)).rowcount == 1:
            won.append(delivery_id)
    if not won:
        return []
    rows = session.scalars(
        select(WebhookDeliveryRow)
        .where(WebhookDeliveryRow.id.in_(won))
        .order_by(WebhookDeliveryRow.next_attempt_time)
        .execution_options(populate_existing=True)
    ).all()
    return [
        Claimed(r.id, r.event_id, r.event_type, r.job_id, r.endpoint, r.body, r.attempts)
        for r in rows
    ]


def settle(
    session: Session,
    claimed: Claimed,
    owner: str,
    status: int,
    error: str,
    policy: RetryPolicy,
) -> str:
    """Records an attempt (HTTP `status`, 0 for none; `error`, "" when it was a 2xx) and returns
    the delivery's state: DELIVERED, FAILED (out of attempts) or PENDING (due again later).
    An attempt whose lease another dispatcher took meanwhile records nothing ("")."""
    row = session.get(WebhookDeliveryRow, claimed.id)
    if row is None or row.lease_owner != owner or row.state != PENDING:
        return ""
    now = utcnow()
    row.attempts += 1
    row.last_status, row.last_error = status, error
    row.lease_owner, row.lease_expires = "", None
    row.update_time = now
    if not error:
        row.state = DELIVERED
    elif row.attempts >= policy.max_attempts:
        row.state = FAILED
    else:
        row.next_attempt_time = now + timedelta(seconds=policy.delay(row.attempts))
    return row.state


def release(session: Session, owner: str) -> None:
    """Gives back the leases of `owner` (a dispatcher stopping mid-send), so the deliveries are
    sent again at once rather than when the leases run out."""
    session.execute(
        update(WebhookDeliveryRow)
        .where(WebhookDeliveryRow.lease_owner == owner, WebhookDeliveryRow.state == PENDING)
        .values(lease_owner="", lease_expires=None)
        .execution_options(synchronize_session=False)
    )
