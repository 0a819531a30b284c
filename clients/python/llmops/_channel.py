"""Channel building shared by `Client` and `AsyncClient`: credentials, retries, metadata.

Both clients take their channel from here, so the sync and async paths send the same headers
and retry the same way.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from llmops.errors import REQUEST_ID_KEY
from llmops.settings import ClientSettings

SERVICES = (
    "llmops.v1.RegistryService",
    "llmops.v1.TrainingService",
    "llmops.v1.EvalService",
    "llmops.v1.InferenceService",
)

AUTHORIZATION_KEY = "authorization"

# UNAVAILABLE means the call never reached a handler (connection refused, server restarting,
# load shedding), so retrying is safe even for creates; those carry idempotency keys anyway.
# Four attempts with jittered backoff of at most 0.1 + 0.2 + 0.4 s keep a down server's
# error quick.
RETRY_POLICY: dict[str, Any] = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}

MAX_MESSAGE_BYTES = 32 * 1024 * 1024

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "llmops_request_id", default=None
)


def service_config() -> str:
    """The gRPC service config JSON: the retry policy for all four services."""
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": service} for service in SERVICES],
                    "retryPolicy": RETRY_POLICY,
                }
            ]
        }
    )


def channel_options(user_agent: str) -> list[tuple[str, Any]]:
    """Channel arguments: retries through the service config, message limits, user agent."""
    return [
        ("grpc.service_config", service_config()),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.primary_user_agent", user_agent),
    ]


@contextlib.contextmanager
def request_id_scope(request_id: str) -> Iterator[str]:
    """Sends `request_id` as `x-request-id` on every call made inside the block.

    For tracing one user action across several calls; without it each call gets a fresh id.
    Works for the async client too, since tasks copy the context they start in.
    """
    token = _request_id.set(request_id)
    try:
        yield request_id
    finally:
        _request_id.reset(token)


def new_request_id() -> str:
    """The request id for the next call: the scoped one, or a fresh uuid4 hex."""
    return _request_id.get() or uuid.uuid4().hex


@dataclass(frozen=True)
class ConnectionConfig:
    """Everything a channel needs, resolved from arguments over `ClientSettings`."""

    address: str
    api_key: str | None
    credentials: grpc.ChannelCredentials | None
    timeout: float
    options: Sequence[tuple[str, Any]]

    @classmethod
    def resolve(
        cls,
        *,
        address: str | None,
        api_key: str | None,
        tls: bool | None,
        root_certificates: bytes | None,
        timeout: float | None,
        settings: ClientSettings | None,
        options: Sequence[tuple[str, Any]] | None,
        user_agent: str,
    ) -> ConnectionConfig:
        """Arguments win; anything left out comes from `settings` (by default, the env)."""
        env = settings if settings is not None else ClientSettings.from_env()
        if root_certificates is None and env.tls_ca_file and tls is not False:
            root_certificates = _read_file("LLMOPS_TLS_CA_FILE", env.tls_ca_file)
        use_tls = tls if tls is not None else (env.tls or root_certificates is not None)
        credentials = None
        tls_options: list[tuple[str, Any]] = []
        if use_tls:
            key = chain = None
            if env.tls_cert_file and env.tls_key_file:
                chain = _read_file("LLMOPS_TLS_CERT_FILE", env.tls_cert_file)
                key = _read_file("LLMOPS_TLS_KEY_FILE", env.tls_key_file)
            credentials = grpc.ssl_channel_credentials(root_certificates, key, chain)
            if env.tls_server_name:
                tls_options.append(("grpc.ssl_target_name_override", env.tls_server_name))
        deadline = timeout if timeout is not None else env.timeout
        if not deadline > 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {deadline!r}")
        merged = dict(channel_options(user_agent))
        merged.update(dict(tls_options))
        merged.update(dict(options or ()))
        return cls(
            address=address or env.address,
            api_key=api_key if api_key is not None else env.api_key,
            credentials=credentials,
            timeout=deadline,
            options=list(merged.items()),
        )


def _read_file(setting: str, path: str) -> bytes:
    """A PEM file named by a setting; an unreadable one is an error that names the setting."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as error:
        raise ValueError(f"{setting}={path}: {error.strerror or error}") from None


def _find_propagator() -> Callable[[dict[str, str]], None] | None:
    try:
        from opentelemetry import propagate
    except ImportError:  # the SDK does not need OpenTelemetry; without it, nothing to pass on
        return None
    return propagate.inject


_inject_trace_context = _find_propagator()


