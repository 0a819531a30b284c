"""`llmops models`: registered models, their aliases (with history) and lineage; `merge` folds an
adapter into its base as a job (`--wait` follows it and exits 1 unless it succeeds)."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from llmops.cli._common import (
    OutputFormat,
    OutputOption,
    PluginGroup,
    client,
    print_fields,
    print_json,
    print_table,
    show,
    size,
    when,
)
from llmops.cli.jobs import exit_for, follow, print_job, state_name
from llmops.enums import choices, short_name

if TYPE_CHECKING:
    from llmops.v1 import registry_service_pb2

app = typer.Typer(
    cls=PluginGroup,
    help="Models: register, list, show, delete; aliases, rollback, lineage; merge adapters.",
    no_args_is_help=True,
)


class ModelKind(StrEnum):
    """What a model is."""

    base = "base"
    adapter = "adapter"
    merged = "merged"


ModelRef = Annotated[str, typer.Argument(help="Model id, name or name@alias.", show_default=False)]
ModelName = Annotated[str, typer.Argument(help="The model name.", show_default=False)]
AliasName = Annotated[str, typer.Argument(help="The alias, e.g. production.", show_default=False)]
Reason = Annotated[str, typer.Option("--reason", "-r", help="Why; kept in the alias history.")]


def _kind_name(value: registry_service_pb2.ModelKind.ValueType) -> str:
    from llmops.v1 import registry_service_pb2

    return short_name(registry_service_pb2.ModelKind.Name(value))


def models_table(items: Sequence[registry_service_pb2.Model], empty: str) -> None:
    """Models as a table (also for commands that plugins add to this group)."""
    print_table(
        ["ID", "NAME", "VERSION", "KIND", "ALIASES", "SIZE", "CREATED", "URI"],
        [
            [
                m.id,
                m.name,
                m.version,
                _kind_name(m.kind),
                ", ".join(m.aliases),
                size(m.size_bytes) if m.size_bytes else "",
                when(m.create_time),
                m.uri,
            ]
            for m in items
        ],
        empty=empty,
    )


def _aliases_table(items: Sequence[registry_service_pb2.ModelAlias], empty: str) -> None:
    print_table(
        ["NAME", "ALIAS", "MODEL", "UPDATED", "BY"],
        [[a.model_name, a.alias, a.model, when(a.update_time), a.updated_by] for a in items],
        empty=empty,
    )


@app.command("list")
def list_models(
    ctx: typer.Context,
    kind: Annotated[ModelKind | None, typer.Option("--kind", "-k", help="Only this kind.")] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Only this name.")] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Every model, newest first."""
    items = list(client(ctx).models.list(kind.value if kind else None, name))
    show(output, items, lambda: models_table(items, "no models"))


@app.command("show")
def show_model(
    ctx: typer.Context, ref: ModelRef, output: OutputOption = OutputFormat.table
) -> None:
    """One model, with its origin, metrics and aliases."""
    model = client(ctx).models.get(ref)
    show(output, model, lambda: print_fields(model))


def _uri(path: str) -> str:
    """Local directories go to the server as absolute paths; URLs and hub ids as given."""
    if "://" not in path and Path(path).exists():
        return str(Path(path).resolve())
    return path


