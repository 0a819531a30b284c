"""The HF engine: transformers + PEFT, the embedded default.

- **One loaded copy per base model**, loaded on its first request (`llmops_ml.loading`, with the
  placement rule), wrapped once in a `PeftModel` so adapters attach to it by name.
- **Adapters** are attached on first use (`load_adapter`, named by their model id) and evicted
  least recently used (`delete_adapter`) when the count or byte budget
  (`LLMOPS_INFERENCE_MAX_ADAPTERS`, `LLMOPS_INFERENCE_MAX_ADAPTER_BYTES`) would be exceeded; an
  adapter a request is still using is never evicted (it is pinned until the engine reports the
  request finished).
- **One `BatchEngine` per base, driven by one decode loop** (`decode_loops.py`): a thread of
  this process by default, or a child process of its own (`LLMOPS_INFERENCE_ENGINE_PROCESS`).
  A step's tokens go to their requests' asyncio queues in one `loop.call_soon_threadsafe` per
  step (not one per row: each call wakes the loop through its self-pipe), so the event loop
  never waits for a forward pass and wakes once per step.
- torch and `llmops_ml` are imported when the first model loads (with the engine process, only
  in that process): a services process that gets no inference traffic never imports torch.

Why the base is wrapped with an idle adapter at load: `BatchEngine` is built once over the model
it decodes, and attaching the first adapter with `PeftModel.from_pretrained` would replace that
model with a new wrapper while requests run on the old one. The idle adapter is a rank-1 LoRA
with zero B (PEFT's default init) on one linear layer: its output is exactly zero, and base rows
never use it (the batch engine disables adapters or passes `__base__` for them). It is also what
the active adapter is set back to before the active one is evicted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

from llmops_services.errors import (
    FailedPrecondition,
    PreconditionViolation,
    ResourceExhausted,
    Unavailable,
)
from llmops_services.inference import metrics
from llmops_services.inference.adapter_cache import AdapterCache, pin_through_cancel
from llmops_services.inference.decode_loops import (
    AttachError,
    FailureKind,
    LoopSettings,
    ProcessLoop,
    RequestSpec,
    StepTokens,
    ThreadLoop,
)
from llmops_services.inference.engine import BaseState, ModelFiles, Sampling, TokenEvent
from llmops_services.inference.hf_tokenizer import HFTokenizer, load_tokenizer
from llmops_services.settings import Settings

log = logging.getLogger("llmops.inference")


@dataclass(frozen=True)
class Sink:
    """Where the driver thread hands a request's engine tokens (or the error that ended it):
    its queue, on the event loop that reads it."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Any]

    def put(self, item: Any) -> None:
        """Hands one item over from the driver thread."""
        _hand_over(self.loop, [(self.queue, item)])


def _put_all(items: Sequence[tuple[asyncio.Queue[Any], Any]]) -> None:
    for queue, item in items:
        queue.put_nowait(item)


def _hand_over(
    loop: asyncio.AbstractEventLoop, items: list[tuple[asyncio.Queue[Any], Any]]
) -> None:
    # A closed loop raises RuntimeError: nobody is waiting any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_put_all, items)


