"""Per-call context (request id, caller) carried in contextvars so logs and handlers can read it."""

from __future__ import annotations

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


def current_principal() -> Principal:
    """The caller of the RPC being handled."""
    return principal_var.get()
