"""The group gate: requests of one group run together, the other group waits its turn in
arrival order, a drained group hands the turn to every waiter of the next, and a cancelled
waiter neither holds a place nor blocks the line."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from llmops_services.inference.group_gate import GroupGate


class Request:
    """A task that holds its place in the gate until `finish` is called."""

    def __init__(self, gate: GroupGate, group: Hashable, log: list[str], name: str) -> None:
        self.admitted = asyncio.Event()
        self._done = asyncio.Event()
        self._log = log
        self.name = name
        self.task = asyncio.create_task(self._run(gate, group))

    async def _run(self, gate: GroupGate, group: Hashable) -> None:
        async with gate.enter(group):
            self._log.append(self.name)
            self.admitted.set()
            await self._done.wait()

    async def finish(self) -> None:
        self._done.set()
        await self.task


async def settle() -> None:
    """Lets every task that can run do so (the gate wakes waiters through futures)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_group_runs_many_at_once() -> None:
    gate = GroupGate()
    log: list[str] = []
    requests = [Request(gate, "lora", log, f"r{i}") for i in range(3)]
    await settle()
    assert log == ["r0", "r1", "r2"]
    assert (gate.running, gate.waiting) == (3, 0)
    for request in requests:
        await request.finish()
    assert (gate.running, gate.waiting) == (0, 0)


async def test_other_group_waits_and_then_goes_in_together() -> None:
    gate = GroupGate()
    log: list[str] = []
    base = Request(gate, "base", log, "base")
    await settle()
    lora = [Request(gate, "lora", log, f"lora{i}") for i in range(2)]
    await settle()
    assert log == ["base"]
    assert (gate.running, gate.waiting) == (1, 2)
    await base.finish()
    await settle()
    assert log == ["base", "lora0", "lora1"]
    assert (gate.running, gate.waiting) == (2, 0)
    for request in lora:
        await request.finish()


async def test_newcomers_of_the_running_group_queue_behind_a_waiter() -> None:
    """Fair by arrival: a steady stream of base requests cannot starve an adapter request."""
    gate = GroupGate()
    log: list[str] = []
    first = Request(gate, "base", log, "base1")
    await settle()
    lora = Request(gate, "lora", log, "lora")
    await settle()
    late = Request(gate, "base", log, "base2")
    await settle()
    assert log == ["base1"]
    await first.finish()
    await settle()
    assert log == ["base1", "lora"]  # base2 came after lora, so it waits for lora's group
    await lora.finish()
    await settle()
    assert log == ["base1", "lora", "base2"]
    await late.finish()
    assert (gate.running, gate.waiting) == (0, 0)


async def test_cancelled_waiter_leaves_the_line_and_unblocks_those_behind() -> None:
    gate = GroupGate()
    log: list[str] = []
    running = Request(gate, "base", log, "base1")
    await settle()
    waiter = Request(gate, "lora", log, "lora")
    await settle()
    behind = Request(gate, "base", log, "base2")  # held back only by the lora waiter
    await settle()
    assert log == ["base1"]
    waiter.task.cancel()
    await asyncio.gather(waiter.task, return_exceptions=True)
    await settle()
    assert log == ["base1", "base2"]
    assert (gate.running, gate.waiting) == (2, 0)
    await running.finish()
    await behind.finish()
    assert (gate.running, gate.waiting) == (0, 0)


async def test_waiter_cancelled_as_it_is_admitted_gives_its_place_back() -> None:
    gate = GroupGate()
    log: list[str] = []
    release = asyncio.Event()
    waiter: Request | None = None

    async def base_then_cancel_waiter() -> None:
        async with gate.enter("base"):
            log.append("base")
            await release.wait()
        # Leaving admitted the waiter; cancelling it before it resumes is the race at hand.
        assert waiter is not None
        waiter.task.cancel()

    running = asyncio.create_task(base_then_cancel_waiter())
    await settle()
    waiter = Request(gate, "lora", log, "lora")
    await settle()
    release.set()
    await running
    await asyncio.gather(waiter.task, return_exceptions=True)
    assert waiter.task.cancelled()
    assert log == ["base"]
    assert (gate.running, gate.waiting) == (0, 0)
    after = Request(gate, "base", log, "again")
    await settle()
    assert log == ["base", "again"]
    await after.finish()


async def test_an_error_inside_the_block_frees_the_place() -> None:
    gate = GroupGate()

    async def failing() -> None:
        async with gate.enter("base"):
            raise ValueError("the request failed")

    results = await asyncio.gather(failing(), return_exceptions=True)
    assert isinstance(results[0], ValueError)
    assert (gate.running, gate.waiting) == (0, 0)
