"""Which engine serves a base model: the one place the service's engine is made.

With no vLLM server configured the service talks to the HF engine directly. Otherwise each
request goes to the engine of its base: a base named in `LLMOPS_VLLM_SERVERS` (or every base,
with `LLMOPS_INFERENCE_ENGINE=vllm`) to the vLLM engine, the rest to the HF engine, which loads
nothing until a request needs it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

from llmops_services.inference.engine import (
    BaseState,
    Engine,
    ModelFiles,
    Sampling,
    TokenEvent,
    Tokenizer,
)
from llmops_services.inference.hf_engine import HFEngine
from llmops_services.inference.vllm_engine import VllmEngine, server_url
from llmops_services.settings import Settings


def make_engine(settings: Settings) -> Engine:
    """The engine the Inference service generates through, as the settings choose it."""
    if settings.inference_engine == "hf" and not settings.vllm_servers:
        return HFEngine(settings)
    return EngineRouter(settings)


class EngineRouter:
    """An `Engine` that hands each request to the HF or the vLLM engine by its base model."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._hf = HFEngine(settings)
        self._vllm = VllmEngine(settings)

    @property
    def name(self) -> str:
        """The engine of bases not named in `LLMOPS_VLLM_SERVERS`."""
        return self._settings.inference_engine

    def _engine(self, files: ModelFiles) -> Engine:
        return self._vllm if server_url(self._settings, files) else self._hf

    async def tokenizer(self, files: ModelFiles) -> Tokenizer:
        return await self._engine(files).tokenizer(files)

    def generate(
        self, files: ModelFiles, prompt_ids: Sequence[int], sampling: Sampling
    ) -> AsyncGenerator[Sequence[TokenEvent], None]:
        return self._engine(files).generate(files, prompt_ids, sampling)

    def describe(self) -> list[BaseState]:
        return [*self._hf.describe(), *self._vllm.describe()]

    async def close(self) -> None:
        await self._hf.close()
        await self._vllm.close()
