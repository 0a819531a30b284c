"""Commands that other packages plug into the one `llmops` command.

The SDK holds only the client commands. The platform packages add theirs (`up`, `serve`, `keys`
from llmops-platform; `worker` and `models build-tiny` from llmops-workers) through the
`llmops.cli` entry point group: each entry point names a function `register(app)` that adds
Typer commands or sub-apps to the root app, or commands to one of its groups (`group(app,
"models")`). The functions load when the CLI starts, so their modules must import only what
registering needs (Typer), never the server or torch: commands import those when they run.

Without the package, a server command is one line saying what to install, and exit code 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperCommand

__all__ = [
    "ENTRY_POINT_GROUP",
    "SERVER_COMMANDS",
    "group",
    "load_plugins",
    "missing_command",
]

ENTRY_POINT_GROUP = "llmops.cli"

SERVER_COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("server", "llmops-platform"),
    "serve": ("server", "llmops-platform"),
    "keys": ("server", "llmops-platform"),
    "gateway": ("server", "llmops-platform"),
    "worker": ("workers", "llmops-workers"),
    "models build-tiny": ("workers", "llmops-workers"),
}
"""Command path -> (what provides it, the distribution to install), for the missing-command
message."""

_failures: dict[str, str] = {}
"""Distributions whose entry point failed to load: the error, shown with their commands."""


def load_plugins(app: typer.Typer) -> None:
    """Calls every `llmops.cli` entry point's `register(app)`, in name order.

    A plugin that fails to load leaves the other commands working; its commands then answer
    as missing, with the error.
    """
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            register: Callable[[typer.Typer], None] = entry.load()
            register(app)
        except Exception as err:  # a broken plugin must not break the client commands
            owner = entry.dist.name if entry.dist is not None else entry.name
            _failures[owner] = f"{entry.value}: {type(err).__name__}: {err}"


def group(app: typer.Typer, name: str) -> typer.Typer:
    """The root app's command group `name` (e.g. "models"), for a plugin to add commands to."""
    for info in app.registered_groups:
        if info.name == name and info.typer_instance is not None:
            return info.typer_instance
    raise LookupError(f"the llmops command has no group {name!r}")


def _command_path(ctx: typer.Context, name: str) -> str:
    """`name` under the groups of `ctx`, without the root: "up", "models build-tiny"."""
    parts = [name]
    current: Any = ctx
    while current.parent is not None:
        parts.insert(0, current.info_name or "")
        current = current.parent
    return " ".join(parts)


def missing_command(ctx: typer.Context, name: str) -> TyperCommand | None:
    """A stand-in for a server command whose package is not installed, else None.

    It takes any arguments and prints one line saying what to install.
    """
    path = _command_path(ctx, name)
    if path not in SERVER_COMMANDS:
        return None
    what, distribution = SERVER_COMMANDS[path]
    message = f"'llmops {path}' is part of the {what} package: pip install {distribution}"
    if distribution in _failures:
        message = f"'llmops {path}' failed to load: {_failures[distribution]}"

    def explain(**_: Any) -> None:
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1)

    return TyperCommand(
        name,
        callback=explain,
        help=f"Needs {distribution}.",
        hidden=True,
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
