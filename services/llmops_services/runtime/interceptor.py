"""The one server interceptor: request id, authentication, error mapping, a log line and metrics
for every call. One wrapper around each handler instead of a stack of five keeps the per-call
cost low; each concern lives in its own module (auth, errors, logs, metrics).
"""

from __future__ import annotations

import inspect
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc

from llmops_services.errors import ServiceError, internal_status, to_status
from llmops_services.runtime import metrics
from llmops_services.runtime.auth import ApiKeyCache
from llmops_services.runtime.context import ANONYMOUS, Context, principal_var, request_id_var

log = logging.getLogger("llmops.rpc")

REQUEST_ID_KEY = "x-request-id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


@dataclass
class _Method:
    """What the wrapper knows about one RPC, resolved once per method."""

    full_name: str
    rpc_type: str
    needs_auth: bool
    started: Any
    handling: Any
    handled: Any
    msg_sent: Any
    msg_received: Any


class _Call:
    """Per-call state: the request id, the start time, the final code."""

    __slots__ = ("request_id", "start")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.start = time.perf_counter()


def _rpc_type(handler: Handler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


def _code_name(code: Any) -> str:
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        for candidate in grpc.StatusCode:
            if candidate.value[0] == code:
                return candidate.name
    return "UNKNOWN"


class CallInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps every handler once per method and caches the wrapper."""

    def __init__(self, keys: ApiKeyCache | None) -> None:
        self._keys = keys
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _describe(self, handler: Handler, full_name: str) -> _Method:
        service, _, name = full_name.lstrip("/").rpartition("/")
        rpc_type = _rpc_type(handler)
        labels = (rpc_type, service, name)
        return _Method(
            full_name=full_name,
            rpc_type=rpc_type,
            needs_auth=not full_name.startswith(OPEN_SERVICES),
            started=metrics.STARTED.labels(*labels),
            handling=metrics.HANDLING_SECONDS.labels(*labels),
            handled=lambda code: metrics.HANDLED.labels(*labels, code),
            msg_sent=metrics.MSG_SENT.labels(*labels),
            msg_received=metrics.MSG_RECEIVED.labels(*labels),
        )

    async def _begin(self, info: _Method, context: Context) -> _Call:
        info.started.inc()
        metadata = context.invocation_metadata() or ()
        given = ""
        authorization = None
        for key, value in metadata:
            if key == REQUEST_ID_KEY and isinstance(value, str):
                given = value
            elif key == "authorization" and isinstance(value, str):
                authorization = value
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        request_id_var.set(request_id)
        principal_var.set(ANONYMOUS)
        call = _Call(request_id)
        if info.needs_auth:
            await context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
            if self._keys is not None:
                principal_var.set(await self._keys.authenticate(authorization, info.full_name))
        return call

    def _end(self, info: _Method, call: _Call, code: str, error: str = "") -> None:
        elapsed = time.perf_counter() - call.start
        info.handled(code).inc()
        info.handling.observe(elapsed)
        extra: dict[str, Any] = {
            "method": info.full_name,
            "code": code,
            "duration_ms": round(elapsed * 1000, 3),
            "principal": principal_var.get().key_id,
        }
        if error:
            extra["error"] = error
        level = logging.ERROR if code in ("INTERNAL", "UNKNOWN") else logging.INFO
        log.log(level, "rpc", extra=extra)

    async def _fail(self, info: _Method, call: _Call, exc: BaseException, context: Context) -> None:
        """Ends a call that raised: domain errors keep their code, anything else is INTERNAL."""
        if isinstance(exc, ServiceError):
            self._end(info, call, exc.code.name, exc.message)
            await context.abort_with_status(  # type: ignore[attr-defined]
                to_status(exc, call.request_id)
            )
        if isinstance(exc, grpc.aio.AbortError):
            self._end(info, call, _code_name(context.code()))
            raise exc
        if isinstance(exc, BaseException) and not isinstance(exc, Exception):
            self._end(info, call, "CANCELLED")
            raise exc
        log.exception("unhandled error in %s", info.full_name, exc_info=exc)
        self._end(info, call, "INTERNAL", type(exc).__name__)
        await context.abort_with_status(  # type: ignore[attr-defined]
            internal_status(call.request_id)
        )

    def _finish(self, info: _Method, call: _Call, context: Context) -> None:
        code = context.code()
        self._end(info, call, "OK" if code is None else _code_name(code))

    def _wrap(self, handler: Handler, full_name: str) -> Handler:
        info = self._describe(handler, full_name)
        if handler.unary_unary is not None:
            return self._wrap_unary_response(handler, info, handler.unary_unary, streaming=False)
        if handler.stream_unary is not None:
            return self._wrap_unary_response(handler, info, handler.stream_unary, streaming=True)
        if handler.unary_stream is not None:
            return self._wrap_stream_response(handler, info, handler.unary_stream, streaming=False)
        return self._wrap_stream_response(handler, info, handler.stream_stream, streaming=True)

    def _wrap_unary_response(
        self, handler: Handler, info: _Method, behavior: Any, streaming: bool
    ) -> Handler:
        async def wrapped(request: Any, context: Context) -> Any:
            call: _Call | None = None
            try:
                call = await self._begin(info, context)
                if streaming:
                    request = _count(request, info.msg_received)
                response = behavior(request, context)
                if inspect.isawaitable(response):
                    response = await response
            except BaseException as exc:
                await self._fail(info, call or _Call(request_id_var.get()), exc, context)
                raise
            self._finish(info, call, context)
            return response

        factory = (
            grpc.stream_unary_rpc_method_handler
            if streaming
            else grpc.unary_unary_rpc_method_handler
        )
        return factory(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap_stream_response(
        self, handler: Handler, info: _Method, behavior: Any, streaming: bool
    ) -> Handler:
        async def wrapped(request: Any, context: Context) -> AsyncIterator[Any]:
            call: _Call | None = None
            try:
                call = await self._begin(info, context)
                if streaming:
                    request = _count(request, info.msg_received)
                result = behavior(request, context)
                if inspect.isasyncgen(result) or hasattr(result, "__aiter__"):
                    async for item in result:
                        info.msg_sent.inc()
                        yield item
                else:
                    await result
            except BaseException as exc:
                await self._fail(info, call or _Call(request_id_var.get()), exc, context)
                raise
            self._finish(info, call, context)

        factory = (
            grpc.stream_stream_rpc_method_handler
            if streaming
            else grpc.unary_stream_rpc_method_handler
        )
        return factory(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def _count(requests: AsyncIterator[Any], counter: Any) -> AsyncIterator[Any]:
    async for item in requests:
        counter.inc()
        yield item
