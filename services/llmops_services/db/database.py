"""Engine, sessions and migrations of the metadata database."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from llmops_services.db import json_values

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
log = logging.getLogger("llmops.db")

CONFLICT_RETRIES = 3
"""How many times a transaction that lost a race on PostgreSQL is run again."""
_CONFLICTS = {
    "23505": "unique violation",  # two inserts of one key: a version number, an idempotency key
    "40001": "serialization failure",
    "40P01": "deadlock",
}
"""PostgreSQL errors that mean "another transaction got there first": the work is run again on
what that one committed (a second CreateModel then takes the next version, a repeated
idempotency key finds the first call's row). SQLite runs one writer at a time."""


def conflict_of(error: DBAPIError) -> str:
    """What race a database error reports, or "" when it is no race."""
    return _CONFLICTS.get(str(getattr(error.orig, "sqlstate", "") or ""), "")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class Database:
    """Owns the engine. `run` executes a unit of work in one transaction.

    SQLite on a local file answers in microseconds, so its work runs inline on the event loop;
    a networked database (PostgreSQL) runs in a thread so a slow query never stalls other calls.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite and parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(
            url,
            pool_pre_ping=not self.is_sqlite,
            json_serializer=json_values.dumps,
            json_deserializer=json_values.loads,
        )
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def on_commit(self, callback: Callable[[Session], None]) -> None:
        """Calls `callback(session)` after each transaction of this database commits."""
        event.listen(self._sessions, "after_commit", callback)

    def listen(self, name: str, callback: Callable[[Session], None]) -> None:
        """Calls `callback(session)` on the session event `name` (`before_commit`, …) of every
        session of this database."""
        event.listen(self._sessions, name, callback)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        with self._sessions.begin() as session:
            yield session

    def run_sync(self, work: Callable[[Session], T]) -> T:
        """Runs `work` in one transaction, blocking; again, on a fresh transaction, when it
        lost a race to a concurrent one (`conflict_of`), up to `CONFLICT_RETRIES` times."""
        for retry in range(CONFLICT_RETRIES + 1):
            try:
                with self.session() as session:
                    return work(session)
            except DBAPIError as error:
                conflict = conflict_of(error)
                if not conflict or retry == CONFLICT_RETRIES:
                    raise
                log.info("transaction lost a race (%s); running it again", conflict)
                time.sleep(random.uniform(0, 0.01 * 2**retry))  # racers spread out
        raise AssertionError("unreachable")

    async def run(self, work: Callable[[Session], T]) -> T:
        """Runs `work` in one transaction without blocking the event loop on slow databases."""
        if self.is_sqlite:
            return self.run_sync(work)
        return await asyncio.to_thread(self.run_sync, work)

    def migrate(self) -> None:
        """Brings the schema to the newest Alembic revision."""
        config = alembic_config(self.url)
        with self.engine.connect() as connection:
            if self.is_sqlite:
                # SQLite's batch migrations rebuild a table (copy, drop, rename): with foreign
                # keys enforced, dropping one that other rows point at (models, under aliases)
                # fails, so they are off while migrating, as Alembic's docs say. PRAGMA is a
                # no-op inside a transaction, hence the commit before `begin`.
                connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
                connection.commit()
            try:
                with connection.begin():
                    if connection.dialect.name == "postgresql":
                        # Replicas of a new deployment start together: each would create the
                        # schema. One takes this lock, migrates and commits (DDL is
                        # transactional here, and the lock ends with the transaction); the
                        # others wait for it, then find the schema at head.
                        connection.exec_driver_sql(
                            f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
                        )
                    config.attributes["connection"] = connection
                    command.upgrade(config, "head")
            finally:
                if self.is_sqlite:
                    connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                    connection.commit()

    def close(self) -> None:
        """Closes every pooled connection."""
        self.engine.dispose()


MIGRATION_LOCK_KEY = 0x6C6C6D6F7073  # "llmops": the advisory lock that serializes migrations
"""Any int64 no other advisory lock of the database uses."""


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at our migrations, for code and for the `alembic` CLI alike."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config
