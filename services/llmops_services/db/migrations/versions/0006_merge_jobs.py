"""merged models record the merge job that produced them

A merge job is a job of its own kind (`merge`, in the existing jobs table); the merged model it
registers names it in `merge_job_id`, beside `parent_model_id` (the adapter merged).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(
            sa.Column("merge_job_id", sa.String(32), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("merge_job_id")
