"""The model side of the HF engine: one base model, its adapters and its `BatchEngine`, stepped
by a loop that runs either on a thread of the service's process or in a child process.

`LoadedBase` (hf_engine.py) keeps the request side (calls waiting for tokens, adapter pins) and
talks to a loop through the same few methods whichever it is: `add`, `cancel`, `attach`,
`detach`, `stop`; the loop reports each step's tokens, and the requests a failed step dropped,
to its `LoopEvents`.

- **ThreadLoop** (the default): a thread runs the steps; adapter loads take turns with them
  under one lock. The forward releases the GIL inside torch's kernels, but on a small model the
  Python around it does not, so the decode loop and the event loop share one core's worth of
  GIL.
- **ProcessLoop** (`LLMOPS_INFERENCE_ENGINE_PROCESS=true`), the way vLLM's engine core runs:
  a spawned child loads the model and steps it; requests, cancels and adapter loads go to it
  over a pipe, between steps, and each step's tokens come back as one message, read by a
  thread here. The service's event loop then never waits for the GIL of a forward, at the cost
  of a pickled message per step and a second process (the child dies with its parent). A child
  that dies ends its requests with UNAVAILABLE; the next request loads the base again.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal, Protocol

from llmops_services.inference.engine import FinishReason, ModelFiles, Sampling
from llmops_services.settings import Settings

log = logging.getLogger("llmops.inference")

FailureKind = Literal["step", "bug"]
"""`step`: a forward failed (out of memory, say), the engine goes on; `bug`: anything else."""


@dataclass(frozen=True)
class RequestSpec:
    """One request as the loop takes it: plain data, so that it can cross a pipe."""

    id: str
    prompt_ids: list[int]
    sampling: Sampling
    adapter: str | None


@dataclass(frozen=True)
class StepTokens:
    """What one step produced: a token (or a finish) per request, when the step began
    (`time.monotonic`, comparable across processes), and the batch after it."""

    tokens: list[tuple[str, int | None, FinishReason | None]]
    started: float
    running: int
    waiting: int


@dataclass(frozen=True)
class LoopSettings:
    """The settings a loop needs (picklable, for the child)."""

    device: Literal["auto", "cpu", "cuda"]
    threads: int
    max_batch_size: int
    max_prefill_tokens: int | None

    @classmethod
    def of(cls, settings: Settings) -> LoopSettings:
        return cls(
            device=settings.inference_device,
            threads=settings.inference_threads,
            max_batch_size=settings.inference_max_batch_size,
            max_prefill_tokens=settings.inference_max_prefill_tokens,
        )


class AttachError(Exception):
    """An adapter's files could not be attached to the base."""


class LoopEvents(Protocol):
    """Where a loop reports; called on the loop's own thread (or its pipe reader's)."""

    def stepped(self, step: StepTokens) -> None:
        """A step's tokens."""
        ...

    def failed(self, request_ids: Sequence[str], kind: FailureKind) -> None:
        """Requests the loop dropped; the loop goes on."""
        ...

    def ended(self) -> None:
        """The loop can serve nothing more (its process died): every request is over."""
        ...


