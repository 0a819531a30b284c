"""Job handles end to end: a real server, a private Redis, a real worker and a tiny model.

The SDK example of the docs runs as written; a handle refreshes, waits, cancels and watches
itself; a watch whose connection is cut mid-stream (by a TCP proxy between the client and the
server) reconnects after the last event it saw, losing and repeating nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from pathlib import Path
from types import TracebackType

import pytest
from google.protobuf import json_format

import llmops
from llmops.v1 import eval_service_pb2, jobs_pb2
from llmops.v1 import training_service_pb2 as pb
from tests.conftest import ServerThread
from tests.integration.workers import FAST, TERMINAL, Workers, until

GENERATION = eval_service_pb2.GenerationConfig(max_new_tokens=8, batch_size=8)
STATE_CHANGED = jobs_pb2.JOB_EVENT_TYPE_STATE_CHANGED


def _assert_complete_log(events: list[jobs_pb2.JobEvent], logged: list[jobs_pb2.JobEvent]) -> None:
    """`events` is the whole log, in order, once each, ending at a terminal state."""
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events == logged
    assert events[-1].type == STATE_CHANGED and events[-1].state in TERMINAL


def test_the_sdk_example_runs_as_written(
    stack: ServerThread,
    workers: Workers,
    tiny_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    workers.start()
    monkeypatch.setenv("LLMOPS_ADDRESS", stack.address)
    from llmops import Client

    client = Client()
    client.models.create("llmops-tiny", str(tiny_model))
    hyperparameters = {**FAST, "max_steps": 4}
    try:
        job = client.training.create(
            method="sft",
            base_model="llmops-tiny",
            dataset="demo-sft",
            hyperparameters=hyperparameters,
            idempotency_key="run-1",
        )
        assert isinstance(job, llmops.TrainingJobHandle)
        assert job.state == jobs_pb2.JOB_STATE_QUEUED and not job.done
        handle = job
        job = job.wait(timeout=900)
        assert job is handle  # wait updates the handle and returns it
        assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job.error.message
        assert job.done and job.result_model and job.progress.step == 4
        assert "loss" in job.metrics and job.attempt == 1
        run = client.eval.create(
            model=job.result_model, dataset="demo-eval", gate=True, limit=4, generation=GENERATION
        ).wait()
        assert isinstance(run, llmops.EvalRunHandle)
        assert run.state == jobs_pb2.JOB_STATE_SUCCEEDED, run.error.message
        assert run.model == job.result_model and run.gate and run.gates
        assert run.progress.step == 4 and run.report_uri.startswith("store://")

        # The same idempotency key answers the same job; a handle reads like the message.
        again = client.training.create(
            method="sft",
            base_model="llmops-tiny",
            dataset="demo-sft",
            hyperparameters=hyperparameters,
            idempotency_key="run-1",
        )
        assert again.id == job.id and again == job and again == job.message
        assert isinstance(job.message, pb.TrainingJob)
        as_json = json_format.MessageToDict(job.message, preserving_proto_field_name=True)
        assert as_json["result_model"] == job.result_model and as_json["state"].endswith(
            "SUCCEEDED"
        )
        assert job.resolved_hyperparameters.max_steps == 4  # proxied, typed
        assert job.HasField("end_time")  # any message method, through __getattr__
        assert repr(job) == f"TrainingJobHandle(id={job.id!r}, state='succeeded')"
        with pytest.raises(AttributeError, match="read-only"):
            job.output_name = "renamed"  # type: ignore[misc]
        with pytest.raises(AttributeError):
            _ = job.no_such_field
        assert [j.id for j in client.training.list()] == [job.id]
        assert all(isinstance(j, llmops.TrainingJobHandle) for j in client.training.list())
        assert [r.id for r in client.eval.list()] == [run.id]
        assert [c.step for c in job.checkpoints()] == [4]
        checkpoint = job.register_checkpoint(4, output_name="tiny-step-4")
        assert checkpoint.name == "tiny-step-4" and checkpoint.origin.training_job == job.id
        assert [c.registered_model for c in job.checkpoints()] == [checkpoint.id]
        with pytest.raises(llmops.FailedPrecondition):
            job.cancel()  # it has ended
    finally:
        client.close()


def test_refresh_watch_and_cancel_through_the_handle(
    stack: ServerThread, workers: Workers, tiny_model: Path
) -> None:
    workers.start()
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        job = client.training.create(
            "sft", "tiny", "demo-sft", hyperparameters={**FAST, "max_steps": 6, "save_steps": 3}
        )
        watched = list(job.watch())  # live, from the queued job to its end
        assert job.state == jobs_pb2.JOB_STATE_QUEUED  # watching does not touch the message
        assert job.refresh() is job and job.state == jobs_pb2.JOB_STATE_SUCCEEDED
        _assert_complete_log(watched, list(job.events()))
        states = [e.state for e in watched if e.type == STATE_CHANGED]
        assert states == [
            jobs_pb2.JOB_STATE_QUEUED,
            jobs_pb2.JOB_STATE_RUNNING,
            jobs_pb2.JOB_STATE_SUCCEEDED,
        ]
        steps = [e.step for e in watched if e.type == jobs_pb2.JOB_EVENT_TYPE_METRICS and e.step]
        assert steps == sorted(steps) and steps[-1] == 6
        assert [e.sequence for e in job.watch(after_sequence=len(watched) - 2)] == [
            len(watched) - 1,
            len(watched),
        ]
        long = client.training.create(
            "sft", "tiny", "demo-sft", hyperparameters={**FAST, "max_steps": 5000}
        )
        with pytest.raises(TimeoutError, match="did not finish within"):
            long.wait(timeout=0.5, poll_interval=0.1)
        until(lambda: long.refresh().progress.step >= 1, 240, "training steps")
        assert long.cancel() is long
        assert long.state in (jobs_pb2.JOB_STATE_CANCELLING, jobs_pb2.JOB_STATE_CANCELLED)
        assert long.wait(timeout=120, poll_interval=0.2).state == jobs_pb2.JOB_STATE_CANCELLED
        assert not long.result_model and long.progress.step < 5000
        ended = list(long.watch())
        assert ended[-1].state == jobs_pb2.JOB_STATE_CANCELLED


class CuttableProxy:
    """A TCP proxy in front of the server whose connections the test cuts for real.

    While `refusing`, it accepts and at once closes new connections, as a server that is down
    behind a load balancer does; `accepted` and `refused` count what reached it.
    """

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.refusing = threading.Event()
        self.accepted = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return  # closed
            if self.refusing.is_set():
                with self._lock:
                    self.refused += 1
                downstream.close()
                continue
            upstream = socket.create_connection(self.target)
            with self._lock:
                self.accepted += 1
                self._open += [downstream, upstream]
            threading.Thread(target=self._pump, args=(downstream, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, downstream), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drops every open connection and refuses new ones until `restore()`."""
        self.refusing.set()
        with self._lock:
            sockets, self._open = self._open, []
        for end in sockets:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def restore(self) -> None:
        self.refusing.clear()

    def __enter__(self) -> CuttableProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.listener.close()
        self.cut()


