"""What happens around every RPC: request id, authentication, error mapping, one log line and
metrics. Handlers are wrapped once, when services register on the server, rather than through a
grpc.aio ServerInterceptor: an interceptor is dispatched on every call, and for a cheap read that
dispatch and a stack of wrappers cost more than the read itself (see docs/benchmarks.md). Each
concern lives in its own module (auth, errors, logs, metrics); this one only orders them.
"""

from __future__ import annotations

import inspect
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError, Message

from llmops_services.errors import (
    REQUEST_ID_KEY,
    FieldViolation,
    InvalidArgument,
    ServiceError,
    infrastructure_error,
    internal_status,
    to_status,
)
from llmops_services.runtime import metrics
from llmops_services.runtime.auth import ApiKeyCache, required_role
from llmops_services.runtime.context import (
    Context,
    principal_var,
    request_id_var,
    trace_id_of,
    trace_id_var,
)
from llmops_services.runtime.logs import AccessLog
from llmops_services.runtime.nul_text import fields_with_nul

log = logging.getLogger("llmops.rpc")

_ids = random.Random()
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
GenericHandler: TypeAlias = "grpc.GenericRpcHandler[Any, Any]"


def resolve_role(full_name: str) -> str:
    """The role a method needs, "" for an open one (health, reflection).

    Resolved once per method when its handler is wrapped, which for the services is when they
    register on the server: an RPC of `llmops.v1` without a row in `roles.METHOD_ROLES` raises
    `MissingRoleError` there, so the server does not start rather than serve it.
    """
    if full_name.startswith(OPEN_SERVICES):
        return ""
    return required_role(full_name)


@dataclass
class _Method:
    """What the wrapper knows about one RPC, resolved once per method."""

    full_name: str
    rpc_type: str
    needs_auth: bool
    labels: tuple[str, str, str]
    role: str = ""
    started: Any = None
    handling: Any = None
    msg_sent: Any = None
    msg_received: Any = None
    handled_by_code: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.role = resolve_role(self.full_name)
        self.started = metrics.STARTED.labels(*self.labels)
        self.handling = metrics.HANDLING_SECONDS.labels(*self.labels)
        self.msg_sent = metrics.MSG_SENT.labels(*self.labels)
        self.msg_received = metrics.MSG_RECEIVED.labels(*self.labels)

    def handled(self, code: str) -> Any:
        """The `grpc_server_handled_total` child for a code, looked up once per code."""
        child = self.handled_by_code.get(code)
        if child is None:
            child = self.handled_by_code[code] = metrics.HANDLED.labels(*self.labels, code)
        return child


class _Call:
    """Per-call state: the request id and the start time."""

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


class CallWrapper:
    """Wraps method handlers with the per-call concerns."""

    def __init__(self, keys: ApiKeyCache | None, access_log: AccessLog) -> None:
        self._keys = keys
        self._access_log = access_log

    def _begin(self, info: _Method, context: Context) -> tuple[_Call, str | None]:
        """Counts the call, settles its request id and returns the `authorization` header."""
        info.started.inc()
        given = ""
        authorization = None
        traceparent = ""
        for key, value in context.invocation_metadata() or ():
            if key == REQUEST_ID_KEY:
                given = str(value)
            elif key == "authorization":
                authorization = str(value)
            elif key == "traceparent":
                traceparent = str(value)
        # Request ids need to be unique, not secret: no system call for randomness per call.
        request_id = (
            given if given and _REQUEST_ID.match(given) else f"{_ids.getrandbits(128):032x}"
        )
        request_id_var.set(request_id)
        trace_id_var.set(trace_id_of(traceparent))
        return _Call(request_id), authorization

    def _admit(
        self, info: _Method, call: _Call, authorization: str | None, context: Context
    ) -> None:
        """Returns the request id with the status and checks the caller (keys already fresh)."""
        context.set_trailing_metadata(((REQUEST_ID_KEY, call.request_id),))
        if self._keys is not None:
            principal_var.set(self._keys.authenticate(authorization, info.full_name, info.role))

    async def _admit_stream(
        self, info: _Method, call: _Call, authorization: str | None, context: Context
    ) -> None:
        """As `_admit`, but the request id goes first: a stream's caller needs it before the end."""
        await context.send_initial_metadata(((REQUEST_ID_KEY, call.request_id),))
        if self._keys is not None:
            principal_var.set(self._keys.authenticate(authorization, info.full_name, info.role))

    async def refresh_keys(self) -> None:
        """Re-reads API keys when the cache has expired (a no-op most calls)."""
        if self._keys is not None and self._keys.stale:
            await self._keys.refresh()

    def _end(self, info: _Method, call: _Call, code: str, error: str = "") -> None:
        elapsed = time.perf_counter() - call.start
        info.handled(code).inc()
        info.handling.observe(elapsed)
        level = logging.ERROR if code in ("INTERNAL", "UNKNOWN") else logging.INFO
        self._access_log.write(
            level, info.full_name, code, round(elapsed * 1000, 3), principal_var.get().key_id, error
        )

    async def _fail(self, info: _Method, call: _Call, exc: BaseException, context: Context) -> None:
        """Ends a call that raised: domain errors keep their code, the database's failures are
        UNAVAILABLE (`infrastructure_error`), anything else is INTERNAL."""
        if isinstance(exc, Exception) and not isinstance(exc, ServiceError):
            mapped = infrastructure_error(exc)
            if mapped is not None:
                log.warning("%s: %s", info.full_name, mapped.message)
                exc = mapped
        if isinstance(exc, ServiceError):
            self._end(info, call, exc.code.name, exc.message)
            await context.abort_with_status(  # type: ignore[attr-defined]
                to_status(exc, call.request_id)
            )
        if isinstance(exc, grpc.aio.AbortError):
            self._end(info, call, _code_name(context.code()))
            raise exc
        if not isinstance(exc, Exception):
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

    def wrap(self, handler: Handler, full_name: str) -> Handler:
        """The handler with every per-call concern around it."""
        service, _, name = full_name.lstrip("/").rpartition("/")
        rpc_type = _rpc_type(handler)
        info = _Method(
            full_name=full_name,
            rpc_type=rpc_type,
            needs_auth=not full_name.startswith(OPEN_SERVICES),
            labels=(rpc_type, service, name),
        )
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
        is_coroutine = inspect.iscoroutinefunction(behavior)
        decode = request_decoder(handler.request_deserializer)

        async def wrapped(request: Any, context: Context) -> Any:
            call, authorization = self._begin(info, context)
            try:
                if info.needs_auth:
                    if self._keys is not None and self._keys.stale:
                        await self._keys.refresh()
                    self._admit(info, call, authorization, context)
                if streaming:
                    request = _count(_decoded(request, decode), info.msg_received)
                else:
                    request = decode(request)
                response = behavior(request, context)
                if is_coroutine:
                    response = await response
            except BaseException as exc:
                await self._fail(info, call, exc, context)
                raise
            self._finish(info, call, context)
            return response

        factory = (
            grpc.stream_unary_rpc_method_handler
            if streaming
            else grpc.unary_unary_rpc_method_handler
        )
        return factory(
            wrapped, request_deserializer=None, response_serializer=handler.response_serializer
        )

    def _wrap_stream_response(
        self, handler: Handler, info: _Method, behavior: Any, streaming: bool
    ) -> Handler:
        decode = request_decoder(handler.request_deserializer)

        async def wrapped(request: Any, context: Context) -> AsyncIterator[Any]:
            call, authorization = self._begin(info, context)
            try:
                if info.needs_auth:
                    await self.refresh_keys()
                    await self._admit_stream(info, call, authorization, context)
                if streaming:
                    request = _count(_decoded(request, decode), info.msg_received)
                else:
                    request = decode(request)
                result = behavior(request, context)
                if inspect.isasyncgen(result) or hasattr(result, "__aiter__"):
                    async for item in result:
                        info.msg_sent.inc()
                        yield item
                else:
                    await result
            except BaseException as exc:
                await self._fail(info, call, exc, context)
                raise
            self._finish(info, call, context)

        factory = (
            grpc.stream_stream_rpc_method_handler
            if streaming
            else grpc.unary_stream_rpc_method_handler
        )
        return factory(
            wrapped, request_deserializer=None, response_serializer=handler.response_serializer
        )


