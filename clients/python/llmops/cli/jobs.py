"""`llmops jobs`: training jobs by id: list, show, events, watch, cancel, pause, resume and
checkpoints. `show`, `events`, `watch` and `cancel` take eval run ids (`eval-...`) and merge job
ids (`merge-...`) too, so one command follows whatever the platform is running.

`watch` (and `train ... --wait`, which shares it) exits 0 when the job succeeds and 1 when it
fails or is cancelled, so scripts can chain on it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from llmops.cli._common import (
    OutputFormat,
    OutputOption,
    client,
    fail,
    print_fields,
    print_json,
    print_table,
    show,
    to_json,
    when,
)
from llmops.enums import choices, short_name

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from llmops._jobs import EvalRunHandle, MergeJobHandle, TrainingJobHandle
    from llmops.v1 import jobs_pb2

    AnyJob = TrainingJobHandle | EvalRunHandle | MergeJobHandle

app = typer.Typer(
    help="Training jobs: list, show, events, watch, cancel, pause, resume, checkpoints.",
    no_args_is_help=True,
)

JobId = Annotated[
    str,
    typer.Argument(
        help="The job id (ftjob-...; eval-... and merge-... where noted).", show_default=False
    ),
]
TrainingJobId = Annotated[str, typer.Argument(help="The training job id.", show_default=False)]

_EVAL_PREFIX = "eval-"
_MERGE_PREFIX = "merge-"


def state_name(state: jobs_pb2.JobState.ValueType) -> str:
    """`JOB_STATE_SUCCEEDED` as `succeeded`."""
    from llmops.v1 import jobs_pb2

    return short_name(jobs_pb2.JobState.Name(state))


def _method_name(job: TrainingJobHandle) -> str:
    from llmops.v1 import training_service_pb2

    return short_name(training_service_pb2.TrainingMethod.Name(job.method))


def _job(ctx: typer.Context, job_id: str) -> AnyJob:
    """A training job, or an eval run or merge job when the id says so."""
    if job_id.startswith(_EVAL_PREFIX):
        return client(ctx).eval.get(job_id)
    if job_id.startswith(_MERGE_PREFIX):
        return client(ctx).merges.get(job_id)
    return client(ctx).training.get(job_id)


def _step(job: AnyJob) -> str:
    progress = job.progress
    if progress.total_steps:
        return f"{progress.step}/{progress.total_steps}"
    return str(progress.step) if progress.step else ""


def _loss(job: TrainingJobHandle) -> str:
    loss = job.metrics.get("loss")
    return "" if loss is None else f"{loss:.4f}"


def print_job(job: AnyJob, title: str | None = None) -> None:
    """One job as `field: value` lines, for people."""
    print_fields(job.message, title=title)


def _jobs_table(items: Sequence[TrainingJobHandle]) -> None:
    print_table(
        ["ID", "METHOD", "STATE", "STEP", "LOSS", "BASE MODEL", "RESULT", "CREATED"],
        [
            [
                j.id,
                _method_name(j),
                state_name(j.state),
                _step(j),
                _loss(j),
                j.base_model,
                j.result_model,
                when(j.create_time),
            ]
            for j in items
        ],
        empty="no training jobs",
    )


@app.command("list")
def list_jobs(
    ctx: typer.Context,
    state: Annotated[
        str | None,
        typer.Option("--state", "-s", help=f"Only this state: {', '.join(choices('job_state'))}."),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method", "-m", help=f"Only this method: {', '.join(choices('training_method'))}."
        ),
    ] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Training jobs, newest first."""
    items = list(client(ctx).training.list(state=state, method=method))
    show(output, [j.message for j in items], lambda: _jobs_table(items))


@app.command("show")
def show_job(ctx: typer.Context, job_id: JobId, output: OutputOption = OutputFormat.table) -> None:
    """One job (or eval run, or merge job), with its progress, metrics and result."""
    job = _job(ctx, job_id)
    show(output, job.message, lambda: print_job(job))


# Events


_KEY_METRICS = ("loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_second", "epoch")


