"""`llmops generate` and `llmops chat`: answers from a model, a base, an adapter or `name@alias`.

`generate` takes a raw prompt or a text rendered into a prompt template; `chat` takes a
conversation (rendered with the model's chat template): one turn from flags, or an interactive
loop on a terminal. `--stream` prints the text as it is made; `-n` asks for several answers.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Annotated, Any

import typer

from llmops.cli._common import (
    OutputFormat,
    OutputOption,
    client,
    print_json,
    to_json,
    usage_fail,
)
from llmops.cli.first_run import with_tiny_models
from llmops.v1 import inference_service_pb2

ModelOption = Annotated[
    str,
    typer.Option("--model", "-m", help="Model id, name or name@alias (default: the server's)."),
]
MaxNewTokens = Annotated[
    int, typer.Option("--max-new-tokens", help="At most this many new tokens (0: 64).")
]
Temperature = Annotated[float, typer.Option("--temperature", help="0 decodes greedily.")]
TopP = Annotated[float, typer.Option("--top-p", help="Nucleus mass when sampling.")]
TopK = Annotated[int, typer.Option("--top-k", help="Sample from the k likeliest (0: all).")]
RepetitionPenalty = Annotated[
    float, typer.Option("--repetition-penalty", help="Penalty on repeated tokens (0: none).")
]
Choices = Annotated[int, typer.Option("-n", help="How many answers (1..8).")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of a sampled answer.")]
Stop = Annotated[
    list[str] | None, typer.Option("--stop", help="Stop before this text (repeatable).")
]
StreamFlag = Annotated[bool, typer.Option("--stream", help="Print the text as it is generated.")]


def _sampling(
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    top_k: int,
    repetition_penalty: float,
    n: int,
    seed: int,
    stop: list[str] | None,
) -> dict[str, Any]:
    return {
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "repetition_penalty": repetition_penalty,
        "n": n,
        "seed": seed,
        "stop": stop or (),
    }


def _print_answer(response: inference_service_pb2.GenerateResponse, output: OutputFormat) -> None:
    if output == OutputFormat.json:
        print_json(response)
    elif len(response.choices) > 1:
        for choice in response.choices:
            typer.echo(f"[{choice.index}] {choice.text}")
    else:
        typer.echo(response.text)


def _print_stream(
    messages: Iterable[inference_service_pb2.StreamGenerateResponse], output: OutputFormat
) -> str:
    """Prints the deltas as they come (JSON: one object a line); returns answer 0's text."""
    text = ""
    for message in messages:
        if output == OutputFormat.json:
            typer.echo(json.dumps(to_json(message)))
        elif message.index == 0:  # several streamed answers would interleave: show the first
            typer.echo(message.text_delta, nl=False)
        if message.index == 0:
            text += message.text_delta
    if output != OutputFormat.json:
        typer.echo()
    return text


def generate(
    ctx: typer.Context,
    model: ModelOption = "",
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="A raw prompt.")] = "",
    template: Annotated[
        str, typer.Option("--template", "-t", help="A prompt template id; --text fills {text}.")
    ] = "",
    text: Annotated[str, typer.Option("--text", help="The text for the template.")] = "",
    max_new_tokens: MaxNewTokens = 0,
    temperature: Temperature = 0.0,
    top_p: TopP = 0.0,
    top_k: TopK = 0,
    repetition_penalty: RepetitionPenalty = 0.0,
    n: Choices = 0,
    seed: Seed = 0,
    stop: Stop = None,
    stream: StreamFlag = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Generate a completion. Give --prompt, or --template with --text (or with --prompt)."""
    if not prompt and not (template and text):
        usage_fail("give --prompt, or --template with --text")
    sampling = _sampling(
        max_new_tokens, temperature, top_p, top_k, repetition_penalty, n, seed, stop
    )
    inference = client(ctx).inference
    request: dict[str, Any] = {"template_id": template, "text": text, **sampling}
    if stream:
        with_tiny_models(
            ctx, lambda: _print_stream(inference.stream(model, prompt, **request), output)
        )
    else:
        _print_answer(
            with_tiny_models(ctx, lambda: inference.generate(model, prompt, **request)), output
        )


def chat(
    ctx: typer.Context,
    message: Annotated[
        str | None,
        typer.Argument(help="Your message; without it, a conversation on the terminal."),
    ] = None,
    model: ModelOption = "",
    system: Annotated[str, typer.Option("--system", "-s", help="A system message first.")] = "",
    max_new_tokens: MaxNewTokens = 0,
    temperature: Temperature = 0.0,
    top_p: TopP = 0.0,
    top_k: TopK = 0,
    repetition_penalty: RepetitionPenalty = 0.0,
    n: Choices = 0,
    seed: Seed = 0,
    stop: Stop = None,
    stream: StreamFlag = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Chat with a model through its chat template: one turn (MESSAGE, or stdin when it is not
    a terminal), or, on a terminal, a conversation until an empty line or end of input."""
    sampling = _sampling(
        max_new_tokens, temperature, top_p, top_k, repetition_penalty, n, seed, stop
    )
    inference = client(ctx).inference
    history: list[tuple[str, str]] = [("system", system)] if system else []

    def turn(content: str) -> None:
        history.append(("user", content))
        if stream:
            answer = with_tiny_models(
                ctx,
                lambda: _print_stream(
                    inference.stream(model, messages=history, **sampling), output
                ),
            )
        else:
            response = with_tiny_models(
                ctx, lambda: inference.generate(model, messages=history, **sampling)
            )
            _print_answer(response, output)
            answer = response.text
        history.append(("assistant", answer))

    if message is not None:
        turn(message)
        return
    if not sys.stdin.isatty():
        piped = sys.stdin.read().strip()
        if not piped:
            usage_fail("give a message, or pipe one on stdin")
        turn(piped)
        return
    while True:  # a conversation: each answer joins the history the next turn is sent with
        try:
            content = typer.prompt("you", default="", show_default=False, prompt_suffix="> ")
        except (EOFError, typer.Abort):
            break
        if not content.strip():
            break
        turn(content)