def _deliver_all(handed: Sequence[tuple[Sink, Any]]) -> None:
    """Hands a step's items over with one wake-up per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Any], Any]]] = {}
    for sink, item in handed:
        by_loop.setdefault(sink.loop, []).append((sink.queue, item))
    for loop, items in by_loop.items():
        _hand_over(loop, items)


class LoadedBase:
    """One base model's request side: the calls waiting for its tokens, its adapters' pins,
    and the decode loop that serves them (a thread here, or a child process)."""

    def __init__(self, files: ModelFiles, settings: Settings) -> None:
        loop_settings = LoopSettings.of(settings)
        self.base_id = files.base_id
        self._state_lock = threading.Lock()  # sinks and adapter pins
        self._adapter_lock = threading.Lock()  # one adapter attach or eviction at a time
        self._sinks: dict[str, tuple[Sink, str | None]] = {}
        self._submitted: dict[str, float] = {}  # request id -> when (monotonic), until a token
        self._adapters = AdapterCache(
            files.base_id,
            max_count=settings.inference_max_adapters,
            max_bytes=settings.inference_max_adapter_bytes,
            retry_after=settings.inference_retry_after_seconds,
        )
        self.alive = True
        self.loop: ThreadLoop | ProcessLoop
        if settings.inference_engine_process:
            self.loop = ProcessLoop(files, loop_settings, self)
        else:
            self.loop = ThreadLoop(files, loop_settings, self)
        self.tokenizer = load_tokenizer(
            files.base_dir, self.loop.context_length, trust_remote_code=files.trust_remote_code
        )

    # Reports of the loop (on its thread)

    def stepped(self, step: StepTokens) -> None:
        metrics.BATCH_SIZE.observe(len(step.tokens))
        handed: list[tuple[Sink, Any]] = []
        waited: list[float] = []
        with self._state_lock:
            for request_id, token_id, finish_reason in step.tokens:
                submitted = self._submitted.pop(request_id, None)
                if submitted is not None:  # its first token: admitted by this step
                    waited.append(max(step.started - submitted, 0.0))
                entry = self._sinks.get(request_id)
                if entry is None:
                    continue
                if finish_reason is not None:
                    del self._sinks[request_id]
                    self._adapters.unpin(entry[1])
                handed.append((entry[0], TokenEvent(token_id, finish_reason)))
        for seconds in waited:
            metrics.QUEUE_WAIT.observe(seconds)
        _deliver_all(handed)

    def failed(self, request_ids: Sequence[str], kind: FailureKind) -> None:
        if kind == "step":
            error: Exception = Unavailable(
                "the engine's decode step failed for this request's batch (the server log "
                "has why); retry"
            )
        else:
            error = RuntimeError(f"the step loop of {self.base_id} failed (see the server log)")
        self._end(request_ids, error)

    def ended(self) -> None:
        self.alive = False
        with self._state_lock:
            running = list(self._sinks)
        self._end(running, Unavailable(f"the engine process of {self.base_id} ended; retry"))

    def _end(self, request_ids: Sequence[str], error: BaseException) -> None:
        """Ends requests the loop has dropped, with `error`."""
        with self._state_lock:
            ended = [self._sinks.pop(r) for r in request_ids if r in self._sinks]
            for request_id in request_ids:
                self._submitted.pop(request_id, None)
            for _, adapter in ended:
                self._adapters.unpin(adapter)
        for sink, _ in ended:
            sink.put(error)

    # Requests (from the event loop)

    def submit(
        self,
        request_id: str,
        prompt_ids: Sequence[int],
        sampling: Sampling,
        adapter: str | None,
        sink: Sink,
    ) -> None:
        """Adds a request to the running batch (at the next step); its tokens go to `sink`."""
        with self._state_lock:
            self._sinks[request_id] = (sink, adapter)
            self._submitted[request_id] = time.monotonic()
        try:
            self.loop.add(RequestSpec(request_id, list(prompt_ids), sampling, adapter))
        except BaseException as exc:
            with self._state_lock:
                del self._sinks[request_id]
                self._submitted.pop(request_id, None)
                self._adapters.unpin(adapter)
            if isinstance(exc, OSError):  # the engine process is gone
                raise Unavailable(f"the engine process of {self.base_id} ended; retry") from exc
            raise

    def cancel(self, request_id: str) -> None:
        """Frees the request's slot at the next step; its adapter is unpinned then."""
        with self._state_lock:
            self._submitted.pop(request_id, None)
        self.loop.cancel(request_id)

    def stop(self) -> None:
        """Stops the loop; requests still running end with UNAVAILABLE."""
        self.loop.stop()
        with self._state_lock:
            running = list(self._sinks)
        self._end(running, Unavailable("the inference engine is stopping"))

    # Adapters

    def acquire(self, files: ModelFiles) -> str:
        """Attaches the adapter of `files` if needed (evicting the least recently used ones that
        no request uses) and pins it; returns its name. Blocking: call from a thread."""
        assert files.adapter_id is not None and files.adapter_dir is not None
        name = files.adapter_id
        with self._adapter_lock:
            with self._state_lock:
                if self._adapters.pin_if_attached(name):
                    return name
                victims = self._adapters.evict_for(files.adapter_bytes)
            try:
                for victim in victims:
                    self.loop.detach(victim)
                self.loop.attach(name, files.adapter_dir)
            except AttachError as exc:
                raise FailedPrecondition(
                    f"adapter {name} could not be loaded on {self.base_id}: {exc}",
                    violations=[
                        PreconditionViolation("ADAPTER_FILES", f"models/{name}", "not loadable")
                    ],
                ) from exc
            except OSError as exc:
                raise Unavailable(f"the engine process of {self.base_id} ended; retry") from exc
            with self._state_lock:
                self._adapters.added(name, files.adapter_bytes)
        return name

    def release(self, name: str) -> None:
        """Unpins an adapter that `acquire` pinned for a request that never reached the engine."""
        with self._state_lock:
            self._adapters.unpin(name)

    def state(self) -> BaseState:
        with self._state_lock:
            adapters = self._adapters.states()
        return BaseState(
            base_id=self.base_id,
            engine="hf",
            adapters=adapters,
            running=self.loop.running,
            waiting=self.loop.waiting,
        )


