"""Migrations upgrade a database that is in use: the schema of the first release, holding a
model and an alias written the way that release wrote them, is brought to the newest revision on
SQLite and on PostgreSQL, and a server started on it serves the old rows with the new columns at
their defaults."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

import llmops
from llmops_services.db.database import alembic_config
from tests.backend import fresh_database_url
from tests.conftest import ServerThread, make_settings
from tests.integration.helpers import make_base_model_dir

FIRST_RELEASE = "0001"
NOW = datetime(2026, 11, 1, tzinfo=UTC)
OLD_MODEL = {  # every column of `models` at revision 0001
    "id": "mdl-00000000old1",
    "name": "old-model",
    "version": 1,
    "kind": "base",
    "description": "registered before the upgrade",
    "uri": "",
    "base_model_id": None,
    "parent_model_id": None,
    "teacher_model_id": None,
    "dataset_id": None,
    "dataset_sha256": "",
    "method": "",
    "hyperparameters": {},
    "training_job_id": "",
    "attempt": 0,
    "checkpoint_step": 0,
    "template_id": "",
    "template_version": 0,
    "metrics": {"loss": 0.5},
    "architecture": "LlamaForCausalLM",
    "tokenizer_sha256": "",
    "size_bytes": 8,
    "idempotency_key": None,
    "create_time": NOW,
}
OLD_ALIAS = {
    "model_name": "old-model",
    "alias": "prod",
    "model_id": OLD_MODEL["id"],
    "update_time": NOW,
    "updated_by": "admin",
}


def _migrate(url: str, revision: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def _write_first_release_rows(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        tables = sa.MetaData()
        tables.reflect(engine, only=["models", "model_aliases"])
        with engine.begin() as connection:
            connection.execute(tables.tables["models"].insert(), [OLD_MODEL])
            connection.execute(tables.tables["model_aliases"].insert(), [OLD_ALIAS])
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_first_releases_database_is_upgraded_and_served(backend: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    url = fresh_database_url() if backend == "postgres" else f"sqlite:///{data_dir / 'old.db'}"
    uri = str(make_base_model_dir(tmp_path))
    _migrate(url, FIRST_RELEASE)
    _write_first_release_rows(url)
    with sa.create_engine(url).begin() as connection:
        connection.execute(sa.text("UPDATE models SET uri = :uri"), {"uri": uri})

    server = ServerThread(make_settings(data_dir, database_url=url)).start()  # migrates to head
    try:
        with llmops.Client(server.address, timeout=10) as client:
            old = client.models.get("old-model@prod")
            assert (old.id, old.version, old.description) == (
                OLD_MODEL["id"],
                1,
                "registered before the upgrade",
            )
            assert old.metrics["loss"] == 0.5 and not old.trust_remote_code
            assert old.origin.merge_job == ""  # a later revision's column, at its default
            newer = client.models.create("old-model", uri)
            assert newer.version == 2
            client.models.set_alias(newer.id, "prod")
            moves = list(client.models.alias_history("old-model", "prod"))
            assert [(m.from_model, m.to_model) for m in moves] == [(old.id, newer.id)]
    finally:
        server.stop()
