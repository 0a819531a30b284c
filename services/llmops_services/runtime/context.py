"""Per-call context (request id, caller) carried in contextvars so logs and handlers can read it."""

from __future__ import annotations

import re
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

if TYPE_CHECKING:
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
else:
    Context = grpc.aio.ServicerContext


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key's id and role, or `anonymous` while auth is off."""

    key_id: str
    role: str


ANONYMOUS = Principal(key_id="anonymous", role="admin")

request_id_var: ContextVar[str] = ContextVar("request_id", default="")
principal_var: ContextVar[Principal] = ContextVar("principal", default=ANONYMOUS)
job_id_var: ContextVar[str] = ContextVar("job_id", default="")
trace_id_var: ContextVar[str] = ContextVar("trace_id", default="")

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def trace_id_of(traceparent: str) -> str:
    """The trace id of a W3C `traceparent` header, or "" (logs carry it even with tracing off)."""
    match = _TRACEPARENT.match(traceparent) if traceparent else None
    return match.group(1) if match and match.group(1) != "0" * 32 else ""


def current_principal() -> Principal:
    """The caller of the RPC being handled."""
    return principal_var.get()