def request_decoder(deserializer: Callable[[bytes], Any] | None) -> Callable[[Any], Any]:
    """Parses a request's bytes inside the handler rather than in grpc's own deserializer, where
    a malformed message (bad wire format, a string that is not UTF-8) would end the call as
    UNKNOWN with a Python exception in its message: here it is INVALID_ARGUMENT. So is a string
    holding a NUL character (`nul_text`)."""
    if deserializer is None:
        return lambda request: request
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    type_name = getattr(descriptor, "full_name", "message")
    parse = deserializer

    def decode(request: Any) -> Any:
        try:
            message = parse(request)
        except DecodeError as error:
            raise InvalidArgument(
                f"the request is not a valid {type_name}: {error}",
                violations=[FieldViolation("request", f"cannot be parsed as {type_name}")],
            ) from None
        if isinstance(message, Message) and (paths := fields_with_nul(message)):
            raise InvalidArgument(
                f"{len(paths)} field(s) of the request contain a NUL character",
                violations=[
                    FieldViolation(path, "must not contain NUL (U+0000)") for path in paths
                ],
            )
        return message

    return decode


async def _decoded(
    requests: AsyncIterator[Any], decode: Callable[[Any], Any]
) -> AsyncIterator[Any]:
    async for item in requests:
        yield decode(item)


async def _count(requests: AsyncIterator[Any], counter: Any) -> AsyncIterator[Any]:
    async for item in requests:
        counter.inc()
        yield item


class _WrappedGenericHandler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """A servicer's generic handler whose method handlers come out wrapped (once per method)."""

    def __init__(self, inner: GenericHandler, wrapper: CallWrapper) -> None:
        self._inner = inner
        self._wrapper = wrapper
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = (handler, self._wrapper.wrap(handler, method))
            self._wrapped[method] = cached
        return cached[1]


class WrappingRegistrar:
    """Stands in for the server while servicers register (`add_XServicer_to_server(s, this)`),
    wrapping each of their method handlers before they reach the real server."""

    def __init__(self, server: grpc.aio.Server, wrapper: CallWrapper) -> None:
        self._server = server
        self._wrapper = wrapper

    def add_generic_rpc_handlers(self, handlers: Iterable[GenericHandler]) -> None:
        """Registers generic handlers, wrapped (each method when first called); the methods a
        handler lists (grpc's `method_handlers_generic_handler`) have their roles resolved now."""
        handlers = tuple(handlers)
        for handler in handlers:
            methods = getattr(handler, "_method_handlers", None)
            if isinstance(methods, Mapping):
                for full_name in methods:
                    resolve_role(full_name)
        wrapped = tuple(_WrappedGenericHandler(h, self._wrapper) for h in handlers)
        self._server.add_generic_rpc_handlers(wrapped)

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Handler]) -> None:
        """Registers a service's method handlers (gRPC's fast path), wrapped."""
        wrapped = {
            name: self._wrapper.wrap(h, f"/{service}/{name}") for name, h in handlers.items()
        }
        self._server.add_registered_method_handlers(service, wrapped)  # type: ignore[attr-defined]
