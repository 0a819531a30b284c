"""Auto-pagination over AIP-style `page_token` / `next_page_token` list calls."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

Page = tuple[Sequence[T], str]


def _check_progress(seen: set[str], token: str) -> None:
    """Stops a server that hands back a token it already gave from looping forever."""
    if token in seen:
        raise RuntimeError(f"the server repeated page token {token!r}; stopping pagination")
    seen.add(token)


def paginate(fetch: Callable[[str], Page[T]]) -> Iterator[T]:
    """Yields every item of every page; `fetch(token)` returns (items, next_page_token)."""
    token = ""
    seen: set[str] = set()
    while True:
        items, token = fetch(token)
        yield from items
        if not token:
            return
        _check_progress(seen, token)


async def apaginate(fetch: Callable[[str], Awaitable[Page[T]]]) -> AsyncIterator[T]:
    """The async twin of `paginate`."""
    token = ""
    seen: set[str] = set()
    while True:
        items, token = await fetch(token)
        for item in items:
            yield item
        if not token:
            return
        _check_progress(seen, token)
