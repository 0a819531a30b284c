"""Which metadata database and artifact store the tests' servers use: `LLMOPS_TEST_BACKEND=sqlite`
(the default: a SQLite file and a store directory in each test's data dir) or `postgres` (a fresh
database per data dir, on one private PostgreSQL server, and a bucket per data dir, on one moto
S3 server, both started on first need for the whole test session; `make test-scale`)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from functools import cache
from pathlib import Path

import psycopg

from tests.postgres import PrivatePostgres
from tests.s3 import PrivateS3

BACKENDS = ("sqlite", "postgres")


def test_backend() -> str:
    """The backend `LLMOPS_TEST_BACKEND` names; anything else is a mistake, said at once."""
    backend = os.environ.get("LLMOPS_TEST_BACKEND", "sqlite") or "sqlite"
    if backend not in BACKENDS:
        raise ValueError(f"LLMOPS_TEST_BACKEND={backend!r}: use one of {', '.join(BACKENDS)}")
    return backend


@cache
def _server() -> PrivatePostgres:
    base = Path(tempfile.mkdtemp(prefix="llmops-test-postgres-"))
    server = PrivatePostgres(base).start()

    def stop() -> None:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)

    atexit.register(stop)
    return server


def fresh_database_url() -> str:
    """A new, empty database on the session's PostgreSQL server (its schema is made by the
    services' migrations when they start, as in production)."""
    server = _server()
    name = f"test_{uuid.uuid4().hex[:16]}"
    admin = server.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return server.url.rsplit("/", 1)[0] + f"/{name}"


_DATABASES: dict[Path, str] = {}


def database_url_for_tests(data_dir: Path) -> str:
    """The `database_url` a test server on `data_dir` gets: empty (SQLite in the data dir), or a
    PostgreSQL database of that data dir's own, made fresh for the first server on it and kept
    for the next (a test that restarts its server finds its data again)."""
    if test_backend() != "postgres":
        return ""
    key = data_dir.resolve()
    if key not in _DATABASES:
        _DATABASES[key] = fresh_database_url()
    return _DATABASES[key]


@cache
def s3_server() -> PrivateS3:
    """The session's S3 (moto) server, started on first need."""
    server = PrivateS3().start()
    atexit.register(server.stop)
    return server


_STORES: dict[Path, dict[str, str]] = {}


def store_settings_for_tests(data_dir: Path) -> dict[str, str]:
    """The artifact store settings a test server on `data_dir` gets: none (a directory in the
    data dir), or with the postgres backend an S3 bucket of that data dir's own (its cache stays
    the default, `<data dir>/cache`, shared by the server and its workers)."""
    if test_backend() != "postgres":
        return {}
    key = data_dir.resolve()
    if key not in _STORES:
        server = s3_server()
        _STORES[key] = {
            "artifacts_url": f"s3://{server.new_bucket()}/store",
            "s3_endpoint_url": server.endpoint_url,
        }
    return _STORES[key]
