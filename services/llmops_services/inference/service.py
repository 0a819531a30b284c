"""InferenceService: resolve the model and prompt on every request, generate through the engine,
stream the text. The servicer knows the `Engine` interface and nothing else of serving."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.orm import Session

from llmops.v1 import inference_service_pb2 as pb
from llmops.v1 import inference_service_pb2_grpc as pb_grpc
from llmops_services.context import Platform
from llmops_services.errors import Unavailable
from llmops_services.inference import requests
from llmops_services.inference.engine import Engine, ModelFiles, Sampling, Tokenizer
from llmops_services.inference.text import TextStream
from llmops_services.runtime.context import Context
from llmops_services.runtime.server import ServiceBinding

log = logging.getLogger("llmops.inference")

_FINISH = {"stop": pb.FINISH_REASON_STOP, "length": pb.FINISH_REASON_LENGTH}


@dataclass(frozen=True)
class _Plan:
    model_id: str
    files: ModelFiles
    prompt: str
    prompt_ids: list[int]
    tokenizer: Tokenizer
    sampling: Sampling
    stop: tuple[str, ...]


@dataclass
class _Piece:
    """A text delta; the last piece of a generation carries its finish reason and usage."""

    text: str
    finish_reason: pb.FinishReason.ValueType = pb.FINISH_REASON_UNSPECIFIED
    usage: pb.Usage | None = None


class InferenceService(pb_grpc.InferenceServiceServicer):
    """Generate and StreamGenerate over one engine."""

    def __init__(self, platform: Platform, engine: Engine | None = None) -> None:
        self.platform = platform
        self.db = platform.db
        if engine is None:
            from llmops_services.inference.hf_engine import HFEngine

            engine = HFEngine(platform.settings)
        self.engine = engine

    async def _plan(self, request: pb.GenerateRequest, prefix: str) -> _Plan:
        settings = self.platform.settings
        generation = requests.check_sampling(request.sampling, settings, prefix)

        def read(session: Session) -> tuple[requests.Target, str]:
            prompt = requests.prompt_of(session, request, prefix)
            target = requests.resolve(session, self.platform.store, settings, request.model, prefix)
            return target, prompt

        target, prompt = await self.db.run(read)
        tokenizer = await self.engine.tokenizer(target.files)
        prompt_ids = tokenizer.encode(prompt)
        sampling = requests.check_prompt_length(
            len(prompt_ids), tokenizer.context_length, generation.sampling, prefix
        )
        return _Plan(
            model_id=target.model_id,
            files=target.files,
            prompt=prompt,
            prompt_ids=prompt_ids,
            tokenizer=tokenizer,
            sampling=sampling,
            stop=generation.stop,
        )

    async def _pieces(self, plan: _Plan) -> AsyncIterator[_Piece]:
        """The generation's text deltas in order; the last one ends it."""
        text = TextStream(plan.tokenizer, plan.stop)
        completion = 0
        reason: str | None = None
        events = self.engine.generate(plan.files, plan.prompt_ids, plan.sampling)
        async with contextlib.aclosing(events):  # leaving early cancels the engine request
            async for event in events:
                if event.token_id is not None:
                    completion += 1
                    delta = text.push(event.token_id)
                    if text.stopped:
                        reason = "stop"
                        yield _Piece(delta)
                        break
                    if delta:
                        yield _Piece(delta)
                if event.finish_reason is not None:
                    reason = event.finish_reason
                    break
        if reason not in _FINISH:
            raise Unavailable("the generation was cancelled by the engine (it is stopping)")
        usage = pb.Usage(prompt_tokens=len(plan.prompt_ids), completion_tokens=completion)
        yield _Piece(text.finish(), finish_reason=_FINISH[reason], usage=usage)

    async def Generate(self, request: pb.GenerateRequest, context: Context) -> pb.GenerateResponse:
        plan = await self._plan(request, prefix="")
        parts: list[str] = []
        last = _Piece("")
        async for piece in self._pieces(plan):
            parts.append(piece.text)
            last = piece
        return pb.GenerateResponse(
            text="".join(parts),
            model=plan.model_id,
            finish_reason=last.finish_reason,
            usage=last.usage,
            rendered_prompt=plan.prompt,
        )

    async def StreamGenerate(
        self, request: pb.StreamGenerateRequest, context: Context
    ) -> AsyncIterator[pb.StreamGenerateResponse]:
        plan = await self._plan(request.request, prefix="request.")
        first = True
        async for piece in self._pieces(plan):
            if not piece.text and piece.usage is None:
                continue
            yield pb.StreamGenerateResponse(
                text_delta=piece.text,
                finish_reason=piece.finish_reason,
                usage=piece.usage,
                model=plan.model_id if first else "",
            )
            first = False

    async def close(self) -> None:
        """Stops the engine (its threads and loaded models)."""
        await self.engine.close()

    def binding(self) -> ServiceBinding:
        """How to host this servicer on a server."""
        return ServiceBinding(
            full_name=pb.DESCRIPTOR.services_by_name["InferenceService"].full_name,
            add_to_server=lambda server: pb_grpc.add_InferenceServiceServicer_to_server(
                self, server
            ),
        )
