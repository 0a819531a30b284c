"""The workers' commands of the `llmops` CLI (`worker`, `models build-tiny`), plugged into the
SDK's command through the `llmops.cli` entry point (`register`; see `llmops.cli.plugins`).

The CLI loads this module whenever it starts, so it imports only Typer and the SDK's CLI at the
top; the worker, the tiny-model builder and torch are imported when a command runs."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from llmops.cli import models as models_cli
from llmops.cli._common import OutputFormat, OutputOption, client, fail, print_table, show
from llmops.cli.first_run import set_tiny_model_builder
from llmops.cli.plugins import group
from llmops_services.cli import DataDir, settings

if TYPE_CHECKING:
    from llmops.v1 import registry_service_pb2


def worker_command(
    data_dir: DataDir = None,
    threads: Annotated[int, typer.Option("--threads", help="Torch threads per job.")] = 1,
    print_launch: Annotated[
        int,
        typer.Option(
            "--print-launch",
            help="Print the command this worker runs for a job on N GPUs, and exit (dry run).",
            min=0,
            max=64,
            show_default=False,
        ),
    ] = 0,
    strategy: Annotated[
        str, typer.Option("--strategy", help="With --print-launch: ddp or fsdp.")
    ] = "ddp",
) -> None:
    """Run a training worker in the foreground; it joins the stack of the same data dir."""
    chosen = settings(data_dir=data_dir)
    if print_launch:
        typer.echo(_launch_line(chosen.worker_distributed_on_cpu, print_launch, strategy, threads))
        return
    if not chosen.redis_url:
        stack = chosen.data_dir / "stack.json"
        if stack.is_file():
            chosen.redis_url = str(json.loads(stack.read_text()).get("redis", ""))
    if not chosen.redis_url:
        typer.echo(
            "error: no Redis: set LLMOPS_REDIS_URL or start the stack with the same --data-dir",
            err=True,
        )
        raise typer.Exit(1)
    from llmops_workers.worker import run_worker

    run_worker(chosen, threads)


def _launch_line(on_cpu: bool, gpus: int, strategy: str, threads: int) -> str:
    """What the worker would run for a job on `gpus` GPUs: the spec, events and stop file lie in
    a run directory made per attempt (shown as RUN_DIR); the port is picked free per run."""
    import sys

    from llmops_workers.engines.launch import shell_line
    from llmops_workers.engines.spec import TrainingSpec

    if gpus < 2:
        fail("--print-launch takes 2 or more GPUs: a job on 0 or 1 runs in the worker's process")
    if strategy not in ("ddp", "fsdp"):
        fail(f"--strategy is ddp or fsdp, not {strategy!r}")
    spec = TrainingSpec(
        method="sft",
        base_model_dir=Path("BASE"),
        output_dir=Path("OUTPUT"),
        train_file=Path("TRAIN"),
        threads=threads,
        gpus=gpus,
        strategy="fsdp" if strategy == "fsdp" else "ddp",
        processes_on_cpu=on_cpu,
    )
    return shell_line(spec, Path("RUN_DIR"), sys.executable, 29500)


_NEEDS_ML = "building the tiny models needs the workers' ML stack (torch, transformers)"


def _default_models_dir() -> Path:
    """Beside the server's data: `$LLMOPS_DATA_DIR/models`, else `./artifacts/models`."""
    return Path(os.environ.get("LLMOPS_DATA_DIR") or "artifacts") / "models"


def _ensure_tiny_models(root: Path, pretrain_steps: int | None) -> dict[str, Path]:
    """Builds the tiny models missing under `root`, saying so on stderr; all their paths."""
    from llmops_workers import tiny

    root = root.expanduser().resolve()
    missing = [name for name in tiny.TINY_MODELS if not (root / name).is_dir()]
    if missing:
        typer.echo(f"building {', '.join(missing)} under {root} (about a minute)...", err=True)
    try:
        return tiny.ensure_tiny_models(root, pretrain_steps=pretrain_steps)
    except ImportError as err:
        fail(f"{_NEEDS_ML}: {err}")


def _register_tiny(
    ctx: typer.Context, paths: dict[str, Path], describe: Callable[[Path], str]
) -> list[registry_service_pb2.Model]:
    """Registers each built model as a base model unless that name already points at that path."""
    models = client(ctx).models
    registered: list[registry_service_pb2.Model] = []
    for name, path in paths.items():
        existing = next((m for m in models.list("base", name) if m.uri == str(path)), None)
        if existing is not None:
            typer.echo(f"{name} is already registered ({existing.id})", err=True)
            registered.append(existing)
            continue
        model = models.create(name, str(path), kind="base", description=describe(path))
        typer.echo(f"registered {name} ({model.id})", err=True)
        registered.append(model)
    return registered


def build_tiny(
    ctx: typer.Context,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            help="Where the models go (default $LLMOPS_DATA_DIR/models or ./artifacts/models).",
            show_default=False,
        ),
    ] = None,
    register_models: Annotated[
        bool,
        typer.Option("--register/--no-register", help="Register them as base models."),
    ] = True,
    pretrain_steps: Annotated[
        int | None,
        typer.Option(
            "--pretrain-steps",
            min=0,
            help="Pretraining steps of each model (default: about a minute for both).",
            show_default=False,
        ),
    ] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Builds the local tiny base models (llmops-tiny and llmops-tiny-student) and registers them.

    Trained here, deterministically; nothing is downloaded. Existing ones are kept as they are.
    """
    from llmops_workers import tiny

    paths = _ensure_tiny_models(output_dir or _default_models_dir(), pretrain_steps)
    if register_models:
        models = _register_tiny(ctx, paths, tiny.describe)
        show(output, models, lambda: models_cli.models_table(models, "no models"))
    elif output is OutputFormat.json:
        typer.echo(json.dumps({name: str(path) for name, path in paths.items()}, indent=2))
    else:
        print_table(["NAME", "PATH"], [[name, path] for name, path in paths.items()], empty="")


def build_missing_tiny_models(ctx: typer.Context) -> None:
    """What a client command does when it names a tiny model that is not registered yet (see
    `llmops.cli.first_run`): `build-tiny` with its defaults, progress on stderr only."""
    from llmops_workers import tiny

    paths = _ensure_tiny_models(_default_models_dir(), None)
    _register_tiny(ctx, paths, tiny.describe)


def register(app: typer.Typer) -> None:
    """The `llmops.cli` entry point: adds `worker`, `build-tiny` to `llmops models`, and the
    builder client commands use when they name a tiny model before it is registered."""
    app.command("worker")(worker_command)
    group(app, "models").command("build-tiny")(build_tiny)
    set_tiny_model_builder(build_missing_tiny_models)
