"""The `llmops` command: global connection options and the command groups.

The server's and the workers' commands are plugins (`llmops.cli.plugins`): the packages that own
them add them through the `llmops.cli` entry point group.

Global options fall back to `LLMOPS_ADDRESS`, `LLMOPS_API_KEY`, `LLMOPS_TIMEOUT` and `LLMOPS_TLS`
(through `ClientSettings`), so scripts can set them once.
"""

from __future__ import annotations

from typing import Annotated

import typer

from llmops.cli import datasets, evals, generate, jobs, models, registry, train
from llmops.cli._common import CliState, LlmopsGroup
from llmops.cli.plugins import load_plugins

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
app.command("generate")(generate.generate)
app.command("chat")(generate.chat)

# Last, so they follow the client commands in --help: the server's and the workers' commands
# (up, serve, keys, worker, models build-tiny) where their packages are installed.
load_plugins(app)
