"""`llmops datasets`: upload, list, show and delete JSONL datasets."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from llmops.cli._common import (
    OutputFormat,
    OutputOption,
    client,
    print_fields,
    print_table,
    show,
    size,
    when,
)
from llmops.enums import short_name

if TYPE_CHECKING:
    from llmops.v1 import registry_service_pb2

app = typer.Typer(help="Datasets: upload, list, show, delete.", no_args_is_help=True)


class DatasetKind(StrEnum):
    """The row schemas a dataset can follow."""

    sft = "sft"
    preference = "preference"
    eval = "eval"


def _kind_name(value: registry_service_pb2.DatasetKind.ValueType) -> str:
    from llmops.v1 import registry_service_pb2

    return short_name(registry_service_pb2.DatasetKind.Name(value))


def _table(items: list[registry_service_pb2.Dataset], empty: str) -> None:
    print_table(
        ["ID", "NAME", "KIND", "ROWS", "SIZE", "CREATED"],
        [
            [d.id, d.name, _kind_name(d.kind), d.row_count, size(d.size_bytes), when(d.create_time)]
            for d in items
        ],
        empty=empty,
    )


@app.command("upload")
def upload(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            help="A JSONL file.", exists=True, dir_okay=False, readable=True, show_default=False
        ),
    ],
    kind: Annotated[
        DatasetKind,
        typer.Option(
            "--kind", "-k", help="The row schema to validate against.", show_default=False
        ),
    ],
    name: Annotated[
        str, typer.Option("--name", "-n", help="Default: <kind>-<sha256 prefix>.")
    ] = "",
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    output: OutputOption = OutputFormat.table,
) -> None:
    """Uploads a JSONL file; every row is validated, identical uploads are deduplicated."""
    response = client(ctx).datasets.upload(file, kind.value, name, description)

    def table() -> None:
        note = " (identical dataset already existed)" if response.already_existed else ""
        print_fields(response.dataset, title=f"uploaded {response.dataset.name}{note}")

    show(output, response, table)


@app.command("list")
def list_datasets(
    ctx: typer.Context,
    kind: Annotated[
        DatasetKind | None, typer.Option("--kind", "-k", help="Only this kind.")
    ] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Every dataset, newest first."""
    items = list(client(ctx).datasets.list(kind.value if kind else None))
    show(output, items, lambda: _table(items, "no datasets"))


@app.command("show")
def show_dataset(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Dataset id or name.", show_default=False)],
    output: OutputOption = OutputFormat.table,
) -> None:
    """One dataset, with its hash, row count and tasks."""
    dataset = client(ctx).datasets.get(ref)
    show(output, dataset, lambda: print_fields(dataset))


@app.command("delete")
def delete(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Dataset id or name.", show_default=False)],
) -> None:
    """Deletes a dataset (refused while a job uses it)."""
    client(ctx).datasets.delete(ref)
    typer.echo(f"deleted dataset {ref}")
