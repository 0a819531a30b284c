"""`llmops train sft|qlora|dpo|distill`: queue a fine-tuning job, optionally following it to its
end (`--wait`, exit 1 unless it succeeds, so a pipeline can stop on a failed run).

Hyperparameters go as `--set key=value`, with the libraries' names (`max_steps`, `lora_r`,
`target_modules=q_proj,v_proj`; `auto` leaves one to the platform). They are checked here,
before anything is queued: an unknown name is one `error:` line and exit status 2.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from llmops.cli._common import OutputFormat, OutputOption, client, print_json, show, usage_fail
from llmops.cli.first_run import with_tiny_models
from llmops.cli.jobs import exit_for, follow, print_job, state_name

if TYPE_CHECKING:
    from llmops.v1 import training_service_pb2

app = typer.Typer(
    help="Fine-tune a model: sft, qlora, dpo or distill (see `llmops jobs` to follow jobs).",
    no_args_is_help=True,
)

BaseModel = Annotated[
    str,
    typer.Option(
        "--base-model",
        "-b",
        help="Model id, name or name@alias (the student, for distill).",
        show_default=False,
    ),
]
Dataset = Annotated[
    str,
    typer.Option(
        "--dataset",
        "-d",
        help="Dataset id or name (sft rows; preference rows for dpo).",
        show_default=False,
    ),
]
Template = Annotated[
    str, typer.Option("--template", "-t", help="Prompt template the rows are rendered into.")
]
TemplateVersion = Annotated[
    int, typer.Option("--template-version", help="Template version (0: latest).", min=0)
]
ValidationDataset = Annotated[
    str, typer.Option("--validation-dataset", help="Dataset for validation loss.")
]
TeacherModel = Annotated[
    str,
    typer.Option("--teacher-model", help="The teacher model (distill).", show_default=False),
]
ParentModel = Annotated[
    str, typer.Option("--parent-model", help="Adapter to continue training from.")
]
OutputName = Annotated[
    str, typer.Option("--output-name", "-n", help="Name to register the result under.")
]
Sets = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="A hyperparameter as key=value (repeatable), e.g. --set max_steps=300.",
        show_default=False,
    ),
]
IdempotencyKey = Annotated[
    str, typer.Option("--idempotency-key", help="The same key returns the same job.")
]
Gpus = Annotated[
    int,
    typer.Option(
        "--gpus",
        help="GPUs to train on, one process each (0 or 1: a single process).",
        min=0,
        max=64,
    ),
]
Strategy = Annotated[
    str,
    typer.Option(
        "--strategy",
        help="How several GPUs share the work: ddp (default) or fsdp (large bases).",
        show_default=False,
    ),
]
Wait = Annotated[
    bool, typer.Option("--wait", help="Follow the job to its end; exit 1 unless it succeeds.")
]


def parse_sets(values: Sequence[str]) -> training_service_pb2.Hyperparameters:
    """`--set key=value` options as `Hyperparameters`; one `error:` line and exit 2 if bad."""
    from llmops.hyperparameters import hyperparameters_from_dict

    pairs: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            usage_fail(f"--set takes key=value, not {value!r}")
        pairs[key.strip()] = text.strip()
    try:
        return hyperparameters_from_dict(pairs)
    except ValueError as err:
        usage_fail(str(err))


def _train(
    ctx: typer.Context,
    method: str,
    *,
    base_model: str,
    dataset: str,
    template: str,
    template_version: int,
    validation_dataset: str,
    teacher_model: str,
    parent_model: str,
    output_name: str,
    sets: Sequence[str],
    idempotency_key: str,
    gpus: int,
    strategy: str,
    wait: bool,
    output: OutputFormat,
) -> None:
    hyperparameters = parse_sets(sets)
    training = client(ctx).training
    job = with_tiny_models(
        ctx,
        lambda: training.create(
            method,
            base_model,
            dataset,
            template_id=template,
            template_version=template_version,
            hyperparameters=hyperparameters,
            validation_dataset=validation_dataset,
            teacher_model=teacher_model,
            output_name=output_name,
            idempotency_key=idempotency_key,
            parent_model=parent_model,
            gpu_count=gpus,
            distributed_strategy=strategy,
        ),
    )
    if not wait:
        title = f"{job.id}: {state_name(job.state)}"
        show(output, job.message, lambda: print_job(job, title=title))
        return
    as_json = output is OutputFormat.json
    follow(job, lines_to_stderr=as_json)  # stdout stays one JSON document for scripts
    if as_json:
        print_json(job.message)
    elif job.result_model:
        typer.echo(f"{job.id} succeeded: result model {job.result_model}")
    exit_for(job)


def _command(method: str, summary: str) -> Callable[..., None]:
    """The `train METHOD` command; only distill takes (and needs) --teacher-model."""

    def command(
        ctx: typer.Context,
        base_model: BaseModel,
        dataset: Dataset,
        teacher_model: TeacherModel = "",
        template: Template = "",
        template_version: TemplateVersion = 0,
        validation_dataset: ValidationDataset = "",
        parent_model: ParentModel = "",
        output_name: OutputName = "",
        sets: Sets = None,
        idempotency_key: IdempotencyKey = "",
        gpus: Gpus = 0,
        strategy: Strategy = "",
        wait: Wait = False,
        output: OutputOption = OutputFormat.table,
    ) -> None:
        _train(
            ctx,
            method,
            base_model=base_model,
            dataset=dataset,
            template=template,
            template_version=template_version,
            validation_dataset=validation_dataset,
            teacher_model=teacher_model,
            parent_model=parent_model,
            output_name=output_name,
            sets=sets or [],
            idempotency_key=idempotency_key,
            gpus=gpus,
            strategy=strategy,
            wait=wait,
            output=output,
        )

    signature = inspect.signature(command, eval_str=True)
    parameters = []
    for parameter in signature.parameters.values():
        if parameter.name == "teacher_model":
            if method != "distill":
                continue
            parameter = parameter.replace(default=inspect.Parameter.empty)  # required
        parameters.append(parameter)
    command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    command.__doc__ = summary
    command.__name__ = f"train_{method}"
    return command


for _method, _summary in (
    ("sft", "LoRA supervised fine-tuning on prompt/completion (or chat) rows."),
    ("qlora", "LoRA on a 4-bit quantized base (needs a worker that can load bitsandbytes)."),
    ("dpo", "Direct preference optimization on prompt/chosen/rejected rows."),
    ("distill", "Distillation of --teacher-model into the base (student) model."),
):
    app.command(_method)(_command(_method, _summary))
