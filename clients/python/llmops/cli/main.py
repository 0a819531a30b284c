"""The `llmops` command: global connection options and the command groups.

Global options fall back to `LLMOPS_ADDRESS`, `LLMOPS_API_KEY`, `LLMOPS_TIMEOUT` and `LLMOPS_TLS`
(through `ClientSettings`), so scripts can set them once.
"""

from __future__ import annotations

from typing import Annotated

import typer

from llmops.cli import datasets, evals, jobs, models, registry, train
from llmops.cli._common import CliState, LlmopsGroup

app = typer.Typer(
    name="llmops",
    cls=LlmopsGroup,
    help="LLM Customization Ops: templates, datasets, models, training, eval and inference.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from llmops._version import __version__

        typer.echo(f"llmops {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    address: Annotated[
        str | None,
        typer.Option("--address", "-a", help="gRPC host:port (env LLMOPS_ADDRESS)."),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", help="API key (env LLMOPS_API_KEY).", show_default=False),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout", help="Deadline of each call in seconds (env LLMOPS_TIMEOUT).", min=0.001
        ),
    ] = None,
    tls: Annotated[
        bool | None, typer.Option("--tls/--no-tls", help="Use TLS (env LLMOPS_TLS).")
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """LLM Customization Ops command line."""
    state = CliState(address=address, api_key=api_key, timeout=timeout, tls=tls)
    ctx.obj = state
    ctx.call_on_close(state.close)


app.add_typer(registry.app, name="registry")
app.add_typer(datasets.app, name="datasets")
app.add_typer(models.app, name="models")
app.add_typer(train.app, name="train")
app.add_typer(jobs.app, name="jobs")
app.add_typer(evals.app, name="eval")

from llmops.cli.server_commands import register  # noqa: E402  (adds serve, up, keys last)

register(app)
