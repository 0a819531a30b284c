"""Continuous batching over one base model whose rows each use their own LoRA adapter.

transformers' continuous batching manager ignores PEFT's `adapter_names`, so the step loop is
ours. It is TGI's causal-LM batch kept small: one left-padded batch of running rows, with its
attention mask and KV cache (a `DynamicCache`, tensors [rows, heads, columns, head_dim]).

- A step first drops cancelled rows, then runs one decode forward for the running rows, then
  prefills the requests it admits (up to `max_batch_size` rows) as a left-padded group of their
  own, so that every row, old or new, gets exactly one token per step.
- The new group joins by concatenation: the shorter of the two caches (and masks) is padded with
  zeros on the left, where the mask hides them, and the two are stacked along the batch.
- Finished rows leave by index selection; the columns that only padding still uses are cut off on
  the left, so the batch is never wider than its longest row.
- Position ids follow the mask (a row's padding does not shift it), and the pending token of each
  row is not in the cache yet; so a row computes what it would alone: greedy answers equal plain
  `model.generate`'s, batched or not.
- Adapters: on a `PeftModel` a forward over rows of several adapters adds each row's LoRA delta
  with the adapters' weights stacked per layer (`stacked_lora`; PEFT's `adapter_names`, one per
  row, "__base__" for none, where they cannot be stacked); a batch on a single adapter runs it
  active, an all-base batch with the adapter layers disabled.

A service drives it from one worker thread (`add` and `cancel` come from any thread):

    engine = BatchEngine(peft_model, eos_ids, pad_id, max_batch_size=32)
    engine.add(Request("r1", prompt_ids, Sampling(max_new_tokens=64), adapter="support-v3"))
    while engine.has_work():
        for token in engine.step():  # one token per running request, finish_reason on its last
            deliver(token)
"""

from __future__ import annotations

import inspect
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from llmops_ml.sampling import Sampling, choose_tokens, generator_for
from llmops_ml.stacked_lora import StackedLora

__all__ = [
    "BASE",
    "BatchEngine",
    "FinishReason",
    "Request",
    "Sampling",
    "StepError",
    "Token",
    "UnknownAdapterError",
]

T = TypeVar("T")

BASE = "__base__"
"""PEFT's adapter name for "no adapter" in `adapter_names`."""

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class Request:
    """One generation: prompt token ids, how to sample, and the adapter (None = the base)."""

    id: str
    prompt_ids: list[int]
    sampling: Sampling
    adapter: str | None = None
    """A name loaded on the model (`PeftModel.load_adapter`); None = the base model."""


@dataclass(frozen=True)
class Token:
    """One new token of a request; `finish_reason` is set on its last one."""

    request_id: str
    token_id: int | None
    """None only on a "cancelled" finish."""
    finish_reason: FinishReason | None


class UnknownAdapterError(LookupError):
    """A request names an adapter that is not loaded on the engine's model."""


class StepError(RuntimeError):
    """A step's forward failed (device out of memory, a broken model); the requests it was
    serving (`request_ids`) are dropped and get no further Token. Waiting requests stay queued,
    and the engine can go on stepping."""

    def __init__(self, request_ids: Sequence[str]) -> None:
        super().__init__(f"a batch step failed; dropped requests {sorted(request_ids)}")
        self.request_ids = tuple(request_ids)


@dataclass
class _Row:
    request: Request
    generator: torch.Generator | None
    history: list[int]
    """Prompt and answer ids so far (the repetition penalty's input)."""
    pending: int = -1
    """The last chosen token, not yet in the cache: the next decode's input."""
    generated: int = 0

    @property
    def adapter_name(self) -> str:
        return self.request.adapter or BASE


