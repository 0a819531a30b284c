"""What every CLI command shares: the connection state, output formats and error handling.

Errors are handled in exactly one place, `LlmopsGroup.invoke`, so every command fails the same
way: one `error: ...` line on stderr and exit code 1, never a traceback. Bad arguments that only
a command can check (`usage_fail`) are one such line too, with exit code 2 as click gives.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from typer.core import TyperGroup

from llmops.enums import short_name

if TYPE_CHECKING:
    from llmops.client import Client
    from llmops.settings import ClientSettings


class OutputFormat(StrEnum):
    """How a command prints the resources it shows."""

    table = "table"
    json = "json"


OutputOption = Annotated[
    OutputFormat,
    typer.Option("--output", "-o", help="table for people, json for scripts.", show_default=True),
]


@dataclass
class CliState:
    """Global options, turned into a `Client` only when a command needs the server."""

    address: str | None = None
    api_key: str | None = None
    timeout: float | None = None
    tls: bool | None = None
    _client: Client | None = field(default=None, repr=False)

    def settings(self) -> ClientSettings:
        """The environment's settings with the command-line options applied over them."""
        from dataclasses import replace

        from llmops.settings import ClientSettings

        base = ClientSettings.from_env()
        overrides: dict[str, Any] = {}
        if self.address:
            overrides["address"] = self.address
        if self.api_key:
            overrides["api_key"] = self.api_key
        if self.timeout is not None:
            overrides["timeout"] = self.timeout
        if self.tls is not None:
            overrides["tls"] = self.tls
        return replace(base, **overrides)

    def client(self) -> Client:
        """The shared client, created on first use (so local commands never need a server)."""
        if self._client is None:
            from llmops.client import Client

            self._client = Client(settings=self.settings())
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def state(ctx: typer.Context) -> CliState:
    """The root command's state (a bare `CliState` when a command runs on its own in tests)."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
        root.call_on_close(root.obj.close)
    return root.obj


def client(ctx: typer.Context) -> Client:
    """The client for this invocation."""
    return state(ctx).client()


def fail(message: str) -> NoReturn:
    """Prints `error: <message>` on stderr and exits with code 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=1)


def usage_fail(message: str) -> NoReturn:
    """Prints `error: <message>` on stderr and exits with code 2, as for bad arguments.

    One line, unlike click's usage errors, for input that only the command itself can check.
    """
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


class PluginGroup(TyperGroup):
    """A command group that plugins add to: a server command whose package is missing answers
    with what to install (`llmops.cli.plugins`) instead of click's "No such command"."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        found = super().get_command(ctx, cmd_name)
        if found is None:
            from llmops.cli.plugins import missing_command

            found = missing_command(ctx, cmd_name)
        return found


class LlmopsGroup(PluginGroup):
    """The root command group: the one place where failures become an `error:` line."""

    def invoke(self, ctx: Any) -> Any:
        from llmops.errors import LlmopsError, Unavailable

        try:
            return super().invoke(ctx)
        except LlmopsError as err:
            line = str(err)
            if isinstance(err, Unavailable):
                line += f" (is the server running at {_address(ctx)}? "
                line += "set --address or LLMOPS_ADDRESS)"
            fail(line)
        except (ValueError, OSError) as err:
            fail(str(err) or type(err).__name__)
        except Exception as err:
            import grpc

            if isinstance(err, grpc.RpcError):
                from llmops.errors import from_rpc_error

                fail(str(from_rpc_error(err)))
            raise


def _address(ctx: Any) -> str:
    """The address the command talked to, for the hint on connection failures."""
    obj = ctx.obj
    if isinstance(obj, CliState):
        try:
            return obj.settings().address
        except ValueError:
            pass
    return "the configured address"


# Rendering


def to_dict(message: Message) -> dict[str, Any]:
    """The set fields of a message, with the proto field names users see in docs (for tables
    and `field: value` lines, which leave out what is unset)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def to_json(message: Message) -> dict[str, Any]:
    """What `--output json` prints for a message: every field, zero values included (a metric
    of 0.0 is `"value": 0.0`, not missing), and int64 fields as JSON numbers, as scripts
    expect; proto field names. (The REST gateway keeps proto3 JSON: int64 as strings.)"""
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )


def print_json(data: Message | Iterable[Message]) -> None:
    """One message as a JSON object, or several as a JSON array."""
    payload: Any = to_json(data) if isinstance(data, Message) else [to_json(item) for item in data]
    typer.echo(json.dumps(payload, indent=2))


def when(ts: Timestamp) -> str:
    """A timestamp for tables, in UTC to the second; empty when unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return ""
    return datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def size(n: int) -> str:
    """Bytes for people: 1.5 MiB rather than 1572864."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _is_tty() -> bool:
    return sys.stdout.isatty()


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], empty: str) -> None:
    """A table: rich on a terminal, plain aligned columns otherwise (for grep and awk).

    With no rows it prints `empty` on stderr, so stdout stays empty for scripts.
    """
    if not rows:
        typer.echo(empty, err=True)
        return
    cells = [[_cell(v) for v in row] for row in rows]
    if _is_tty():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(*headers, header_style="bold", box=None, pad_edge=False)
        for row in cells:
            # Text, not str: cells hold user text (reasons, descriptions) that rich must not
            # read as markup, which would drop "[bold]" and fail on "[/]".
            table.add_row(*(Text(value) for value in row))
        Console(highlight=False).print(table)
        return
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else ""
    return " ".join(str(value).split("\n"))


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, item, out)
    elif isinstance(value, list):
        if all(not isinstance(v, dict | list) for v in value):
            out.append((prefix, ", ".join(short_name(str(v)) for v in value)))
        else:
            out.append((prefix, json.dumps(value)))
    elif isinstance(value, str):
        out.append((prefix, short_name(value)))
    elif isinstance(value, bool):
        out.append((prefix, "true" if value else "false"))
    else:
        out.append((prefix, str(value)))


def print_fields(message: Message, title: str | None = None) -> None:
    """One resource as `field: value` lines (nested fields dotted, enums shortened)."""
    pairs: list[tuple[str, str]] = []
    _flatten("", to_dict(message), pairs)
    if title:
        typer.echo(title)
    if not pairs:
        return
    width = max(len(key) for key, _ in pairs)
    for key, value in pairs:
        if "\n" in value:
            typer.echo(f"{key}:")
            for line in value.split("\n"):
                typer.echo(f"  {line}")
        else:
            typer.echo(f"{(key + ':').ljust(width + 1)} {value}")


def show(
    output: OutputFormat,
    data: Message | Sequence[Message],
    table: Callable[[], None],
) -> None:
    """Prints `data` as JSON, or calls `table` to print it for people."""
    if output is OutputFormat.json:
        print_json(data)
    else:
        table()