@app.command("register")
def register(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The name to register it under.", show_default=False)],
    path: Annotated[
        str,
        typer.Option(
            "--path",
            "-p",
            help="A Hugging Face model directory, URL or hub id.",
            show_default=False,
        ),
    ],
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    trust_remote_code: Annotated[
        bool,
        typer.Option(
            "--trust-remote-code",
            help="Admins: let the code the model ships (config.json auto_map) run where it loads.",
        ),
    ] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Registers a base model."""
    model = client(ctx).models.create(
        name, _uri(path), "base", description, trust_remote_code=trust_remote_code
    )
    show(output, model, lambda: print_fields(model, title=f"registered {model.name} ({model.id})"))


@app.command("delete")
def delete(ctx: typer.Context, ref: ModelRef) -> None:
    """Deletes a model (refused while an alias or another model depends on it)."""
    client(ctx).models.delete(ref)
    typer.echo(f"deleted model {ref}")


@app.command("alias")
def alias(
    ctx: typer.Context,
    ref: ModelRef,
    alias_name: AliasName,
    reason: Reason = "",
    force: Annotated[
        bool, typer.Option("--force", help="Admins: move a protected alias without a gate.")
    ] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Points ALIAS of the model's name at the model (moving it if it exists)."""
    moved = client(ctx).models.set_alias(ref, alias_name, reason, force)
    title = f"{moved.model_name}@{moved.alias} -> {moved.model}"
    show(output, moved, lambda: typer.echo(title))


@app.command("unalias")
def unalias(ctx: typer.Context, name: ModelName, alias_name: AliasName) -> None:
    """Removes an alias."""
    client(ctx).models.delete_alias(name, alias_name)
    typer.echo(f"removed alias {name}@{alias_name}")


@app.command("aliases")
def aliases(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Argument(help="Only this model name.", show_default=False)
    ] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """The aliases of a model name, or of every name."""
    items = list(client(ctx).models.aliases(name))
    show(output, items, lambda: _aliases_table(items, "no aliases"))


@app.command("alias-history")
def alias_history(
    ctx: typer.Context,
    name: ModelName,
    alias_name: Annotated[
        str | None,
        typer.Argument(help="The alias (default: every current alias).", show_default=False),
    ] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Every move of an alias (or of each current alias of NAME), newest first."""
    models = client(ctx).models
    if alias_name:
        moves = list(models.alias_history(name, alias_name))
    else:
        moves = [m for a in models.aliases(name) for m in models.alias_history(name, a.alias)]
        moves.sort(key=lambda m: (m.create_time.seconds, m.create_time.nanos), reverse=True)
    shown = f"{name}@{alias_name}" if alias_name else f"the aliases of {name}"

    def table() -> None:
        headers = ["WHEN", "FROM", "TO", "ACTOR", "REASON", "EVAL RUN", "FORCED"]
        rows: list[list[object]] = [
            [
                when(m.create_time),
                m.from_model,
                m.to_model,
                m.actor,
                m.reason,
                m.eval_run,
                m.forced,
            ]
            for m in moves
        ]
        if not alias_name:  # several aliases: say which one moved
            headers.insert(1, "ALIAS")
            for row, move in zip(rows, moves, strict=True):
                row.insert(1, move.alias)
        print_table(headers, rows, empty=f"no history for {shown}")

    show(output, moves, table)


@app.command("rollback")
def rollback(
    ctx: typer.Context,
    name: ModelName,
    alias_name: AliasName,
    reason: Reason = "",
    output: OutputOption = OutputFormat.table,
) -> None:
    """Moves an alias back to the model it pointed at before its last move."""
    moved = client(ctx).models.rollback(name, alias_name, reason)
    title = f"{moved.model_name}@{moved.alias} -> {moved.model}"
    show(output, moved, lambda: typer.echo(title))


@app.command("lineage")
def lineage(ctx: typer.Context, ref: ModelRef, output: OutputOption = OutputFormat.table) -> None:
    """Where a model came from (base, dataset, job) and what became of it."""
    result = client(ctx).models.lineage(ref)

    def table() -> None:
        print_fields(result.model, title=f"model {result.model.name} ({result.model.id})")
        for title, models in (("ancestors", result.ancestors), ("descendants", result.descendants)):
            typer.echo(f"\n{title}:")
            models_table(models, empty=f"no {title}")
        typer.echo("\neval runs:")
        for run in result.eval_runs:
            typer.echo(run)
        if not result.eval_runs:
            typer.echo("no eval runs", err=True)
        typer.echo("\naliases:")
        _aliases_table(result.aliases, "no aliases")

    show(output, result, table)


@app.command("merge")
def merge(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Argument(help="The adapter: id, name or name@alias.", show_default=False)
    ],
    name: Annotated[
        str,
        typer.Option(
            "--name", "-n", help="Register the merged model as (default <adapter>-merged)."
        ),
    ] = "",
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    idempotency_key: Annotated[
        str, typer.Option("--idempotency-key", help="The same key returns the same job.")
    ] = "",
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the job to its end; exit 1 unless it succeeds.")
    ] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Merges an adapter into its base as a job, registering a merged model with its lineage."""
    job = client(ctx).models.merge(model, name, description, idempotency_key=idempotency_key)
    if not wait:
        title = f"{job.id}: {state_name(job.state)}"
        show(output, job.message, lambda: print_job(job, title=title))
        return
    as_json = output is OutputFormat.json
    follow(job, lines_to_stderr=as_json)  # stdout stays one JSON document for scripts
    if as_json:
        print_json(job.message)
    elif job.result_model:
        typer.echo(f"{job.id} succeeded: merged model {job.result_model}")
    exit_for(job)


@app.command("merges")
def merges(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Argument(help="Only merges of this adapter.", show_default=False)
    ] = None,
    state: Annotated[
        str | None,
        typer.Option("--state", "-s", help=f"Only this state: {', '.join(choices('job_state'))}."),
    ] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Merge jobs, newest first."""
    items = [job.message for job in client(ctx).merges.list(model, state)]
    show(
        output,
        items,
        lambda: print_table(
            ["ID", "STATE", "ADAPTER", "BASE MODEL", "OUTPUT NAME", "RESULT", "CREATED"],
            [
                [
                    j.id,
                    state_name(j.state),
                    j.model,
                    j.base_model,
                    j.output_name,
                    j.result_model,
                    when(j.create_time),
                ]
                for j in items
            ],
            empty="no merge jobs",
        ),
    )
