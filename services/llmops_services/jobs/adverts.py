"""Worker advertisements: each live worker publishes what it can run (torch, CUDA, 4-bit) under
`llmops:workers:<owner>` with an expiry it keeps renewing, so a service can refuse a job that no
live worker could run."""

from __future__ import annotations

import json
from typing import Any

WORKERS_PREFIX = "llmops:workers:"


async def advertise(redis: Any, owner: str, capabilities: dict[str, Any], ttl: float) -> None:
    """Publishes a worker's capabilities for `ttl` seconds; a worker renews it while it lives."""
    key = WORKERS_PREFIX + owner
    await redis.set(key, json.dumps({"owner": owner, **capabilities}), px=int(ttl * 1000))


async def withdraw(redis: Any, owner: str) -> None:
    """Removes a stopping worker's advertisement."""
    await redis.delete(WORKERS_PREFIX + owner)


async def read_all(redis: Any) -> list[dict[str, Any]]:
    """What the live workers advertise; empty when none runs."""
    found = []
    async for key in redis.scan_iter(match=WORKERS_PREFIX + "*"):
        raw = await redis.get(key)
        if raw:
            found.append(json.loads(raw))
    return found
