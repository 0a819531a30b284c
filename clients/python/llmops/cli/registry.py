"""`llmops registry`: prompt templates, on the server and in the bundled template file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmops.cli._common import (
    OutputFormat,
    OutputOption,
    client,
    fail,
    print_fields,
    print_table,
    show,
    when,
)

app = typer.Typer(
    help="Prompt templates: list, show, create, validate.",
    no_args_is_help=True,
)

DEFAULT_TEMPLATE_FILE = Path("config/prompt_templates.json")


@app.command("list")
def list_templates(ctx: typer.Context, output: OutputOption = OutputFormat.table) -> None:
    """The template ids, one a line (the latest version of each with -o json)."""
    templates = list(client(ctx).templates.list())
    if output is OutputFormat.json:
        show(output, templates, lambda: None)
        return
    for template in templates:
        typer.echo(template.template_id)


@app.command("show")
def show_template(
    ctx: typer.Context,
    template_id: Annotated[str, typer.Argument(help="The template id.", show_default=False)],
    version: Annotated[int, typer.Option("--version", help="A version; 0 is the latest.")] = 0,
    output: OutputOption = OutputFormat.table,
) -> None:
    """One template: its latest version, or the version asked for."""
    template = client(ctx).templates.get(template_id, version)
    show(output, template, lambda: print_fields(template))


@app.command("versions")
def versions(
    ctx: typer.Context,
    template_id: Annotated[str, typer.Argument(help="The template id.", show_default=False)],
    output: OutputOption = OutputFormat.table,
) -> None:
    """Every version of one template, newest first."""
    items = list(client(ctx).templates.versions(template_id))
    show(
        output,
        items,
        lambda: print_table(
            ["VERSION", "TASK", "CREATED", "DESCRIPTION"],
            [[t.version, t.task, when(t.create_time), t.description] for t in items],
            empty=f"no versions of {template_id}",
        ),
    )


@app.command("create")
def create(
    ctx: typer.Context,
    template_id: Annotated[str, typer.Argument(help="The template id.", show_default=False)],
    template: Annotated[
        str | None, typer.Option("--template", "-t", help="The template text; must hold {text}.")
    ] = None,
    template_file: Annotated[
        Path | None,
        typer.Option(
            "--template-file",
            help="Read the template text from this file instead.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    task: Annotated[str, typer.Option("--task", help="summarization, extraction, ...")] = "",
    output: OutputOption = OutputFormat.table,
) -> None:
    """Creates a template, or the next version of an existing one."""
    if (template is None) == (template_file is None):
        fail("give the template text with --template or --template-file (one of them)")
    text = template if template is not None else Path(str(template_file)).read_text("utf-8")
    created = client(ctx).templates.create(template_id, text, description, task)
    show(output, created, lambda: print_fields(created))


@app.command("validate")
def validate(
    file: Annotated[
        Path,
        typer.Option("--file", "-f", help="The template file to check.", dir_okay=False),
    ] = DEFAULT_TEMPLATE_FILE,
) -> None:
    """Checks a prompt-template file locally (no server needed); exit 1 on problems."""
    from llmops.templates import load_template_file, validate_template_file

    problems = validate_template_file(file)
    if problems:
        for problem in problems:
            typer.echo(f"{file}: {problem}")
        raise typer.Exit(code=1)
    typer.echo(f"OK: {len(load_template_file(file))} templates")