def _metrics_text(metrics: Mapping[str, float]) -> str:
    """The metrics people follow (all of them when none of those is there); JSON has all."""
    names = [name for name in _KEY_METRICS if name in metrics] or sorted(metrics)
    return " ".join(f"{name}={metrics[name]:.4g}" for name in names)


def event_line(event: jobs_pb2.JobEvent) -> str:
    """One event as one line: `#3 metrics step 2 loss=1.23 ...`."""
    from llmops.v1 import jobs_pb2

    kind = short_name(jobs_pb2.JobEventType.Name(event.type))
    parts = [f"#{event.sequence}", kind]
    if event.type == jobs_pb2.JOB_EVENT_TYPE_STATE_CHANGED:
        parts.append(state_name(event.state))
    if event.step:
        parts.append(f"step {event.step}")
    if event.metrics:
        parts.append(_metrics_text(event.metrics))
    if event.message:
        parts.append(event.message)
    return " ".join(" ".join(parts).split("\n"))


def _events_table(items: Sequence[jobs_pb2.JobEvent]) -> None:
    from llmops.v1 import jobs_pb2

    print_table(
        ["SEQ", "TIME", "TYPE", "STATE", "STEP", "DETAILS"],
        [
            [
                e.sequence,
                when(e.create_time),
                short_name(jobs_pb2.JobEventType.Name(e.type)),
                state_name(e.state) if e.type == jobs_pb2.JOB_EVENT_TYPE_STATE_CHANGED else "",
                e.step or "",
                " ".join(p for p in (_metrics_text(e.metrics), e.message) if p),
            ]
            for e in items
        ],
        empty="no events",
    )


@app.command("events")
def events(ctx: typer.Context, job_id: JobId, output: OutputOption = OutputFormat.table) -> None:
    """The events a job (or eval run, or merge job) has recorded so far, oldest first."""
    job = _job(ctx, job_id)
    items = list(job.events())
    show(output, items, lambda: _events_table(items))


class _Bar:
    """A rich progress bar fed by a job's events: step/total, loss, tokens/s and ETA."""

    def __init__(self, job: AnyJob, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.job = job
        self.progress: Progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[details]}"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        total = job.progress.total_steps or None
        self.task: TaskID = self.progress.add_task(
            f"{job.id} {state_name(job.state)}", total=total, details=""
        )

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, event: jobs_pb2.JobEvent) -> None:
        from llmops.v1 import jobs_pb2

        task = self.progress.tasks[0]
        if event.type == jobs_pb2.JOB_EVENT_TYPE_STATE_CHANGED:
            self.progress.update(self.task, description=f"{self.job.id} {state_name(event.state)}")
        if task.total is None and (event.step or event.type == jobs_pb2.JOB_EVENT_TYPE_METRICS):
            total = self.job.refresh().progress.total_steps  # known once the job runs
            if total:
                self.progress.update(self.task, total=total)
        if event.step:
            self.progress.update(self.task, completed=event.step)
        details = []
        if "loss" in event.metrics:
            details.append(f"loss {event.metrics['loss']:.4f}")
        if "tokens_per_second" in event.metrics:
            details.append(f"{event.metrics['tokens_per_second']:.0f} tok/s")
        if details:
            self.progress.update(self.task, details="  ".join(details))
        if event.message and event.type == jobs_pb2.JOB_EVENT_TYPE_MESSAGE:
            self.progress.console.print(event.message, markup=False, highlight=False)


def follow(job: AnyJob, *, lines_to_stderr: bool, json_lines: bool = False) -> AnyJob:
    """Follows a job to its end: a progress bar on a terminal, one line per event otherwise.

    Returns the job as it ended. The watch reconnects by itself if the connection drops.
    """
    from rich.console import Console

    console = Console(stderr=lines_to_stderr, highlight=False)
    stream: Iterator[jobs_pb2.JobEvent] = job.watch()
    if json_lines:
        for event in stream:
            typer.echo(json.dumps(to_json(event)), err=lines_to_stderr)
    elif console.is_terminal:
        with _Bar(job, console) as bar:
            for event in stream:
                bar.update(event)
    else:
        for event in stream:
            typer.echo(event_line(event), err=lines_to_stderr)
    job.refresh()
    if not job.done:  # the stream ended early (it should not): poll for the end instead
        job.wait(poll_interval=1.0)
    return job