class DecodeCore:
    """One base on its device: the model (a `PeftModel` with an idle adapter, so that adapters
    attach by name to the model the `BatchEngine` was built over), its `BatchEngine`, and the
    requests in it. Not thread-safe: one loop drives it."""

    def __init__(self, files: ModelFiles, settings: LoopSettings) -> None:
        from llmops_ml import loading, placement
        from llmops_ml.batching import BatchEngine

        where = placement.choose(settings.device)
        trust = files.trust_remote_code
        tokenizer = loading.load_tokenizer(
            files.base_dir, padding_side="left", trust_remote_code=trust
        )
        model = loading.load_model(files.base_dir, where, trust_remote_code=trust)
        model.eval()
        self.context_length = int(model.config.max_position_embeddings)
        self.model = loading.with_idle_adapter(model)
        self.engine = BatchEngine(
            self.model,
            list(loading.eos_ids(model, tokenizer)),
            int(tokenizer.pad_token_id),
            max_batch_size=settings.max_batch_size,
            max_prefill_tokens=settings.max_prefill_tokens,
            device=where.device,
        )
        self.base_id = files.base_id
        self._live: set[str] = set()  # added and not yet finished
        log.info("serving %s from %s on %s", files.base_id, files.base_dir, where.device)

    def add(self, spec: RequestSpec) -> None:
        from llmops_ml import batching

        sampling = spec.sampling
        self.engine.add(
            batching.Request(
                id=spec.id,
                prompt_ids=list(spec.prompt_ids),
                sampling=batching.Sampling(
                    max_new_tokens=sampling.max_new_tokens,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    top_k=sampling.top_k,
                    repetition_penalty=sampling.repetition_penalty,
                    seed=sampling.seed,
                ),
                adapter=spec.adapter,
            )
        )
        self._live.add(spec.id)

    def cancel(self, request_id: str) -> None:
        self.engine.cancel(request_id)

    def attach(self, name: str, adapter_dir: Path) -> None:
        from llmops_ml.loading import attach_adapter

        try:
            attach_adapter(self.model, adapter_dir, name)
        except Exception as exc:  # PEFT raises many kinds on files that do not fit the base
            raise AttachError(str(exc)) from exc
        self.model.eval()
        log.info("attached adapter %s to %s", name, self.base_id)

    def detach(self, name: str) -> None:
        from llmops_ml.loading import IDLE_ADAPTER

        if self.model.active_adapter == name:  # the batch engine sets it per batch
            self.model.set_adapter(IDLE_ADAPTER)
        self.model.delete_adapter(name)
        log.info("evicted adapter %s from %s", name, self.base_id)

    def step(self) -> tuple[StepTokens, list[str], FailureKind]:
        """One step: its tokens, and the requests it dropped (with why) when it failed."""
        from llmops_ml import batching

        started = time.monotonic()
        failed: list[str] = []
        kind: FailureKind = "step"
        tokens: list[Any] = []
        try:
            tokens = self.engine.step()
        except batching.StepError as exc:  # its rows are dropped; the rest goes on
            log.exception("a decode step failed on %s", self.base_id)
            failed = list(exc.request_ids)
        except Exception:  # a bug outside the forward: end every request
            log.exception("the step loop failed on %s", self.base_id)
            failed, kind = sorted(self._live), "bug"
            for request_id in failed:
                self.engine.cancel(request_id)
        self._live.difference_update(failed)
        out = []
        for token in tokens:
            if token.finish_reason is not None:
                self._live.discard(token.request_id)
            out.append((token.request_id, token.token_id, token.finish_reason))
        report = StepTokens(out, started, int(self.engine.running), int(self.engine.waiting))
        return report, failed, kind


def _report(events: LoopEvents, step: tuple[StepTokens, list[str], FailureKind]) -> None:
    report, failed, kind = step
    if failed:
        events.failed(failed, kind)
    if report.tokens:
        events.stepped(report)