def _with_metadata(
    metadata: Sequence[tuple[str, str | bytes]] | None, api_key: str | None
) -> list[tuple[str, str | bytes]]:
    """The call's metadata plus `authorization`, `x-request-id` and, when the caller is inside
    an OpenTelemetry span, its W3C `traceparent`, unless already there."""
    pairs = list(metadata or ())
    keys = {key for key, _ in pairs}
    if api_key and AUTHORIZATION_KEY not in keys:
        pairs.append((AUTHORIZATION_KEY, f"Bearer {api_key}"))
    if REQUEST_ID_KEY not in keys:
        pairs.append((REQUEST_ID_KEY, new_request_id()))
    if _inject_trace_context is not None and "traceparent" not in keys:
        carrier: dict[str, str] = {}
        _inject_trace_context(carrier)
        pairs.extend(carrier.items())
    return pairs


class _SyncCallDetails(grpc.ClientCallDetails):
    """`grpc.ClientCallDetails` is abstract; this is the concrete copy with new metadata."""

    def __init__(self, base: grpc.ClientCallDetails, metadata: Any) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


if TYPE_CHECKING:
    _SyncUU = grpc.UnaryUnaryClientInterceptor[Any, Any]
    _SyncUS = grpc.UnaryStreamClientInterceptor[Any, Any]
    _SyncSU = grpc.StreamUnaryClientInterceptor[Any, Any]
    _SyncSS = grpc.StreamStreamClientInterceptor[Any, Any]
    _AioUU = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _AioUS = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
    _AioSU = grpc.aio.StreamUnaryClientInterceptor[Any, Any]
    _AioSS = grpc.aio.StreamStreamClientInterceptor[Any, Any]
else:
    _SyncUU = grpc.UnaryUnaryClientInterceptor
    _SyncUS = grpc.UnaryStreamClientInterceptor
    _SyncSU = grpc.StreamUnaryClientInterceptor
    _SyncSS = grpc.StreamStreamClientInterceptor
    _AioUU = grpc.aio.UnaryUnaryClientInterceptor
    _AioUS = grpc.aio.UnaryStreamClientInterceptor
    _AioSU = grpc.aio.StreamUnaryClientInterceptor
    _AioSS = grpc.aio.StreamStreamClientInterceptor


class MetadataInterceptor(_SyncUU, _SyncUS, _SyncSU, _SyncSS):
    """Adds `authorization: Bearer <key>` and `x-request-id` to every sync call."""

    def __init__(self, api_key: str | None) -> None:
        self._api_key = api_key

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _SyncCallDetails(details, tuple(_with_metadata(details.metadata, self._api_key)))

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request_iterator)


def _aio_details(details: grpc.aio.ClientCallDetails, api_key: str | None) -> Any:
    metadata = grpc.aio.Metadata(*_with_metadata(list(details.metadata or ()), api_key))
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class AioMetadataUnaryUnary(_AioUU):
    """Adds `authorization` and `x-request-id` to async unary calls."""

    def __init__(self, api_key: str | None) -> None:
        self._api_key = api_key

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_aio_details(client_call_details, self._api_key), request)


class AioMetadataUnaryStream(_AioUS):
    """Adds `authorization` and `x-request-id` to async server-streaming calls."""

    def __init__(self, api_key: str | None) -> None:
        self._api_key = api_key

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_aio_details(client_call_details, self._api_key), request)


class AioMetadataStreamUnary(_AioSU):
    """Adds `authorization` and `x-request-id` to async client-streaming calls."""

    def __init__(self, api_key: str | None) -> None:
        self._api_key = api_key

    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        details = _aio_details(client_call_details, self._api_key)
        return await continuation(details, request_iterator)


class AioMetadataStreamStream(_AioSS):
    """Adds `authorization` and `x-request-id` to async bidirectional calls."""

    def __init__(self, api_key: str | None) -> None:
        self._api_key = api_key

    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        details = _aio_details(client_call_details, self._api_key)
        return await continuation(details, request_iterator)


def sync_channel(config: ConnectionConfig) -> grpc.Channel:
    """A sync channel with the metadata interceptor and the retry policy."""
    if config.credentials is not None:
        raw = grpc.secure_channel(config.address, config.credentials, options=config.options)
    else:
        raw = grpc.insecure_channel(config.address, options=config.options)
    return grpc.intercept_channel(raw, MetadataInterceptor(config.api_key))


def aio_channel(config: ConnectionConfig) -> grpc.aio.Channel:
    """An asyncio channel with the metadata interceptors and the retry policy."""
    # grpc-stubs types `interceptors` as a placeholder that must be cast.
    interceptors: list[Any] = [
        AioMetadataUnaryUnary(config.api_key),
        AioMetadataUnaryStream(config.api_key),
        AioMetadataStreamUnary(config.api_key),
        AioMetadataStreamStream(config.api_key),
    ]
    if config.credentials is not None:
        return grpc.aio.secure_channel(
            config.address, config.credentials, options=config.options, interceptors=interceptors
        )
    return grpc.aio.insecure_channel(
        config.address, options=config.options, interceptors=interceptors
    )
