"""`llmops eval`: run a model on an eval set (optionally judged by the gates), show and compare
runs. `eval run --gate --wait` exits 1 when a gate fails, so a CI pipeline can stop on it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from llmops.cli._common import OutputFormat, OutputOption, client, fail, print_table, show, when
from llmops.cli.first_run import with_tiny_models
from llmops.enums import short_name

if TYPE_CHECKING:
    from llmops.v1 import eval_service_pb2

app = typer.Typer(help="Eval runs: run, list, show, compare, cancel.", no_args_is_help=True)

RunId = Annotated[str, typer.Argument(help="The eval run id.", show_default=False)]


def _state(run: eval_service_pb2.EvalRun) -> str:
    from llmops.v1 import jobs_pb2

    return short_name(jobs_pb2.JobState.Name(run.state))


def _verdict(run: eval_service_pb2.EvalRun) -> str:
    if not run.gate:
        return "-"
    if not run.gates and not run.gate_passed:
        return "pending"
    return "passed" if run.gate_passed else "FAILED"


def _report(run: eval_service_pb2.EvalRun) -> None:
    """The run's metrics and gate verdicts as tables, for people."""
    typer.echo(f"eval run {run.id}: {_state(run)}, model {run.model}, dataset {run.dataset}")
    if run.error.message:
        typer.echo(f"error: {run.error.message}")
    print_table(
        ["TASK", "METRIC", "VALUE", "EXAMPLES"],
        [[m.task, m.metric, f"{m.value:.4f}", m.count] for m in run.metrics],
        empty="no metrics yet",
    )
    if run.gate:
        print_table(
            ["GATE", "VALUE", "THRESHOLD", "VERDICT"],
            [
                [
                    f"{g.task}/{g.metric}",
                    f"{g.value:.4f}",
                    f"{g.threshold:.4f}",
                    "pass" if g.passed else "FAIL",
                ]
                for g in run.gates
            ],
            empty="no gates",
        )
        typer.echo(f"gates: {_verdict(run)}")
    if run.report_uri:
        typer.echo(f"report: {run.report_uri}")


@app.command("run")
def run_eval(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="Model id, name or name@alias.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Eval dataset id or name.")],
    gate: Annotated[bool, typer.Option("--gate", help="Judge the run by the gates.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the run and report it.")] = False,
    task: Annotated[str, typer.Option("--task", help="Task of rows that name none.")] = "",
    limit: Annotated[int, typer.Option("--limit", help="At most this many rows (0: all).")] = 0,
    template: Annotated[str, typer.Option("--template", "-t", help="Prompt template id.")] = "",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="0: 64.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="0: 16.")] = 0,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits.")] = 3600,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Queues an eval run; with --wait, prints its metrics and gates and exits 1 when it fails
    or a gate fails."""
    from llmops.v1 import eval_service_pb2, jobs_pb2

    runs = client(ctx).eval
    generation = eval_service_pb2.GenerationConfig(
        max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    handle = with_tiny_models(
        ctx, lambda: runs.create(model, dataset, gate, template, task, limit, generation=generation)
    )
    if wait:
        handle.wait(timeout, poll_interval=1.0)
    run = handle.message
    show(output, run, lambda: _report(run) if wait else typer.echo(f"queued {run.id}"))
    if not wait:
        return
    if run.state != jobs_pb2.JOB_STATE_SUCCEEDED:
        fail(f"eval run {run.id} ended {_state(run)}: {run.error.message or 'no result'}")
    if run.gate and not run.gate_passed:
        failing = [g.description for g in run.gates if not g.passed]
        fail(f"eval run {run.id} failed the gates: {'; '.join(failing)}")


@app.command("show")
def show_run(ctx: typer.Context, run_id: RunId, output: OutputOption = OutputFormat.table) -> None:
    """One run, with its metrics and gate verdicts."""
    run = client(ctx).eval.get(run_id).message
    show(output, run, lambda: _report(run))


def _runs_table(items: Sequence[eval_service_pb2.EvalRun]) -> None:
    print_table(
        ["ID", "STATE", "MODEL", "DATASET", "GATES", "CREATED"],
        [[r.id, _state(r), r.model, r.dataset, _verdict(r), when(r.create_time)] for r in items],
        empty="no eval runs",
    )


@app.command("list")
def list_runs(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Only this model.")] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Eval runs, newest first."""
    items = [run.message for run in client(ctx).eval.list(model=model)]
    show(output, items, lambda: _runs_table(items))


@app.command("compare")
def compare(
    ctx: typer.Context,
    first: RunId,
    second: Annotated[str, typer.Argument(help="The second run id.", show_default=False)],
    output: OutputOption = OutputFormat.table,
) -> None:
    """Two runs side by side, per task and metric (delta = second - first)."""
    result = client(ctx).eval.compare(first, second)
    show(
        output,
        result,
        lambda: print_table(
            ["TASK", "METRIC", first, second, "DELTA"],
            [
                [r.task, r.metric, f"{r.first:.4f}", f"{r.second:.4f}", f"{r.delta:+.4f}"]
                for r in result.rows
            ],
            empty="no metric in common",
        ),
    )


@app.command("cancel")
def cancel(ctx: typer.Context, run_id: RunId, output: OutputOption = OutputFormat.table) -> None:
    """Cancels a run: at once when queued, after the current batch when running."""
    run = client(ctx).eval.cancel(run_id)
    show(output, run, lambda: typer.echo(f"{run.id}: {_state(run)}"))
