"""InferenceService: resolve the model and prompt on every request, generate through the engine,
stream the text. The servicer knows the `Engine` interface and nothing else of serving."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc
from opentelemetry import trace
from sqlalchemy.orm import Session

from llmops.v1 import inference_service_pb2 as pb
from llmops.v1 import inference_service_pb2_grpc as pb_grpc
from llmops_services.context import Platform
from llmops_services.errors import (
    FailedPrecondition,
    PreconditionViolation,
    ServiceError,
    Unavailable,
)
from llmops_services.inference import metrics, requests
from llmops_services.inference.engine import (
    ChatTurn,
    Engine,
    ModelFiles,
    NoChatTemplate,
    Tokenizer,
)
from llmops_services.inference.rate_limit import KeyRateLimiter
from llmops_services.inference.text import TextStream
from llmops_services.runtime.context import Context, current_principal
from llmops_services.runtime.server import ServiceBinding

log = logging.getLogger("llmops.inference")
tracer = trace.get_tracer("llmops.inference")

_FINISH = {"stop": pb.FINISH_REASON_STOP, "length": pb.FINISH_REASON_LENGTH}
_FINISH_NAMES = {value: name for name, value in _FINISH.items()}
_SERVER_FAULTS = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
"""Codes that mark a span as failed; the others are the caller's (OTel's rule for server spans)."""


@dataclass(frozen=True)
class _Plan:
    model_id: str
    files: ModelFiles
    prompt: str
    prompt_ids: list[int]
    tokenizer: Tokenizer
    generation: requests.Generation
    started: float
    """When the call arrived (`time.perf_counter`), for time to first token."""


@dataclass
class _Piece:
    """A text delta of one answer; the answer's last piece carries its finish reason and the
    number of tokens it generated."""

    text: str
    finish_reason: pb.FinishReason.ValueType = pb.FINISH_REASON_UNSPECIFIED
    completion_tokens: int = 0

    @property
    def last(self) -> bool:
        return self.finish_reason != pb.FINISH_REASON_UNSPECIFIED


async def _interleaved(streams: list[AsyncIterator[_Piece]]) -> AsyncIterator[tuple[int, _Piece]]:
    """The pieces of several answers as each comes, tagged with its answer's index. Leaving
    early (or a cancelled call) cancels every answer still generating."""
    if len(streams) == 1:
        async for piece in streams[0]:
            yield 0, piece
        return
    queue: asyncio.Queue[tuple[int, _Piece] | BaseException] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[_Piece]) -> None:
        try:
            async for piece in stream:
                queue.put_nowait((index, piece))
        except Exception as exc:  # handed to the reader, which raises it
            queue.put_nowait(exc)

    tasks = [asyncio.create_task(pump(i, stream)) for i, stream in enumerate(streams)]
    try:
        remaining = len(streams)
        while remaining:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            if item[1].last:
                remaining -= 1
            yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _CallSpan:
    """The span of one Generate or StreamGenerate call, with the `gen_ai.*` attributes of
    OpenTelemetry's semantic conventions for generative AI: what was asked for, what served it
    (model, base and adapter) and the tokens in and out. A child of the gRPC server's span; a
    no-op unless tracing is on."""

    def __init__(self, request: pb.GenerateRequest) -> None:
        operation = "chat" if request.messages else "text_completion"
        requested = request.model or "default"
        attributes: dict[str, str | int | float] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": "llmops",
            "gen_ai.request.model": requested,
        }
        self.span = tracer.start_span(f"{operation} {requested}", attributes=attributes)

    def planned(self, plan: _Plan) -> None:
        sampling = plan.generation.sampling
        self.span.set_attributes(
            {
                "gen_ai.response.model": plan.model_id,
                "llmops.inference.base_model": plan.files.base_id,
                "llmops.inference.adapter": plan.files.adapter_id or "",
                "gen_ai.usage.input_tokens": len(plan.prompt_ids),
                "gen_ai.request.temperature": sampling.temperature,
                "gen_ai.request.top_p": sampling.top_p,
                "gen_ai.request.top_k": sampling.top_k,
                "gen_ai.request.choice.count": plan.generation.n,
                "gen_ai.request.max_tokens": sampling.max_new_tokens,
            }
        )
        if sampling.seed is not None:
            self.span.set_attribute("gen_ai.request.seed", sampling.seed)

    def answered(
        self, completion_tokens: int, reasons: Sequence[pb.FinishReason.ValueType]
    ) -> None:
        self.span.set_attribute("gen_ai.usage.output_tokens", completion_tokens)
        self.span.set_attribute(
            "gen_ai.response.finish_reasons", [_FINISH_NAMES.get(r, "") for r in reasons]
        )

    def __enter__(self) -> _CallSpan:
        return self

    def __exit__(self, kind: object, error: BaseException | None, _tb: object) -> None:
        if isinstance(error, GeneratorExit | asyncio.CancelledError):
            self.span.set_attribute("error.type", "cancelled")
        elif isinstance(error, ServiceError):  # the status the caller gets, e.g. NOT_FOUND
            self.span.set_attribute("error.type", error.code.name)
            if error.code in _SERVER_FAULTS:
                self.span.set_status(trace.StatusCode.ERROR, str(error))
        elif error is not None:
            self.span.set_attribute("error.type", type(error).__qualname__)
            self.span.set_status(trace.StatusCode.ERROR, str(error))
        self.span.end()


class InferenceService(pb_grpc.InferenceServiceServicer):
    """Generate, StreamGenerate and ListServedModels over one engine."""

    def __init__(self, platform: Platform, engine: Engine | None = None) -> None:
        self.platform = platform
        self.db = platform.db
        if engine is None:
            from llmops_services.inference.engines import make_engine

            engine = make_engine(platform.settings)
        self.engine = engine
        settings = platform.settings
        self.limits = KeyRateLimiter(settings.inference_rate_limit, settings.redis_url)

    async def _plan(self, request: pb.GenerateRequest, prefix: str) -> _Plan:
        started = time.perf_counter()
        await self.limits.admit(current_principal().key_id)
        settings = self.platform.settings
        generation = requests.check_sampling(request.sampling, settings, prefix)
        chat = requests.chat_of(request, prefix)

        def read(session: Session) -> tuple[requests.Target, str]:
            prompt = "" if chat is not None else requests.prompt_of(session, request, prefix)
            target = requests.resolve(session, self.platform.store, settings, request.model, prefix)
            return target, prompt

        target, prompt = await self.db.run(read)
        tokenizer = await self.engine.tokenizer(target.files)
        if chat is not None:
            prompt = _render_chat(tokenizer, chat, target.model_id)
        prompt_ids = tokenizer.encode(prompt)
        sampling = requests.check_prompt_length(
            len(prompt_ids),
            tokenizer.context_length,
            generation.sampling,
            prefix,
            source="messages" if chat is not None else "prompt",
        )
        return _Plan(
            model_id=target.model_id,
            files=target.files,
            prompt=prompt,
            prompt_ids=prompt_ids,
            tokenizer=tokenizer,
            generation=dataclasses.replace(generation, sampling=sampling),
            started=started,
        )

    async def _pieces(self, plan: _Plan, choice: int) -> AsyncIterator[_Piece]:
        """One answer's text deltas in order; the last one ends it. Counts the answer, its
        tokens and their latencies in the metrics, however it ends."""
        text = TextStream(plan.tokenizer, plan.generation.stop)
        completion = 0
        reason: str | None = None
        outcome = "error"
        last_token_at: float | None = None
        sampling = plan.generation.for_choice(choice)
        events = self.engine.generate(plan.files, plan.prompt_ids, sampling)
        try:
            async with contextlib.aclosing(events):  # leaving early cancels the engine request
                async for chunk in events:  # one piece per chunk, however many tokens it has
                    if any(event.token_id is not None for event in chunk):
                        now = time.perf_counter()
                        if last_token_at is None:
                            metrics.TIME_TO_FIRST_TOKEN.observe(now - plan.started)
                        else:
                            metrics.INTER_TOKEN_LATENCY.observe(now - last_token_at)
                        last_token_at = now
                    deltas: list[str] = []
                    for event in chunk:
                        if event.token_id is not None:
                            completion += 1
                            deltas.append(text.push(event.token_id))
                            if text.stopped:
                                reason = "stop"
                                break
                        if event.finish_reason is not None:
                            reason = event.finish_reason
                            break
                    delta = "".join(deltas)
                    if delta or text.stopped:
                        yield _Piece(delta)
                    if reason is not None:
                        break
            if reason not in _FINISH:
                raise Unavailable("the generation was cancelled by the engine (it is stopping)")
            outcome = reason
            yield _Piece(text.finish(), finish_reason=_FINISH[reason], completion_tokens=completion)
        except (GeneratorExit, asyncio.CancelledError):
            if outcome == "error":  # not finished: the caller left, or its deadline passed
                outcome = "cancelled"
            raise
        finally:
            metrics.REQUESTS.labels(plan.model_id, outcome).inc()
            metrics.GENERATED_TOKENS.labels(plan.model_id).inc(completion)

    def _answers(self, plan: _Plan) -> AsyncIterator[tuple[int, _Piece]]:
        choices = [self._pieces(plan, i) for i in range(plan.generation.n)]
        return _interleaved(choices)

    async def Generate(self, request: pb.GenerateRequest, context: Context) -> pb.GenerateResponse:
        with _CallSpan(request) as span:
            plan = await self._plan(request, prefix="")
            span.planned(plan)
            metrics.PROMPT_TOKENS.labels(plan.model_id).inc(len(plan.prompt_ids))
            n = plan.generation.n
            parts: list[list[str]] = [[] for _ in range(n)]
            reasons = [pb.FINISH_REASON_UNSPECIFIED] * n
            completion = 0
            async for index, piece in self._answers(plan):
                parts[index].append(piece.text)
                if piece.last:
                    reasons[index] = piece.finish_reason
                    completion += piece.completion_tokens
            span.answered(completion, reasons)
        choices = [
            pb.Choice(index=i, text="".join(parts[i]), finish_reason=reasons[i]) for i in range(n)
        ]
        return pb.GenerateResponse(
            text=choices[0].text,
            model=plan.model_id,
            finish_reason=choices[0].finish_reason,
            usage=pb.Usage(prompt_tokens=len(plan.prompt_ids), completion_tokens=completion),
            rendered_prompt=plan.prompt,
            choices=choices,
        )

    async def StreamGenerate(
        self, request: pb.StreamGenerateRequest, context: Context
    ) -> AsyncIterator[pb.StreamGenerateResponse]:
        with _CallSpan(request.request) as span:
            plan = await self._plan(request.request, prefix="request.")
            span.planned(plan)
            metrics.PROMPT_TOKENS.labels(plan.model_id).inc(len(plan.prompt_ids))
            first = True
            remaining = plan.generation.n
            completion = 0
            reasons = [pb.FINISH_REASON_UNSPECIFIED] * plan.generation.n
            async for index, piece in self._answers(plan):
                if piece.last:
                    remaining -= 1
                    completion += piece.completion_tokens
                    reasons[index] = piece.finish_reason
                elif not piece.text:
                    continue
                usage = None
                if remaining == 0:
                    span.answered(completion, reasons)
                    usage = pb.Usage(
                        prompt_tokens=len(plan.prompt_ids), completion_tokens=completion
                    )
                yield pb.StreamGenerateResponse(
                    text_delta=piece.text,
                    finish_reason=piece.finish_reason,
                    usage=usage,
                    model=plan.model_id if first else "",
                    index=index,
                )
                first = False

    async def ListServedModels(
        self, request: pb.ListServedModelsRequest, context: Context
    ) -> pb.ListServedModelsResponse:
        bases = [
            pb.ServedBase(
                model=base.base_id,
                adapters=[
                    pb.ServedAdapter(
                        model=adapter.adapter_id,
                        size_bytes=adapter.bytes,
                        active_requests=adapter.in_use,
                    )
                    for adapter in base.adapters
                ],
                running_requests=base.running,
                queued_requests=base.waiting,
                engine=base.engine,
            )
            for base in self.engine.describe()
        ]
        return pb.ListServedModelsResponse(models=bases, engine=self.engine.name)

    async def close(self) -> None:
        """Stops the engine (its threads and loaded models) and the rate limiter's connections."""
        await self.engine.close()
        await self.limits.close()

    def binding(self) -> ServiceBinding:
        """How to host this servicer on a server."""
        return ServiceBinding(
            full_name=pb.DESCRIPTOR.services_by_name["InferenceService"].full_name,
            add_to_server=lambda server: pb_grpc.add_InferenceServiceServicer_to_server(
                self, server
            ),
        )


def _render_chat(tokenizer: Tokenizer, chat: list[ChatTurn], model_id: str) -> str:
    try:
        return tokenizer.render_chat(chat)
    except NoChatTemplate as exc:
        raise FailedPrecondition(
            f"model {model_id} has no chat template; send a prompt instead of messages",
            violations=[PreconditionViolation("CHAT_TEMPLATE", f"models/{model_id}", str(exc))],
        ) from exc