def _restore_when(proxy: CuttableProxy, ready: threading.Event, problems: list[str]) -> None:
    """Lets connections through again once the watch has failed to reconnect and the job has
    moved on (`ready`), so the resumed stream must skip what was seen and deliver the rest."""
    try:
        until(lambda: proxy.refused >= 1 and ready.is_set(), 60, "a refused reconnect")
    except AssertionError as err:
        problems.append(str(err))
    proxy.restore()


class CutWhileRunning:
    """Watches a job through `proxy` and cuts the connection once the job runs, keeping it cut
    until the job has recorded more events than the watch has seen (read through `direct`)."""

    def __init__(self, proxy: CuttableProxy, direct: llmops.Client, job_id: str) -> None:
        self.proxy = proxy
        self.direct = direct
        self.job_id = job_id
        self.seen: list[jobs_pb2.JobEvent] = []
        self.problems: list[str] = []
        self._moved_on = threading.Event()
        self._restorer = threading.Thread(
            target=_restore_when, args=(proxy, self._moved_on, self.problems)
        )

    def saw(self, event: jobs_pb2.JobEvent) -> None:
        """Called for each watched event; blocks while the watch is cut off."""
        self.seen.append(event)
        if event.type == STATE_CHANGED and event.state == jobs_pb2.JOB_STATE_RUNNING:
            self.proxy.cut()
            self._restorer.start()
            until(
                lambda: len(list(self.direct.training.events(self.job_id))) > len(self.seen) + 1,
                240,
                "events recorded while the watch is cut off",
            )
            self._moved_on.set()

    def check(self) -> None:
        """The watch failed, reconnected, and saw the whole log once, to the job's success."""
        self._restorer.join()
        assert self.problems == []
        assert self.proxy.refused >= 1 and self.proxy.accepted >= 2
        _assert_complete_log(self.seen, list(self.direct.training.events(self.job_id)))
        assert self.seen[-1].state == jobs_pb2.JOB_STATE_SUCCEEDED


