"""Rate limits per API key on generation (`LLMOPS_INFERENCE_RATE_LIMIT`, e.g. `10/second` or
`600/minute;20/second`, the `limits` library's notation, as Flask-Limiter and SlowAPI write it):
a key over its limit is refused with RESOURCE_EXHAUSTED and a retry hint for when its window
frees a place (HTTP 429 with Retry-After through the gateway). Calls without a key (auth off)
share one limit. Counted in this process, with a moving window: each Inference replica limits on
its own."""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from llmops_services.errors import ResourceExhausted


def parse_limits(text: str) -> list[RateLimitItem]:
    """The limits a setting names; ValueError naming what is wrong."""
    return list(parse_many(text)) if text.strip() else []


class KeyRateLimiter:
    """Admits or refuses each generation of a key against every configured limit."""

    def __init__(self, text: str) -> None:
        self.items = parse_limits(text)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def admit(self, key_id: str) -> None:
        """Counts one generation for `key_id`, or raises ResourceExhausted if a limit is full
        (nothing is counted then)."""
        for item in self.items:
            if not self._limiter.test(item, key_id):
                wait = max(self._limiter.get_window_stats(item, key_id).reset_time - time.time(), 0)
                raise ResourceExhausted(
                    f"rate limit of {item} reached for key {key_id}; retry in "
                    f"{math.ceil(wait * 10) / 10:g} s",
                    retry_after=max(wait, 0.1),
                )
        for item in self.items:
            self._limiter.hit(item, key_id)
