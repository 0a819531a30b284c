"""Fixtures of the job tests: tiny models built once per session (two pretraining steps: the
tests need real Llama checkpoints with the platform's tokenizer, not good ones), a stack with a
short lease and a quick reconciler, and its pool of worker processes (started by each test, with
the environment it needs); and the REST gateway binary of the gateway tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmops_services.gateway import PROJECT_BINARY, GatewayError, find_binary
from llmops_workers.tiny import build_tiny_model
from tests.conftest import ServerThread, make_settings
from tests.integration.workers import Workers


@pytest.fixture(scope="session")
def binary() -> Path:
    """The REST gateway binary; a test run without it fails (it is part of `make test`)."""
    try:
        return find_binary(os.environ.get("LLMOPS_GATEWAY_BINARY", ""))
    except GatewayError as error:
        pytest.fail(f"{error} (`make gateway` builds {PROJECT_BINARY})")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny"
    build_tiny_model(path, pretrain_steps=2)
    return path


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "student"
    build_tiny_model(path, kind="student", pretrain_steps=2)
    return path


@pytest.fixture
def stack(data_dir: Path) -> Iterator[ServerThread]:
    settings = make_settings(data_dir, job_lease_seconds=8, reconcile_seconds=0.5)
    running = ServerThread(settings).start()
    yield running
    running.stop()


@pytest.fixture
def workers(stack: ServerThread) -> Iterator[Workers]:
    pool = Workers(stack)
    yield pool
    pool.stop()
