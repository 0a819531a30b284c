"""Which adapters are attached to one base, least recently used first, and which are in use.

Both engines keep one per base: the HF engine attaches adapters to its PeftModel, the vLLM
engine loads them into the vLLM server. This class is only the bookkeeping (the budget, the
order, the pins and the cache metrics); the engine does the attaching and detaching, in the
order this class tells it. It is not thread-safe: the HF engine holds its state lock around
every call, the vLLM engine calls it from the event loop only.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from llmops_services.errors import ResourceExhausted
from llmops_services.inference import metrics
from llmops_services.inference.engine import AdapterState


@dataclass
class _Entry:
    size: int
    pins: int


class AdapterCache:
    """An LRU of attached adapters under a count and byte budget; a pinned adapter (one a
    request is using) is never chosen for eviction."""

    def __init__(self, base_id: str, *, max_count: int, max_bytes: int, retry_after: float) -> None:
        self.base_id = base_id
        self._max_count = max_count
        self._max_bytes = max_bytes
        self._retry_after = retry_after
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def pin_if_attached(self, name: str) -> bool:
        """Pins an attached adapter and marks it most recently used (a cache hit); False when
        it is not attached (a miss: the caller makes room, attaches it and calls `added`)."""
        entry = self._entries.get(name)
        if entry is None:
            metrics.ADAPTER_CACHE_MISSES.inc()
            return False
        entry.pins += 1
        self._entries.move_to_end(name)
        metrics.ADAPTER_CACHE_HITS.inc()
        return True

    def evict_for(self, size: int) -> list[str]:
        """Takes out least recently used unpinned adapters until one of `size` bytes fits, and
        returns them for the caller to detach. `ResourceExhausted` (with a retry hint) when
        every attached adapter is pinned and there is still no room."""
        victims: list[str] = []
        while self._entries and (
            len(self._entries) >= self._max_count
            or sum(e.size for e in self._entries.values()) + size > self._max_bytes
        ):
            victim = next((n for n, e in self._entries.items() if e.pins <= 0), None)
            if victim is None:
                raise ResourceExhausted(
                    f"every adapter attached to {self.base_id} is in use by a running request",
                    retry_after=self._retry_after,
                )
            del self._entries[victim]
            victims.append(victim)
            metrics.ADAPTER_CACHE_EVICTIONS.inc()
        self._gauge()
        return victims

    def added(self, name: str, size: int) -> None:
        """Records an adapter the caller has just attached, pinned once for its request."""
        self._entries[name] = _Entry(size, 1)
        self._gauge()

    def forget(self, name: str) -> None:
        """Drops an adapter the engine found detached behind our back (a restarted vLLM)."""
        if self._entries.pop(name, None) is not None:
            self._gauge()

    def unpin(self, name: str | None) -> None:
        """Unpins an adapter a finished (or never started) request held; None is a no-op."""
        entry = self._entries.get(name) if name is not None else None
        if entry is not None:
            entry.pins -= 1

    def states(self) -> list[AdapterState]:
        """The attached adapters, least recently used first."""
        return [
            AdapterState(adapter_id=name, bytes=e.size, in_use=max(e.pins, 0))
            for name, e in self._entries.items()
        ]

    def _gauge(self) -> None:
        metrics.LOADED_ADAPTERS.labels(self.base_id).set(len(self._entries))


async def pin_through_cancel(attach: Awaitable[str], release: Callable[[str], None]) -> str:
    """Awaits an attach that pins its adapter, without interrupting it: a caller cancelled
    meanwhile (its deadline passed, its client left) leaves the attach to finish, and the pin
    it took is released then, so that a cancelled call never leaves an adapter pinned."""
    task = asyncio.ensure_future(attach)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(
            lambda done: (
                release(done.result())
                if not done.cancelled() and done.exception() is None
                else None
            )
        )
        raise