def _load_base(files: ModelFiles, settings: Settings) -> LoadedBase:
    """Loads a base; files that transformers cannot load are the model's fault, not a bug."""
    try:
        return LoadedBase(files, settings)
    except Exception as exc:  # transformers and tokenizers raise many kinds on bad files
        log.warning("could not load %s from %s: %r", files.base_id, files.base_dir, exc)
        raise FailedPrecondition(
            f"model {files.base_id} could not be loaded from its files: {exc}",
            violations=[
                PreconditionViolation("MODEL_FILES", f"models/{files.base_id}", "not loadable")
            ],
        ) from exc


class HFEngine:
    """The `Engine` over transformers + PEFT, in this process."""

    name = "hf"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._bases: dict[str, LoadedBase] = {}
        self._loading: dict[str, asyncio.Lock] = {}
        self._in_flight = 0
        self._ids = itertools.count(1)
        self._threads_set = False

    async def _base(self, files: ModelFiles) -> LoadedBase:
        base = self._bases.get(files.base_id)
        if base is not None and base.alive:
            return base
        lock = self._loading.setdefault(files.base_id, asyncio.Lock())
        async with lock:
            base = self._bases.get(files.base_id)
            if base is not None and not base.alive:  # its engine process died: load it again
                del self._bases[files.base_id]
                await asyncio.to_thread(base.stop)
                base = None
            if base is None:
                self._set_threads()
                base = await asyncio.to_thread(_load_base, files, self._settings)
                self._bases[files.base_id] = base
        return base

    def _set_threads(self) -> None:
        """Torch's threads in this process, when the forward runs here."""
        if not self._threads_set and not self._settings.inference_engine_process:
            from llmops_ml.placement import set_threads

            set_threads(self._settings.inference_threads)
            self._threads_set = True

    async def tokenizer(self, files: ModelFiles) -> HFTokenizer:
        return (await self._base(files)).tokenizer

    async def _acquire(self, base: LoadedBase, files: ModelFiles) -> str:
        return await pin_through_cancel(asyncio.to_thread(base.acquire, files), base.release)

    async def generate(
        self, files: ModelFiles, prompt_ids: Sequence[int], sampling: Sampling
    ) -> AsyncGenerator[Sequence[TokenEvent], None]:
        limit = self._settings.inference_max_queued
        if self._in_flight >= limit:
            raise ResourceExhausted(
                f"the inference engine has {limit} requests in flight, its limit; retry shortly",
                retry_after=self._settings.inference_retry_after_seconds,
            )
        self._in_flight += 1
        try:
            base = await self._base(files)
            adapter = await self._acquire(base, files) if files.adapter_id else None
            request_id = f"gen-{next(self._ids)}"
            queue: asyncio.Queue[Any] = asyncio.Queue()
            sink = Sink(asyncio.get_running_loop(), queue)
            base.submit(request_id, prompt_ids, sampling, adapter, sink)
            finished = False
            try:
                while not finished:
                    items = [await queue.get()]
                    while not queue.empty():
                        items.append(queue.get_nowait())
                    events: list[TokenEvent] = []
                    failure: BaseException | None = None
                    for item in items:
                        if isinstance(item, BaseException):
                            failure = item
                            break
                        events.append(item)
                        if item.finish_reason is not None:
                            break
                    finished = failure is not None or events[-1].finish_reason is not None
                    if events:
                        yield events
                    if failure is not None:
                        raise failure
            finally:
                if not finished:
                    base.cancel(request_id)
        finally:
            self._in_flight -= 1

    def describe(self) -> list[BaseState]:
        return [base.state() for base in self._bases.values()]

    async def close(self) -> None:
        bases = list(self._bases.values())
        self._bases.clear()
        for base in bases:
            await asyncio.to_thread(base.stop)
