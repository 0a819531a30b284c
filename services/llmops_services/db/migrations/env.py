"""Alembic environment: runs migrations on the connection handed over by `Database.migrate`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from llmops_services.db.tables import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    """Migrates on the given connection, or on a new engine for the `alembic` CLI."""
    connection = config.attributes.get("connection")
    if connection is None:
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
        with engine.begin() as own_connection:
            _migrate(own_connection)
        return
    _migrate(connection)


def _migrate(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
