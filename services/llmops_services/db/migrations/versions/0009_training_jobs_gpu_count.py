"""training jobs record how many GPUs they train on and how the GPUs share the work

Every job created before trains in a single process: `gpu_count` 0, `distributed_strategy` ""
(DDP, the default once a job asks for more than one GPU).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("gpu_count", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("distributed_strategy", sa.String(8), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("distributed_strategy")
        batch.drop_column("gpu_count")
