"""CLI commands that run the platform itself (serve, up, keys); they need the server package."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Adds the server-side command groups to the CLI."""
