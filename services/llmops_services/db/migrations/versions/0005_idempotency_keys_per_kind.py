"""idempotency keys scoped per job kind

A key used for an eval run could not be used for a training job (the key was unique across the
whole jobs table, and the training service's lookup did not filter by kind, so the second create
failed with INTERNAL). The key is now unique per kind.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("uq_jobs_idempotency_key", type_="unique")
        batch.create_unique_constraint("uq_jobs_kind_idempotency_key", ["kind", "idempotency_key"])


def downgrade() -> None:
    # fails if a key is now used by jobs of two kinds, as it must: the old rule cannot hold them
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("uq_jobs_kind_idempotency_key", type_="unique")
        batch.create_unique_constraint("uq_jobs_idempotency_key", ["idempotency_key"])