class ThreadLoop:
    """Steps a `DecodeCore` on a thread of this process."""

    def __init__(self, files: ModelFiles, settings: LoopSettings, events: LoopEvents) -> None:
        self.core = DecodeCore(files, settings)
        self.context_length = self.core.context_length
        self._events = events
        self._model_lock = threading.Lock()  # steps and adapter loads take turns
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(
            target=self._drive, name=f"inference-{files.base_id}", daemon=True
        )
        self._thread.start()

    def _drive(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self.core.engine.has_work():
                    self._wake.wait()
                if self._stopping:
                    return
            with self._model_lock:
                step = self.core.step()
            _report(self._events, step)

    @property
    def running(self) -> int:
        return int(self.core.engine.running)

    @property
    def waiting(self) -> int:
        return int(self.core.engine.waiting)

    def add(self, spec: RequestSpec) -> None:
        with self._wake:
            self.core.add(spec)
            self._wake.notify()

    def cancel(self, request_id: str) -> None:
        with self._wake:
            self.core.cancel(request_id)
            self._wake.notify()

    def attach(self, name: str, adapter_dir: Path) -> None:
        with self._model_lock:
            self.core.attach(name, adapter_dir)

    def detach(self, name: str) -> None:
        with self._model_lock:
            self.core.detach(name)

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join()


# The child process


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Asks Linux to SIGKILL this process when its parent dies, even by SIGKILL."""
    with contextlib.suppress(OSError):  # not Linux: the parent's stop still ends the child
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _child(conn: Connection, files: ModelFiles, settings: LoopSettings) -> None:
    """The engine process: loads the base, then takes commands between steps until stopped."""
    _die_with_parent()
    logging.basicConfig(level=logging.WARNING)
    from llmops_ml.placement import set_threads

    set_threads(settings.threads)
    try:
        core = DecodeCore(files, settings)
    except Exception as exc:  # the parent refuses the model with this message
        conn.send(("load_failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", core.context_length))
    while True:
        # Every command waiting goes in before the next step; with no work, wait for one.
        while conn.poll(0 if core.engine.has_work() else None):
            command = conn.recv()
            if command[0] == "stop":
                return
            _command(core, conn, command)
        report, failed, kind = core.step()
        if failed:
            conn.send(("failed", failed, kind))
        if report.tokens:
            conn.send(("step", report))


def _command(core: DecodeCore, conn: Connection, command: tuple[Any, ...]) -> None:
    kind = command[0]
    if kind == "add":
        spec: RequestSpec = command[1]
        try:
            core.add(spec)
        except Exception:  # our bookkeeping let through what the engine refuses: a bug
            log.exception("the engine refused request %s", spec.id)
            conn.send(("failed", [spec.id], "bug"))
    elif kind == "cancel":
        core.cancel(command[1])
    elif kind == "attach":
        _, call, name, adapter_dir = command
        try:
            core.attach(name, Path(adapter_dir))
            conn.send(("reply", call, None))
        except AttachError as exc:
            conn.send(("reply", call, str(exc)))
    elif kind == "detach":
        core.detach(command[1])


class LoadFailed(Exception):
    """The engine process could not load the base model."""


class ProcessLoop:
    """Steps a `DecodeCore` in a child process; see the module docstring."""

    def __init__(self, files: ModelFiles, settings: LoopSettings, events: LoopEvents) -> None:
        context = multiprocessing.get_context("spawn")  # never fork a process with threads
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=_child,
            args=(child_conn, files, settings),
            name=f"inference-{files.base_id}",
            daemon=True,
        )
        self._process.start()
        child_conn.close()
        try:
            first = self._conn.recv()
        except EOFError:
            first = ("load_failed", f"the engine process exited ({self._process.exitcode})")
        if first[0] != "ready":
            self._process.join(10)
            raise LoadFailed(first[1])
        self.context_length: int = first[1]
        self._events = events
        self._send_lock = threading.Lock()
        self._calls: dict[int, Future[str | None]] = {}
        self._call_ids = itertools.count(1)
        self.running = 0
        self.waiting = 0
        self._reader = threading.Thread(
            target=self._read, name=f"inference-pipe-{files.base_id}", daemon=True
        )
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "step":
                step: StepTokens = message[1]
                self.running, self.waiting = step.running, step.waiting
                self._events.stepped(step)
            elif kind == "failed":
                self._events.failed(message[1], message[2])
            elif kind == "reply":
                future = self._calls.pop(message[1], None)
                if future is not None:
                    future.set_result(message[2])
        for future in self._calls.values():
            future.set_result("the engine process ended")
        self._calls.clear()
        self._events.ended()

    def _send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self._conn.send(message)

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    def add(self, spec: RequestSpec) -> None:
        self._send(("add", spec))

    def cancel(self, request_id: str) -> None:
        with contextlib.suppress(OSError):  # a dead child has nothing left to cancel
            self._send(("cancel", request_id))

    def attach(self, name: str, adapter_dir: Path) -> None:
        call = next(self._call_ids)
        future: Future[str | None] = Future()
        self._calls[call] = future
        self._send(("attach", call, name, str(adapter_dir)))
        error = future.result()
        if error is not None:
            raise AttachError(error)

    def detach(self, name: str) -> None:
        self._send(("detach", name))

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._send(("stop",))
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()
        self._reader.join(10)
