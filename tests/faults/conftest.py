"""Fixtures of the fault tests (`make test-faults`): those of the job tests, the tiny models, a
stack and its worker pool (tests/integration/conftest.py), shared rather than copied; and a
Redis and a services process of the test's own, for the tests that restart them."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from llmops_services.jobs.private_redis import PrivateRedis
from tests.faults.processes import ServicesProcess
from tests.integration.conftest import (  # noqa: F401
    binary,
    stack,
    tiny_model,
    tiny_student,
    workers,
)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def services(tmp_path: Path, redis_server: PrivateRedis) -> Iterator[ServicesProcess]:
    running = ServicesProcess(tmp_path / "data", redis_server.url).start()
    yield running
    running.stop()
