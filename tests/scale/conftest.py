"""Fixtures of the scale-out tests (`make test-scale`): the tiny model, a Redis of the test's own
(tests/faults/conftest.py), and a PostgreSQL server that every replica and worker shares."""

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.conftest import redis_server  # noqa: F401
from tests.integration.conftest import tiny_model  # noqa: F401
from tests.postgres import private_postgres


@pytest.fixture
def postgres_url() -> Iterator[str]:
    # a directory of its own under /tmp: PostgreSQL's user must reach it, and pytest's tmp_path
    # is private to this one
    with tempfile.TemporaryDirectory() as base, private_postgres(Path(base)) as url:
        yield url
