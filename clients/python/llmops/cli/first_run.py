"""A first run that just works: a command that names one of the platform's tiny models before it
is registered gets them built and registered, with progress lines, and its call is sent again.

Building needs the workers' package (it trains the models here, on torch) and a server on this
machine (it registers the models by their local path, which a remote server cannot read). The
workers' CLI plugin hands its builder over through `set_tiny_model_builder`; without it, or
with a remote server, the server's NOT_FOUND stays as it is, and it names the command to run.

Only the one call that named the model is sent again: a NOT_FOUND means the server made
nothing, so nothing is done twice.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TypeVar

import typer

from llmops.tiny_models import BUILD_COMMAND, TINY_MODEL_NAMES

__all__ = ["is_local_address", "set_tiny_model_builder", "with_tiny_models"]

T = TypeVar("T")

TinyModelBuilder = Callable[[typer.Context], None]
"""Builds the tiny models that are missing and registers them with the context's server."""

_builder: list[TinyModelBuilder] = []


def set_tiny_model_builder(builder: TinyModelBuilder) -> None:
    """Called by the workers' CLI plugin when it loads."""
    _builder[:] = [builder]


def is_local_address(address: str) -> bool:
    """Whether a gRPC target is a server on this machine (loopback or a Unix socket)."""
    if address.startswith("unix:"):
        return True
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    if host.startswith("[") and "]" in host:  # [::1]:50051
        host = host[1 : host.index("]")]
    elif address.count(":") > 1 and not address.startswith("["):
        host = address  # a bare IPv6 address, no port
    if host.lower() in {"localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _missing_tiny_model(err: Exception) -> str | None:
    """The tiny model a NOT_FOUND is about, if it is about one."""
    from llmops.errors import NotFound

    if not isinstance(err, NotFound) or err.resource_info is None:
        return None
    name = err.resource_info.name.partition("@")[0]
    return name if name in TINY_MODEL_NAMES else None


def with_tiny_models(ctx: typer.Context, call: Callable[[], T]) -> T:
    """Runs `call`; if it names a tiny model that is not registered, builds them and runs it
    once more (when that can be done here)."""
    from llmops.cli._common import CliState
    from llmops.errors import NotFound

    try:
        return call()
    except NotFound as err:
        name = _missing_tiny_model(err)
        state = ctx.find_root().obj
        if name is None or not _builder or not isinstance(state, CliState):
            raise
        if not is_local_address(state.settings().address):
            raise
        typer.echo(
            f"{name} is not registered yet: building the tiny models first "
            f"(what `{BUILD_COMMAND}` does)",
            err=True,
        )
        _builder[0](ctx)
    return call()
