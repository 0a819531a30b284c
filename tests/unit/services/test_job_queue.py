"""The job queue's connection pool, against a real private redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmops_services.jobs.private_redis import PrivateRedis
from llmops_services.jobs.queue import JobQueue


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = PrivateRedis(tmp_path).start()
    try:
        yield server.url
    finally:
        server.stop()


async def test_first_uses_at_once_share_one_pool(redis_url: str) -> None:
    """Two first uses at once (the reconciler's first pass and a create) open one pool, so no
    pool is left behind unclosed."""
    queue = JobQueue(redis_url)
    try:
        pools = await asyncio.gather(*(queue.pool() for _ in range(8)))
        assert all(pool is pools[0] for pool in pools)
        assert await queue.workers() == []
    finally:
        await queue.close()
