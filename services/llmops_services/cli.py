"""The server's commands of the `llmops` CLI (`up`, `serve`, `gateway`, `keys`), plugged into the
SDK's command through the `llmops.cli` entry point (`register`; see `llmops.cli.plugins`).

The CLI loads this module whenever it starts, so it imports only Typer at the top; the server
itself (settings, database, services) is imported when a command runs."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from llmops_services.settings import Settings

SERVICES = ("registry", "training", "eval", "inference")

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (default $LLMOPS_DATA_DIR or ./artifacts)."),
]
GrpcPort = Annotated[int | None, typer.Option("--grpc-port", help="gRPC port; 0 picks a free one.")]
HttpPort = Annotated[
    int | None,
    typer.Option(
        "--http-port", help="REST gateway port (default 8000); 0 picks a free one, -1 none."
    ),
]
MetricsPort = Annotated[
    int | None, typer.Option("--metrics-port", help="Prometheus port; 0 picks a free one, -1 none.")
]
Output = Annotated[str, typer.Option("--output", "-o", help="table or json")]


def settings(**overrides: Any) -> Settings:
    """The server's settings with the given command-line values (None: not given) over them."""
    from llmops_services.settings import Settings

    given = {key: value for key, value in overrides.items() if value is not None}
    return Settings(**given)


def worker_threads(workers: int, cores: int | None = None) -> int:
    """Torch threads per job when `workers` share the machine: its cores split evenly, at least 1.

    One worker alone gets every core (a 2-core machine trains ~1.4x faster on 2 threads than on
    1); more workers split them, since torch processes that oversubscribe the cores slow each
    other down by far more than they gain.
    """
    available = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, available // max(1, workers))


def _serve(
    config: Settings,
    services: list[str],
    workers: int = 0,
    threads: int = 1,
    gateway: bool = False,
) -> None:
    import asyncio

    from llmops_services.app import serve
    from llmops_services.gateway import GatewayError

    try:
        asyncio.run(serve(config, services, workers, threads, gateway))
    except GatewayError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


def serve_command(
    services: Annotated[
        list[str] | None, typer.Argument(help="Services to host (default: all four).")
    ] = None,
    grpc_port: GrpcPort = None,
    metrics_port: MetricsPort = None,
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option("--host", help="Interface to bind.")] = None,
) -> None:
    """Run some or all of the gRPC services in the foreground until Ctrl-C or SIGTERM."""
    chosen = services or list(SERVICES)
    unknown = [s for s in chosen if s not in SERVICES]
    if unknown:
        typer.echo(
            f"error: unknown service(s) {', '.join(unknown)}; choose from {', '.join(SERVICES)}",
            err=True,
        )
        raise typer.Exit(2)
    _serve(
        settings(grpc_port=grpc_port, metrics_port=metrics_port, data_dir=data_dir, grpc_host=host),
        chosen,
    )


def up_command(
    grpc_port: GrpcPort = None,
    http_port: HttpPort = None,
    metrics_port: MetricsPort = None,
    data_dir: DataDir = None,
    workers: Annotated[
        int, typer.Option("--workers", help="Workers to start (0: start them apart).")
    ] = 1,
    threads: Annotated[
        int,
        typer.Option(
            "--threads", min=0, help="Torch threads per job of each worker (0: cores / workers)."
        ),
    ] = 0,
) -> None:
    """Run the whole stack with the embedded defaults (SQLite, local store) and the REST gateway
    in the foreground."""
    if workers and importlib.util.find_spec("llmops_workers") is None:
        typer.echo(
            "error: 'llmops up' starts workers from the workers package: pip install "
            "llmops-workers (or run the services alone with --workers 0)",
            err=True,
        )
        raise typer.Exit(1)
    chosen = settings(
        grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port, data_dir=data_dir
    )
    _serve(chosen, list(SERVICES), workers, threads or worker_threads(workers), gateway=True)


def gateway_command(
    context: typer.Context,
    http_port: Annotated[
        int | None, typer.Option("--http-port", help="Port to listen on (default 8000).")
    ] = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Interface to listen on (default localhost).")
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option("--backend", help="gRPC address of the services (default localhost:50051)."),
    ] = None,
) -> None:
    """Run the REST gateway (llmops-gateway) in the foreground; other arguments go to the binary
    (`llmops gateway -- -help` lists them, with their LLMOPS_GATEWAY_* variables)."""
    from llmops_services.gateway import GatewayError, find_binary

    try:
        binary = find_binary(os.environ.get("LLMOPS_GATEWAY_BINARY", ""))
    except GatewayError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    arguments = [str(binary)]
    if http_port is not None or host is not None:
        arguments += [
            "-listen",
            f"{host or 'localhost'}:{8000 if http_port is None else http_port}",
        ]
    if backend is not None:
        arguments += ["-backend", backend]
    arguments += context.args
    # The binary takes this process's place: signals, exit code and output are its own.
    os.execv(binary, arguments)


keys_app = typer.Typer(
    help="API keys (stored hashed in the server's database).", no_args_is_help=True
)


def _database(data_dir: Path | None) -> Any:
    from llmops_services.db.database import Database

    chosen = settings(data_dir=data_dir)
    chosen.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(chosen.resolved_database_url)
    db.migrate()
    return db


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option("--role", help="reader, writer or admin")],
    description: Annotated[str, typer.Option("--description", help="What the key is for.")] = "",
    data_dir: DataDir = None,
    output: Output = "table",
) -> None:
    """Create a key; its secret is printed once and cannot be shown again."""
    from llmops_services.errors import ServiceError
    from llmops_services.runtime.auth import create_key

    try:
        created = create_key(_database(data_dir), role, description)
    except ServiceError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(1) from None
    if output == "json":
        typer.echo(json.dumps({"id": created.key_id, "role": created.role, "key": created.secret}))
        return
    typer.echo(f"id      {created.key_id}\nrole    {created.role}\nkey     {created.secret}")
    typer.echo("Keep the key: it is not stored and cannot be shown again.", err=True)


@keys_app.command("list")
def keys_list(data_dir: DataDir = None, output: Output = "table") -> None:
    """List keys (never their secrets)."""
    from llmops_services.runtime.auth import list_keys

    keys = list_keys(_database(data_dir))
    if output == "json":
        typer.echo(json.dumps([vars(k) for k in keys], indent=2))
        return
    for key in keys:
        state = "revoked" if key.revoked else "active"
        typer.echo(f"{key.key_id}\t{key.role}\t{state}\t{key.create_time}\t{key.description}")


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDir = None) -> None:
    """Revoke a key; calls with it are refused from the next cache refresh on."""
    from llmops_services.errors import ServiceError
    from llmops_services.runtime.auth import revoke_key

    try:
        revoke_key(_database(data_dir), key_id)
    except ServiceError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"revoked {key_id}")


def register(app: typer.Typer) -> None:
    """The `llmops.cli` entry point: adds `serve`, `up`, `gateway` and `keys` to the `llmops`
    command."""
    app.command("serve")(serve_command)
    app.command("up")(up_command)
    app.command(
        "gateway", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
    )(gateway_command)
    app.add_typer(keys_app, name="keys")
