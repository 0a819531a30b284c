"""A Hugging Face tokenizer behind the engine's `Tokenizer` protocol.

Both engines tokenize here, in the services process: the HF engine with the tokenizer of the
base it loaded, the vLLM engine with the tokenizer in the base's files (the one the vLLM server
loaded from the same files), so prompts, chat rendering and the streamed text are the same code
whichever engine generates.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmops_services.inference.engine import ChatTurn, NoChatTemplate


class HFTokenizer:
    """A Hugging Face tokenizer behind the engine's `Tokenizer` protocol."""

    def __init__(self, tokenizer: Any, context_length: int) -> None:
        self._tokenizer = tokenizer
        self._context_length = context_length

    @property
    def context_length(self) -> int:
        return self._context_length

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer(text)["input_ids"])

    def decode(self, token_ids: Sequence[int]) -> str:
        text: str = self._tokenizer.decode(list(token_ids), skip_special_tokens=True)
        return text

    def render_chat(self, messages: Sequence[ChatTurn]) -> str:
        if not self._tokenizer.chat_template:
            raise NoChatTemplate("the model's tokenizer has no chat template")
        conversation = [{"role": turn.role, "content": turn.content} for turn in messages]
        text: str = self._tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True
        )
        return text


def load_tokenizer(
    model_dir: Path, context_length: int, *, trust_remote_code: bool = False
) -> HFTokenizer:
    """The tokenizer in a model's files (blocking, and imports transformers on first use: call
    it from a thread)."""
    from llmops_ml.loading import load_tokenizer as load

    return HFTokenizer(load(model_dir, trust_remote_code=trust_remote_code), context_length)
