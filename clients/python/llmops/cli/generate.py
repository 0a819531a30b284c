"""`llmops generate`: one completion from a model, a base, an adapter or `name@alias`, for a raw
prompt or a text rendered into a prompt template; `--stream` prints the text as it is made."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from llmops.cli._common import (
    OutputFormat,
    OutputOption,
    client,
    print_json,
    to_dict,
    usage_fail,
)


def generate(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Option("--model", "-m", help="Model id, name or name@alias (default: the server's)."),
    ] = "",
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="A raw prompt.")] = "",
    template: Annotated[
        str, typer.Option("--template", "-t", help="A prompt template id; --text fills {text}.")
    ] = "",
    text: Annotated[str, typer.Option("--text", help="The text for the template.")] = "",
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="At most this many new tokens (0: 64).")
    ] = 0,
    temperature: Annotated[float, typer.Option("--temperature", help="0 decodes greedily.")] = 0.0,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus mass when sampling.")] = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of a sampled answer.")] = 0,
    stop: Annotated[
        list[str] | None, typer.Option("--stop", help="Stop before this text (repeatable).")
    ] = None,
    stream: Annotated[
        bool, typer.Option("--stream", help="Print the text as it is generated.")
    ] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Generate a completion. Give --prompt, or --template with --text (or with --prompt)."""
    if not prompt and not (template and text):
        usage_fail("give --prompt, or --template with --text")
    request: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "template_id": template,
        "text": text,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
        "stop": stop or (),
    }
    inference = client(ctx).inference
    if not stream:
        response = inference.generate(**request)
        if output == OutputFormat.json:
            print_json(response)
        else:
            typer.echo(response.text)
        return
    messages = inference.stream_generate(**request)
    for message in messages:  # JSON: one object a line, as each message arrives
        if output == OutputFormat.json:
            typer.echo(json.dumps(to_dict(message)))
        else:
            typer.echo(message.text_delta, nl=False)
    if output != OutputFormat.json:
        typer.echo()