RECONNECT_JOB = {**FAST, "max_steps": 8, "save_steps": 4}


def test_a_watch_reconnects_after_a_cut_connection_without_losing_or_repeating_events(
    stack: ServerThread, workers: Workers, tiny_model: Path
) -> None:
    workers.start()
    with (
        llmops.Client(stack.address, timeout=30) as direct,
        CuttableProxy(stack.address) as proxy,
        llmops.Client(proxy.address, timeout=30) as proxied,
    ):
        direct.models.create("tiny", str(tiny_model))
        job = proxied.training.create("sft", "tiny", "demo-sft", hyperparameters=RECONNECT_JOB)
        cut = CutWhileRunning(proxy, direct, job.id)
        for event in job.watch():
            cut.saw(event)
        cut.check()


async def test_an_async_watch_reconnects_after_a_cut_connection(
    stack: ServerThread, workers: Workers, tiny_model: Path
) -> None:
    """The async face of the test above: its reconnect sleeps and closes are its own."""
    workers.start()
    with (
        llmops.Client(stack.address, timeout=30) as direct,
        CuttableProxy(stack.address) as proxy,
    ):
        async with llmops.AsyncClient(proxy.address, timeout=30) as proxied:
            direct.models.create("tiny", str(tiny_model))
            job = await proxied.training.create(
                "sft", "tiny", "demo-sft", hyperparameters=RECONNECT_JOB
            )
            cut = CutWhileRunning(proxy, direct, job.id)
            async for event in job.watch():
                await asyncio.to_thread(cut.saw, event)
            cut.check()


def test_a_watch_gives_up_after_its_reconnects(stack: ServerThread, tiny_model: Path) -> None:
    with (
        CuttableProxy(stack.address) as proxy,
        llmops.Client(proxy.address, timeout=10) as client,
    ):
        client.models.create("tiny", str(tiny_model))
        job = client.training.create("sft", "tiny", "demo-sft")  # no worker: stays queued
        with pytest.raises(ValueError, match="max_reconnects must be 0 or more"):
            job.watch(max_reconnects=-1)
        events = job.watch(max_reconnects=2)
        first = next(events)
        assert first.sequence == 1 and first.state == jobs_pb2.JOB_STATE_QUEUED
        proxy.cut()  # and never restored
        with pytest.raises(llmops.Unavailable):
            next(events)
        assert proxy.refused >= 2  # it tried again before giving up


async def test_an_async_watch_gives_up_after_its_reconnects(
    stack: ServerThread, tiny_model: Path
) -> None:
    """The async face of the test above: the same reconnects, then the same typed error."""
    with CuttableProxy(stack.address) as proxy:
        async with llmops.AsyncClient(proxy.address, timeout=10) as client:
            await client.models.create("tiny", str(tiny_model))
            job = await client.training.create("sft", "tiny", "demo-sft")
            with pytest.raises(ValueError, match="max_reconnects must be 0 or more"):
                job.watch(max_reconnects=-1)
            events = job.watch(max_reconnects=2)
            first = await anext(events)
            assert first.sequence == 1 and first.state == jobs_pb2.JOB_STATE_QUEUED
            proxy.cut()
            with pytest.raises(llmops.Unavailable):
                await anext(events)
            assert proxy.refused >= 2