@dataclass
class _Batch:
    """Running rows with their left-padded attention mask [rows, columns] and KV cache."""

    rows: list[_Row]
    mask: torch.Tensor
    cache: DynamicCache
    layers: list[DynamicLayer] = field(init=False)

    def __post_init__(self) -> None:
        layers = list(self.cache.layers)
        if not all(type(layer) is DynamicLayer for layer in layers):
            kinds = sorted({type(layer).__name__ for layer in layers})
            raise NotImplementedError(f"only full-attention caches can be batched, not {kinds}")
        self.layers = layers  # type: ignore[assignment]

    def select(self, keep: list[int]) -> _Batch | None:
        """The batch of the rows at `keep` (None when none is left), padding-only columns cut."""
        if not keep:
            return None
        if len(keep) == len(self.rows):
            return self
        index = torch.tensor(keep, device=self.mask.device)
        mask = self.mask[index]
        first = int(mask.any(0).long().argmax())  # the first column a row still uses
        for layer in self.layers:
            keys, values = _kv(layer)
            layer.keys, layer.values = keys[index, :, first:], values[index, :, first:]
        self.rows = [self.rows[i] for i in keep]
        self.mask = mask[:, first:]
        return self

    def extend(self, other: _Batch) -> _Batch:
        """This batch with `other`'s rows after its own; the narrower one is padded on the left."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.layers, other.layers, strict=True):
            (keys, values), (their_keys, their_values) = _kv(mine), _kv(theirs)
            mine.keys = torch.cat([_left_pad(keys, width), _left_pad(their_keys, width)])
            mine.values = torch.cat([_left_pad(values, width), _left_pad(their_values, width)])
        self.mask = torch.cat([_left_pad(self.mask, width), _left_pad(other.mask, width)])
        self.rows = self.rows + other.rows
        return self


def _kv(layer: DynamicLayer) -> tuple[torch.Tensor, torch.Tensor]:
    """A filled layer's keys and values [rows, heads, columns, dim]."""
    if layer.keys is None or layer.values is None:
        raise RuntimeError("a cache layer was not filled by the forward")
    return layer.keys, layer.values


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """`tensor` padded with zeros on the left of its sequence dimension to `width` columns:
    dimension 1 of a mask [rows, columns], 2 of keys and values [rows, heads, columns, dim]."""
    dim = 1 if tensor.dim() == 2 else 2
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def _model_device(model: Any) -> torch.device:
    device: torch.device = next(model.parameters()).device
    return device


