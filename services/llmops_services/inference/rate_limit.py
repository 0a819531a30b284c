"""Rate limits per API key on generation (`LLMOPS_INFERENCE_RATE_LIMIT`, e.g. `10/second` or
`600/minute;20/second`, the `limits` library's notation, as Flask-Limiter and SlowAPI write it):
a key over its limit is refused with RESOURCE_EXHAUSTED and a retry hint for when its window
frees a place (HTTP 429 with Retry-After through the gateway). Calls without a key (auth off)
share one limit.

Counted with a moving window in the platform's Redis (`LLMOPS_REDIS_URL`) when the process has
one, so that every Inference replica draws on one allowance per key; in the process otherwise
(an Inference process started alone with no Redis). If Redis cannot be reached, generation is
let through and a warning logged: a broken limiter must not stop serving (the choice Envoy's
rate-limit filter makes by default)."""

from __future__ import annotations

import logging
import math
import time

import redis.asyncio
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from llmops_services.errors import ResourceExhausted

log = logging.getLogger("llmops.inference")

KEY_PREFIX = "llmops:rate-limit"
"""Where the counters live in Redis, beside the job queue's keys."""


def parse_limits(text: str) -> list[RateLimitItem]:
    """The limits a setting names; ValueError naming what is wrong."""
    return list(parse_many(text)) if text.strip() else []


class KeyRateLimiter:
    """Admits or refuses each generation of a key against every configured limit."""

    def __init__(self, text: str, redis_url: str = "") -> None:
        self.items = parse_limits(text)
        self.shared = bool(redis_url)
        storage: Storage = MemoryStorage()
        self._pool: redis.asyncio.ConnectionPool | None = None
        if redis_url and self.items:
            # our own pool, so that `close` can end its connections (limits' storage has no close)
            self._pool = redis.asyncio.ConnectionPool.from_url(redis_url)
            # limits' scheme for redis-py's `unix://` URLs is `async+redis+unix://`
            scheme, _, rest = redis_url.partition("://")
            uri = f"async+{'redis+unix' if scheme == 'unix' else scheme}://{rest}"
            storage = RedisStorage(
                uri,
                implementation="redispy",
                wrap_exceptions=True,
                key_prefix=KEY_PREFIX,
                connection_pool=self._pool,  # type: ignore[arg-type]  # limits types options as scalars; its redis-py bridge takes a pool
            )
        self._limiter = MovingWindowRateLimiter(storage)

    async def close(self) -> None:
        """Closes the connections to Redis, if any (the server is stopping)."""
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    async def admit(self, key_id: str) -> None:
        """Counts one generation for `key_id`, or raises ResourceExhausted if a limit is full
        (then nothing is counted, unless another replica took the last place between the check
        and the count)."""
        if not self.items:
            return
        try:
            for item in self.items:
                if not await self._limiter.test(item, key_id):
                    await self._refuse(item, key_id)
            for item in self.items:
                if not await self._limiter.hit(item, key_id):
                    await self._refuse(item, key_id)
        except StorageError as error:
            log.warning(
                "rate limits not checked: their store is unreachable",
                extra={"error": str(error.storage_error)},
            )

    async def _refuse(self, item: RateLimitItem, key_id: str) -> None:
        stats = await self._limiter.get_window_stats(item, key_id)
        wait = max(stats.reset_time - time.time(), 0)
        raise ResourceExhausted(
            f"rate limit of {item} reached for key {key_id}; retry in "
            f"{math.ceil(wait * 10) / 10:g} s",
            retry_after=max(wait, 0.1),
        )