def test_pause_and_resume_through_the_handle(stack: ServerThread, tiny_model: Path) -> None:
    """No worker runs, so the job stays queued: pausing holds it at once."""
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        job = client.training.create("sft", "tiny", "demo-sft")
        assert job.pause() is job and job.state == jobs_pb2.JOB_STATE_PAUSED
        assert job.refresh().state == jobs_pb2.JOB_STATE_PAUSED
        assert job.resume() is job
        assert job.state == jobs_pb2.JOB_STATE_QUEUED and job.attempt == 2
        with pytest.raises(llmops.FailedPrecondition, match="only a paused job can be resumed"):
            job.resume()
        assert job.state == jobs_pb2.JOB_STATE_QUEUED  # a refused call leaves the handle as it was
        assert job.cancel().state == jobs_pb2.JOB_STATE_CANCELLED
        states = [e.state for e in job.watch() if e.type == STATE_CHANGED]
        assert states == [
            jobs_pb2.JOB_STATE_QUEUED,
            jobs_pb2.JOB_STATE_PAUSED,
            jobs_pb2.JOB_STATE_QUEUED,
            jobs_pb2.JOB_STATE_CANCELLED,
        ]
        assert job.checkpoints() == ()
        with pytest.raises(llmops.NotFound, match="no checkpoint at step 3"):
            job.register_checkpoint(3)


async def test_async_pause_and_resume(stack: ServerThread, tiny_model: Path) -> None:
    async with llmops.AsyncClient(stack.address, timeout=30) as client:
        await client.models.create("tiny", str(tiny_model))
        job = await client.training.create("sft", "tiny", "demo-sft")
        assert await job.pause() is job and job.state == jobs_pb2.JOB_STATE_PAUSED
        assert await job.resume() is job and job.state == jobs_pb2.JOB_STATE_QUEUED
        assert (await job.cancel()).state == jobs_pb2.JOB_STATE_CANCELLED
        assert await job.wait(timeout=5) is job
        assert await job.checkpoints() == ()


async def test_async_handles(stack: ServerThread, workers: Workers, tiny_model: Path) -> None:
    workers.start()
    async with llmops.AsyncClient(stack.address, timeout=30) as client:
        await client.models.create("tiny", str(tiny_model))
        job = await client.training.create(
            "sft", "tiny", "demo-sft", hyperparameters={**FAST, "max_steps": 4}
        )
        assert isinstance(job, llmops.AsyncTrainingJobHandle)
        watched = [event async for event in job.watch()]
        assert await job.refresh() is job and job.state == jobs_pb2.JOB_STATE_SUCCEEDED
        _assert_complete_log(watched, [e async for e in job.events()])
        assert await job.wait(timeout=5) is job and job.result_model
        assert [c.step for c in await job.checkpoints()] == [4]
        registered = await job.register_checkpoint(4)
        assert registered.origin.training_job == job.id and registered.origin.checkpoint_step == 4
        listed = [j async for j in client.training.list()]
        assert listed == [job] and isinstance(listed[0], llmops.AsyncTrainingJobHandle)
        assert (await client.training.get(job.id)).result_model == job.result_model
        with pytest.raises(llmops.FailedPrecondition):
            await job.cancel()

        run = await client.eval.create(
            job.result_model, "demo-eval", limit=2, generation=GENERATION
        )
        assert isinstance(run, llmops.AsyncEvalRunHandle)
        assert (
            await run.wait(timeout=300, poll_interval=0.5)
        ).state == jobs_pb2.JOB_STATE_SUCCEEDED
        assert {m.task for m in run.metrics} >= {"all"}

        queued = await client.training.create(
            "sft", "tiny", "demo-sft", hyperparameters={**FAST, "max_steps": 5000}
        )
        await queued.cancel()
        assert queued.state in (jobs_pb2.JOB_STATE_CANCELLING, jobs_pb2.JOB_STATE_CANCELLED)
        await queued.wait(timeout=120, poll_interval=0.2)
        assert queued.state == jobs_pb2.JOB_STATE_CANCELLED
        assert [e async for e in queued.watch()][-1].state == jobs_pb2.JOB_STATE_CANCELLED