class BatchEngine:
    """A continuous-batching step loop: requests wait in a queue, join the running batch at the
    next step (prefill, then decode), and leave it when they finish or are cancelled.

    `step` runs on one thread (the service's worker); `add`, `cancel` and the counters may be
    called from any other, under a lock. The model must be in eval mode, and the engine owns it:
    it sets a PeftModel's active adapter as the batch needs. A request's adapter must stay loaded
    while the request is in flight (`adapters_in_flight`).
    """

    def __init__(
        self,
        model: Any,
        eos_ids: Sequence[int],
        pad_id: int,
        *,
        max_batch_size: int = 32,
        device: torch.device | None = None,
        max_prefill_tokens: int | None = None,
    ) -> None:
        """`max_prefill_tokens` caps the prompt tokens one step prefills (None = no cap; the
        first waiting request always goes in): a step that admits long prompts delays every
        running row's next token, and this bounds by how much."""
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, not {max_batch_size}")
        if max_prefill_tokens is not None and max_prefill_tokens < 1:
            raise ValueError(f"max_prefill_tokens must be at least 1, not {max_prefill_tokens}")
        self.model = model
        self.eos_ids = frozenset(eos_ids)
        self.pad_id = pad_id
        self.max_batch_size = max_batch_size
        self.max_prefill_tokens = max_prefill_tokens
        self.device = device if device is not None else _model_device(model)
        self._peft = _is_peft(model)
        self._stacked = StackedLora(model) if self._peft else None
        base = model.get_base_model() if self._peft else model
        self._logits_to_keep = "logits_to_keep" in inspect.signature(base.forward).parameters
        embeddings = model.get_input_embeddings()  # a LoRA on them wraps the base layer
        self._vocab_size: int = getattr(embeddings, "base_layer", embeddings).num_embeddings
        self._lock = threading.Lock()
        self._waiting: deque[Request] = deque()
        self._cancelled: set[str] = set()
        self._in_flight: dict[str, Request] = {}
        self._batch: _Batch | None = None
        self._calls: list[tuple[Callable[[Any], Any], Future[Any]]] = []

    # --- called from any thread -------------------------------------------------------------

    def add(self, request: Request) -> None:
        """Queues `request`; it joins the running batch at a following step.

        Raises ValueError for an empty prompt, a token id outside the vocabulary, an id
        already in flight or a DoRA adapter, and UnknownAdapterError for an adapter the model
        does not have.
        """
        if not request.prompt_ids:
            raise ValueError(f"request {request.id!r} has an empty prompt")
        if not all(0 <= token < self._vocab_size for token in request.prompt_ids):
            raise ValueError(
                f"request {request.id!r} has token ids outside [0, {self._vocab_size})"
            )
        if request.adapter is not None and request.adapter not in self.adapter_names():
            raise UnknownAdapterError(f"adapter {request.adapter!r} is not loaded")
        if request.adapter is not None and self.model.peft_config[request.adapter].use_dora:
            # PEFT refuses adapter_names with DoRA, so its rows could share no mixed batch
            raise ValueError(f"adapter {request.adapter!r} is a DoRA adapter: not batchable")
        with self._lock:
            if request.id in self._in_flight:
                raise ValueError(f"request {request.id!r} is already in flight")
            self._in_flight[request.id] = request
            self._waiting.append(request)

    def cancel(self, request_id: str) -> None:
        """The request leaves at the next step (its slot freed) with a "cancelled" Token.

        Unknown or finished requests are ignored: a cancel may race with the last token.
        """
        with self._lock:
            if request_id in self._in_flight:
                self._cancelled.add(request_id)

    @property
    def running(self) -> int:
        batch = self._batch
        return 0 if batch is None else len(batch.rows)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def has_work(self) -> bool:
        with self._lock:
            return bool(self._waiting or self._cancelled or self._calls) or self._batch is not None

    def call_between_steps(self, fn: Callable[[Any], T]) -> Future[T]:
        """Runs `fn(model)` on the step thread before the next step's forwards; its result or
        exception comes back in the Future.

        What changes the model (loading or deleting an adapter) must not run while a forward
        does. Requests whose adapter is gone afterwards finish "cancelled" at that step.
        """
        future: Future[T] = Future()
        with self._lock:
            self._calls.append((fn, future))
        return future

    def adapter_names(self) -> frozenset[str]:
        """The adapters loaded on the model (none on a plain model)."""
        return frozenset(self.model.peft_config) if self._peft else frozenset()

    def adapters_in_flight(self) -> frozenset[str]:
        """Adapters that waiting or running requests use: not to be unloaded yet."""
        with self._lock:
            requests = list(self._in_flight.values())
        return frozenset(r.adapter for r in requests if r.adapter is not None)

    # --- the step loop (one thread) ---------------------------------------------------------

    def step(self) -> list[Token]:
        """One scheduling step: retire cancelled rows, decode one token for every running row,
        admit and prefill waiting requests up to `max_batch_size`, retire finished rows.

        Returns the new tokens (each row's, then a Token per cancelled request). Raises
        StepError when a forward fails.
        """
        self._run_calls()
        with self._lock:
            cancelled, self._cancelled = self._cancelled, set()
            if self._peft:  # requests whose adapter was deleted under them
                loaded = self.adapter_names()
                cancelled |= {
                    r.id for r in self._in_flight.values() if r.adapter and r.adapter not in loaded
                }
            dropped = [r for r in self._waiting if r.id in cancelled]
            self._waiting = deque(r for r in self._waiting if r.id not in cancelled)
        out = [Token(r.id, None, "cancelled") for r in dropped]
        if self._batch is not None and cancelled:
            rows = self._batch.rows
            out += [
                Token(r.request.id, None, "cancelled") for r in rows if r.request.id in cancelled
            ]
            keep = [i for i, r in enumerate(rows) if r.request.id not in cancelled]
            self._batch = self._batch.select(keep)
        admitted: list[Request] = []
        try:
            with torch.inference_mode():
                if self._batch is not None:
                    self._choose(self._batch.rows, self._decode(self._batch))
                admitted = self._admit()
                if admitted:
                    group = self._prefill(admitted)
                    self._batch = group if self._batch is None else self._batch.extend(group)
        except Exception as error:  # the cache may be half-updated: drop the batch
            failed = [r.request.id for r in self._batch.rows] if self._batch else []
            failed += [r.id for r in admitted]
            self._batch = None
            with self._lock:
                for request_id in failed:
                    self._in_flight.pop(request_id, None)
            raise StepError(failed) from error
        if self._batch is not None:
            out = self._emit(self._batch) + out
        with self._lock:
            for token in out:
                if token.finish_reason is not None:
                    self._in_flight.pop(token.request_id, None)
                    self._cancelled.discard(token.request_id)  # a cancel that came too late
        return out

    def _run_calls(self) -> None:
        with self._lock:
            calls, self._calls = self._calls, []
        for fn, future in calls:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(self.model))
                except Exception as error:
                    future.set_exception(error)
        loaded = self.adapter_names()
        if calls and loaded and self.model.active_adapter not in loaded:
            # PEFT leaves a deleted active adapter as the PeftModel's, and its forward then fails
            self.model.set_adapter(min(loaded))

    def _admit(self) -> list[Request]:
        """Waiting requests in arrival order, while slots and the prefill budget allow."""
        free = self.max_batch_size - self.running
        budget = self.max_prefill_tokens
        admitted: list[Request] = []
        tokens = 0
        with self._lock:
            while self._waiting and len(admitted) < free:
                size = len(self._waiting[0].prompt_ids)
                if admitted and budget is not None and tokens + size > budget:
                    break
                tokens += size
                admitted.append(self._waiting.popleft())
        return admitted

    def _forward(self, rows: Sequence[_Row], **inputs: Any) -> torch.Tensor:
        """The last position's logits [rows, vocab] of one forward (the cache grows in place)."""
        if self._logits_to_keep:
            inputs["logits_to_keep"] = 1
        with self._adapters(rows, inputs):
            output = self.model(use_cache=True, **inputs)
        logits: torch.Tensor = output.logits[:, -1, :]
        return logits

    def _adapters(
        self, rows: Sequence[_Row], inputs: dict[str, Any]
    ) -> AbstractContextManager[Any]:
        """Routes each row to its adapter for one forward, the cheapest exact way.

        A batch on one adapter runs it as the active adapter, an all-base batch with the adapter
        layers disabled, a mixed one through `StackedLora` (every row's delta in two batched
        matmuls per layer) or, for adapters it cannot stack, PEFT's `adapter_names`. Decode
        forward of the tiny model at batch 64: 5 ms on one adapter, 3.7 on the base, 10 mixing
        4 adapters (14 with `adapter_names`, which also costs 5.7 on the base alone).
        """
        if self._stacked is None:
            return nullcontext()
        names = {row.adapter_name for row in rows}
        if names == {BASE}:
            return self._stacked.base_only()
        if len(names) == 1:
            (name,) = names
            if self.model.active_adapter != name:
                self.model.set_adapter(name)
            return nullcontext()
        if self._stacked.usable():
            return self._stacked.rows([row.request.adapter for row in rows])
        inputs["adapter_names"] = [row.adapter_name for row in rows]
        return nullcontext()

    def _decode(self, batch: _Batch) -> torch.Tensor:
        """One forward of every row's pending token; its mask column is appended."""
        ids = torch.tensor([[row.pending] for row in batch.rows], device=self.device)
        mask = torch.cat([batch.mask, batch.mask.new_ones(len(batch.rows), 1)], dim=1)
        positions = mask.sum(-1, keepdim=True) - 1
        logits = self._forward(
            batch.rows,
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            cache=batch.cache,
        )
        batch.mask = mask
        return logits

    def _prefill(self, requests: Sequence[Request]) -> _Batch:
        """The admitted requests as a left-padded batch of their own, each with its first token
        chosen (pending)."""
        width = max(len(r.prompt_ids) for r in requests)
        ids = [[self.pad_id] * (width - len(r.prompt_ids)) + r.prompt_ids for r in requests]
        flags = [[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in requests]
        input_ids = torch.tensor(ids, device=self.device)
        mask = torch.tensor(flags, device=self.device)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        rows = [
            _Row(r, generator_for(r.sampling, self.device), list(r.prompt_ids)) for r in requests
        ]
        cache = DynamicCache(config=self.model.config)
        logits = self._forward(
            rows, input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache
        )
        self._choose(rows, logits)
        return _Batch(rows, mask, cache)

    def _choose(self, rows: Sequence[_Row], logits: torch.Tensor) -> None:
        tokens = choose_tokens(
            logits,
            [row.history for row in rows],
            [row.request.sampling for row in rows],
            [row.generator for row in rows],
        )
        for row, token in zip(rows, tokens, strict=True):
            row.pending = token
            row.history.append(token)
            row.generated += 1

    def _emit(self, batch: _Batch) -> list[Token]:
        """A Token for every row's new token; finished rows leave the batch."""
        out: list[Token] = []
        keep: list[int] = []
        for i, row in enumerate(batch.rows):
            reason: FinishReason | None = None
            if row.pending in self.eos_ids:
                reason = "stop"
            elif row.generated >= row.request.sampling.max_new_tokens:
                reason = "length"
            else:
                keep.append(i)
            out.append(Token(row.request.id, row.pending, reason))
        self._batch = batch.select(keep)
        return out
