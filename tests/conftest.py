"""Shared fixtures: real servers on free ports, hosted on their own thread and event loop so
that both the sync SDK and async stubs can call them from a test."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc
import pytest

from llmops.v1 import registry_service_pb2_grpc
from llmops_services.app import Addresses, PlatformProcess
from llmops_services.settings import Settings
from tests.backend import database_url_for_tests, store_settings_for_tests
from tests.tiny_models import TinyModels, build_tiny_models


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test server: free ports, no key cache, a short grace period, and the
    database and artifact store of `LLMOPS_TEST_BACKEND` (tests/backend.py) unless the test
    names them."""
    store = {} if "artifacts_url" in overrides else store_settings_for_tests(data_dir)
    values: dict[str, Any] = {
        **store,
        "database_url": overrides.get("database_url") or database_url_for_tests(data_dir),
        "data_dir": data_dir,
        "grpc_port": 0,
        "metrics_port": 0,
        "auth_cache_seconds": 0,
        "shutdown_grace_seconds": 5,
        "reconcile_seconds": 3600,
        # aliases are plain labels unless a test is about the promotion gate
        "protected_aliases": [],
    }
    values.update(overrides)
    return Settings(**values)


class ServerThread:
    """A PlatformProcess running on its own thread and loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process = PlatformProcess(settings)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.addresses: Addresses | None = None

    def start(self) -> ServerThread:
        self.thread.start()
        self.addresses = self.call(self.process.start())
        return self

    def call(self, coroutine: Any, timeout: float = 60) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout)

    def stop_async(self) -> Future[Any]:
        """Starts a graceful stop and returns at once."""
        return asyncio.run_coroutine_threadsafe(self.process.stop(), self.loop)

    def stop(self) -> None:
        if self.thread.is_alive():
            self.stop_async().result(60)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        self.loop.close()

    @property
    def address(self) -> str:
        assert self.addresses is not None
        return self.addresses.grpc

    @property
    def metrics_url(self) -> str:
        assert self.addresses is not None
        return self.addresses.metrics


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def server(data_dir: Path) -> Iterator[ServerThread]:
    running = ServerThread(make_settings(data_dir)).start()
    yield running
    running.stop()


@pytest.fixture
async def channel(server: ServerThread) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.address) as opened:
        yield opened


@pytest.fixture
def registry(channel: grpc.aio.Channel) -> registry_service_pb2_grpc.RegistryServiceAsyncStub:
    return registry_service_pb2_grpc.RegistryServiceStub(channel)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """A tiny random Llama pair (base and student) shared by the model, engine and eval tests."""
    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))
