"""The database briefly unavailable under the services: SQLite locked by another writer, and
PostgreSQL stopped and started again. Calls answer UNAVAILABLE with a retry hint (never
INTERNAL), a refused write leaves nothing half-written, and the services recover without a
restart."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import llmops
from tests.conftest import ServerThread, make_settings
from tests.integration.helpers import jsonl, make_base_model_dir
from tests.postgres import PrivatePostgres

pytestmark = pytest.mark.faults

ROWS = [
    {"messages": [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": "a"}]}
    for n in range(50)
]


NO_RETRIES = [("grpc.enable_retries", 0)]


def refused_for_now(error: llmops.Unavailable) -> None:
    assert "the database is unavailable" in str(error), str(error)
    assert error.retry_delay is not None and error.retry_delay > 0


def internal_calls(server: ServerThread) -> float:
    """How many calls the server answered INTERNAL, from its own metrics."""
    import urllib.request

    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("grpc_server_handled_total") and 'grpc_code="INTERNAL"' in line
    )


def test_a_locked_sqlite_database_answers_unavailable_and_loses_nothing(
    data_dir: Path, tmp_path: Path
) -> None:
    server = ServerThread(make_settings(data_dir)).start()
    try:
        # without the SDK's own retries of UNAVAILABLE, each of which waits out SQLite's 5 s
        # busy timeout again: the server's answer is what is checked
        with llmops.Client(server.address, timeout=30, options=NO_RETRIES) as client:
            client.models.create("before", str(make_base_model_dir(tmp_path, "before")))
            holder = sqlite3.connect(data_dir / "llmops.db", timeout=0, isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")  # another writer holds the lock
            try:
                uri = str(make_base_model_dir(tmp_path, "during"))
                with pytest.raises(llmops.Unavailable) as created:
                    client.models.create("during", uri)
                refused_for_now(created.value)
                with pytest.raises(llmops.Unavailable) as uploaded:
                    client.datasets.upload(jsonl(ROWS), "sft", "locked-set")
                refused_for_now(uploaded.value)
                assert client.models.get("before").name == "before"  # reads go on (WAL)
            finally:
                holder.execute("ROLLBACK")
                holder.close()

            assert client.models.create("during", uri).version == 1  # nothing half-made
            with pytest.raises(llmops.NotFound):
                client.datasets.get("locked-set")
            assert client.datasets.upload(jsonl(ROWS), "sft", "locked-set").dataset.row_count == 50
        assert internal_calls(server) == 0
    finally:
        server.stop()


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    # not under pytest's tmp_path: the postgres user must reach the directory
    with tempfile.TemporaryDirectory() as base:
        server = PrivatePostgres(Path(base)).start()
        yield server
        server.stop()


def test_postgresql_stopped_and_started_again_is_survived_without_a_restart(
    data_dir: Path, tmp_path: Path, postgres: PrivatePostgres
) -> None:
    server = ServerThread(make_settings(data_dir, database_url=postgres.url)).start()
    try:
        with llmops.Client(server.address, timeout=30) as client:
            client.models.create("before", str(make_base_model_dir(tmp_path, "before")))
            postgres.stop()
            with pytest.raises(llmops.Unavailable) as read:
                client.models.get("before")
            refused_for_now(read.value)
            uri = str(make_base_model_dir(tmp_path, "during"))
            with pytest.raises(llmops.Unavailable) as written:
                client.models.create("during", uri)
            refused_for_now(written.value)

            postgres.start()
            assert client.models.get("before").name == "before"
            assert client.models.create("during", uri).version == 1
            assert client.datasets.upload(jsonl(ROWS), "sft", "after").dataset.row_count == 50
        assert internal_calls(server) == 0
    finally:
        server.stop()