def exit_for(job: AnyJob) -> None:
    """Exit 1 with the job's error unless it succeeded."""
    from llmops.v1 import jobs_pb2

    if job.state != jobs_pb2.JOB_STATE_SUCCEEDED:
        reason = job.error.message or "no result"
        fail(f"{job.id} ended {state_name(job.state)}: {reason}")


@app.command("watch")
def watch(ctx: typer.Context, job_id: JobId, output: OutputOption = OutputFormat.table) -> None:
    """Follows a job (or eval run, or merge job) until it ends; exits 1 unless it succeeds.

    With --output json, prints each event as one JSON object a line.
    """
    job = _job(ctx, job_id)
    follow(job, lines_to_stderr=False, json_lines=output is OutputFormat.json)
    if output is OutputFormat.table:
        _print_outcome(job)
    exit_for(job)


def _print_outcome(job: AnyJob) -> None:
    from llmops._jobs import MergeJobHandle, TrainingJobHandle
    from llmops.v1 import jobs_pb2

    if job.state != jobs_pb2.JOB_STATE_SUCCEEDED:
        return
    if isinstance(job, TrainingJobHandle | MergeJobHandle):
        typer.echo(f"{job.id} succeeded: result model {job.result_model}")
    else:
        typer.echo(f"{job.id} succeeded")


# Control


def _show_state(output: OutputFormat, job: AnyJob) -> None:
    show(output, job.message, lambda: typer.echo(f"{job.id}: {state_name(job.state)}"))


@app.command("cancel")
def cancel(ctx: typer.Context, job_id: JobId, output: OutputOption = OutputFormat.table) -> None:
    """Cancels a job (or eval run, or merge job): at once when queued or paused, at its next
    step otherwise."""
    job = _job(ctx, job_id).cancel()
    _show_state(output, job)


@app.command("pause")
def pause(
    ctx: typer.Context, job_id: TrainingJobId, output: OutputOption = OutputFormat.table
) -> None:
    """Pauses a training job: a running one checkpoints and frees its worker."""
    _show_state(output, client(ctx).training.get(job_id).pause())


@app.command("resume")
def resume(
    ctx: typer.Context, job_id: TrainingJobId, output: OutputOption = OutputFormat.table
) -> None:
    """Resumes a paused training job from its last checkpoint."""
    _show_state(output, client(ctx).training.get(job_id).resume())


@app.command("checkpoints")
def checkpoints(
    ctx: typer.Context, job_id: TrainingJobId, output: OutputOption = OutputFormat.table
) -> None:
    """A training job's checkpoints, oldest first, with the models registered from them."""
    items = list(client(ctx).training.checkpoints(job_id))
    show(
        output,
        items,
        lambda: print_table(
            ["STEP", "WRITTEN", "LOSS", "REGISTERED MODEL", "URI"],
            [
                [
                    c.step,
                    when(c.create_time),
                    f"{c.metrics['loss']:.4f}" if "loss" in c.metrics else "",
                    c.registered_model,
                    c.uri,
                ]
                for c in items
            ],
            empty=f"no checkpoints of {job_id}",
        ),
    )


@app.command("register-checkpoint")
def register_checkpoint(
    ctx: typer.Context,
    job_id: TrainingJobId,
    step: Annotated[int, typer.Argument(help="The checkpoint's step.", show_default=False, min=1)],
    output_name: Annotated[
        str, typer.Option("--output-name", "-n", help="Model name (default: the job's).")
    ] = "",
    output: OutputOption = OutputFormat.table,
) -> None:
    """Registers one checkpoint of a training job as a model, with lineage to the job."""
    model = client(ctx).training.register_checkpoint(job_id, step, output_name)
    if output is OutputFormat.json:
        print_json(model)
    else:
        print_fields(model, title=f"registered {model.name} ({model.id}) from step {step}")
