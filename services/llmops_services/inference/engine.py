"""The one interface the Inference service generates through, whatever engine is behind it.

The servicer resolves a request to `ModelFiles`, tokenizes through the engine's `Tokenizer`,
and submits token ids; it reads back token events and knows nothing of threads, batches,
adapter caches or torch. The HF engine (`hf_engine.py`) is the embedded default; the vLLM
engine (`vllm_engine.py`) speaks to a vLLM server; `engines.py` picks one per base model.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class ModelFiles:
    """What to serve: a base model's files, and an adapter's files on it (None for a base or
    merged model served alone). Ids are the registry's, and name cache entries; the base's
    name is what a per-base engine choice (`LLMOPS_VLLM_SERVERS`) is keyed by."""

    base_id: str
    base_dir: Path
    base_name: str = ""
    adapter_id: str | None = None
    adapter_dir: Path | None = None
    adapter_bytes: int = 0
    trust_remote_code: bool = False
    """The base's `Model.trust_remote_code` (set by an admin): its own code may be imported."""


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens; temperature 0 is greedy."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    """Keep the k most likely tokens; 0 = no cut."""
    repetition_penalty: float = 1.0
    """CTRL's penalty on tokens already seen; 1 = none."""
    seed: int | None = None


@dataclass(frozen=True)
class ChatTurn:
    """One message of a conversation: its role (system, user, assistant) and content."""

    role: str
    content: str


class NoChatTemplate(Exception):
    """The model's tokenizer has no chat template, so messages cannot be rendered for it."""


@dataclass(frozen=True)
class TokenEvent:
    """One generated token; the last event of a request carries its finish reason (and may
    carry no token)."""

    token_id: int | None
    finish_reason: FinishReason | None = None


@dataclass(frozen=True)
class AdapterState:
    """An adapter attached to a loaded base."""

    adapter_id: str
    bytes: int
    in_use: int


@dataclass(frozen=True)
class BaseState:
    """A loaded base model: the engine serving it, its attached adapters (least recently used
    first) and its requests."""

    base_id: str
    engine: str
    adapters: Sequence[AdapterState] = field(default_factory=tuple)
    running: int = 0
    waiting: int = 0


class Tokenizer(Protocol):
    """Text to token ids and back, for one base model."""

    @property
    def context_length(self) -> int:
        """The most positions the model takes (prompt and answer together)."""
        ...

    def encode(self, text: str) -> list[int]:
        """The prompt's token ids, exactly as the model is given them."""
        ...

    def decode(self, token_ids: Sequence[int]) -> str:
        """The text of generated ids (special tokens left out)."""
        ...

    def render_chat(self, messages: Sequence[ChatTurn]) -> str:
        """The conversation rendered with the model's chat template, ending with the prompt
        for the assistant's turn; raises `NoChatTemplate` when the model has none."""
        ...


class Engine(Protocol):
    """Submit a request, read its tokens as they come; describe what is loaded."""

    @property
    def name(self) -> str:
        """What serves the requests (`hf`, `vllm`), as ListServedModels reports it."""
        ...

    async def tokenizer(self, files: ModelFiles) -> Tokenizer:
        """The tokenizer of the base in `files`, loading the base on first use."""
        ...

    def generate(
        self, files: ModelFiles, prompt_ids: Sequence[int], sampling: Sampling
    ) -> AsyncGenerator[Sequence[TokenEvent], None]:
        """The request's tokens as they are produced, ending with a finish reason. Each item
        is every event that arrived since the last (one or more): a reader that falls behind
        the engine catches up in one item instead of one per token.

        Refuses a request over the engine's queue limit with `ResourceExhausted`. Closing the
        iterator early (a stop string, a cancelled or timed-out call) cancels the request at the
        engine's next step; the rest of its batch goes on.
        """
        ...

    def describe(self) -> list[BaseState]:
        """The loaded bases, their adapters and batches."""
        ...

    async def close(self) -> None:
        """Stops the engine; requests still running end as cancelled."""
        ...
