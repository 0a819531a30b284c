"""The Inference service on a real server with real tiny models and real LoRA adapters: answers
equal plain `model.generate`, alone or batched with other adapters; streams equal unary
answers; aliases, templates, stop strings, limits, cancellation and adapter eviction."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
import pytest

import llmops
from llmops.templates import render
from llmops.v1 import inference_service_pb2 as ipb
from llmops.v1 import inference_service_pb2_grpc, registry_service_pb2_grpc
from llmops.v1 import registry_service_pb2 as pb
from tests.conftest import ServerThread, make_settings
from tests.integration.helpers import (
    base_model,
    expect_error,
    make_base_model_dir,
)
from tests.integration.served_models import Reference, make_lora_adapters, plain_generate
from tests.stored import put_tree
from tests.tiny_models import TinyModels

if TYPE_CHECKING:
    from llmops.v1.inference_service_pb2_grpc import InferenceServiceAsyncStub
    from llmops.v1.registry_service_pb2_grpc import RegistryServiceAsyncStub

Inference: TypeAlias = "InferenceServiceAsyncStub"
Registry: TypeAlias = "RegistryServiceAsyncStub"

PROMPT = "Summarize: the tiny model reads a short text about a river and a town."
TOKENS = 12
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="session")
def adapters(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_lora_adapters(tiny_models.base, tmp_path_factory.mktemp("adapters"))


@pytest.fixture(scope="session")
def reference(tiny_models: TinyModels) -> Reference:
    return plain_generate(tiny_models.base)


@dataclass
class Stack:
    server: ServerThread
    registry: Registry
    inference: Inference
    base_id: str
    adapter_ids: list[str]


@pytest.fixture
async def serve(
    data_dir: Path, tiny_models: TinyModels, adapters: list[Path]
) -> AsyncIterator[Callable[..., Any]]:
    """Starts a server with the given settings, the tiny base registered as `tiny` and the two
    adapters as `helper` versions 1 and 2."""
    running: list[ServerThread] = []
    internal_before: list[float] = []  # the metrics are the process's: count from here
    channels: list[grpc.aio.Channel] = []

    async def start(**overrides: Any) -> Stack:
        # On the CPU in float32, where the references are computed (a GPU runs bfloat16).
        settings = make_settings(data_dir, inference_threads=1, inference_device="cpu", **overrides)
        server = ServerThread(settings).start()
        running.append(server)
        internal_before.append(_internal_errors(server.metrics_url))
        channel = grpc.aio.insecure_channel(server.address)
        channels.append(channel)
        registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
        base = await registry.CreateModel(base_model("tiny", tiny_models.base))
        ids = []
        for path in adapters:
            request = pb.CreateModelRequest(
                model=pb.Model(
                    name="helper",
                    kind=pb.MODEL_KIND_ADAPTER,
                    uri=str(path),
                    origin=pb.ModelOrigin(base_model=base.id),
                )
            )
            ids.append((await registry.CreateModel(request)).id)
        inference = inference_service_pb2_grpc.InferenceServiceStub(channel)
        return Stack(server, registry, inference, base.id, ids)

    yield start
    for channel in channels:
        await channel.close(None)
    for server, before in zip(running, internal_before, strict=True):
        try:
            assert _internal_errors(server.metrics_url) == before, "a call answered INTERNAL"
        finally:
            server.stop()


def _internal_errors(metrics_url: str) -> float:
    """How many calls the server answered with INTERNAL (a bug), from its Prometheus metrics."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("grpc_server_handled_total{") and 'grpc_code="INTERNAL"' in line
    )


@pytest.fixture
async def stack(serve: Callable[..., Any]) -> AsyncIterator[Stack]:
    yield await serve()


def request(model: str, prompt: str = PROMPT, **sampling: Any) -> ipb.GenerateRequest:
    sampling.setdefault("max_new_tokens", TOKENS)
    return ipb.GenerateRequest(model=model, prompt=prompt, sampling=ipb.SamplingParams(**sampling))


async def streamed(inference: Inference, generate: ipb.GenerateRequest) -> list[Any]:
    call = inference.StreamGenerate(ipb.StreamGenerateRequest(request=generate))
    return [message async for message in call]


async def test_an_adapter_answers_as_plain_generate_does_and_unlike_the_base(
    stack: Stack, adapters: list[Path], reference: Reference
) -> None:
    base = await stack.inference.Generate(request("tiny"))
    adapter = await stack.inference.Generate(request(stack.adapter_ids[0]))
    assert base.text == reference(None, PROMPT, TOKENS)
    assert adapter.text == reference(adapters[0], PROMPT, TOKENS)
    assert adapter.text != base.text
    assert (base.model, adapter.model) == (stack.base_id, stack.adapter_ids[0])
    assert adapter.rendered_prompt == PROMPT
    assert adapter.finish_reason in (ipb.FINISH_REASON_LENGTH, ipb.FINISH_REASON_STOP)
    assert adapter.usage.prompt_tokens > 0
    assert 0 < adapter.usage.completion_tokens <= TOKENS


async def test_two_adapters_in_flight_at_once_answer_as_each_does_alone(stack: Stack) -> None:
    models = ["tiny", *stack.adapter_ids]
    prompts = [PROMPT, "Classify: the river is calm today.", "Extract: Ada lives in London."]
    alone = {
        (m, p): (await stack.inference.Generate(request(m, p, max_new_tokens=20))).text
        for m in models
        for p in prompts
    }
    inference = stack.server.process.inference
    assert inference is not None
    [base] = inference.engine._bases.values()  # type: ignore[attr-defined]
    engine = base.loop.core.engine  # the BatchEngine, on its thread in this process
    step = engine.step
    mixes: list[int] = []

    def watched() -> Any:
        mixes.append(len(engine.adapters_in_flight()))
        return step()

    engine.step = watched
    pairs = [(m, p) for m in models for p in prompts] * 2
    together = await asyncio.gather(
        *(stack.inference.Generate(request(m, p, max_new_tokens=20)) for m, p in pairs)
    )
    assert [r.text for r in together] == [alone[pair] for pair in pairs]
    assert max(mixes) == 2  # both adapters were in flight at one step
    assert len({alone[(m, PROMPT)] for m in models}) == 3


async def test_the_concatenated_stream_is_the_unary_answer(stack: Stack) -> None:
    for model in ("tiny", stack.adapter_ids[1]):
        unary = await stack.inference.Generate(request(model, max_new_tokens=24))
        messages = await streamed(stack.inference, request(model, max_new_tokens=24))
        assert messages[0].model == unary.model
        assert all(not m.model for m in messages[1:])
        assert "".join(m.text_delta for m in messages) == unary.text
        assert [m.finish_reason for m in messages[:-1]] == [0] * (len(messages) - 1)
        assert messages[-1].finish_reason == unary.finish_reason
        assert messages[-1].usage == unary.usage


async def test_a_stop_string_ends_the_answer_before_it(stack: Stack) -> None:
    full = await stack.inference.Generate(request("tiny", max_new_tokens=24))
    assert len(full.text) > 8, full.text
    stop = full.text[5:8]
    cut = full.text[: full.text.find(stop)]
    stopped = await stack.inference.Generate(request("tiny", max_new_tokens=24, stop=[stop]))
    assert (stopped.text, stopped.finish_reason) == (cut, ipb.FINISH_REASON_STOP)
    assert stopped.usage.completion_tokens < full.usage.completion_tokens
    messages = await streamed(stack.inference, request("tiny", max_new_tokens=24, stop=[stop]))
    assert "".join(m.text_delta for m in messages) == cut
    assert messages[-1].finish_reason == ipb.FINISH_REASON_STOP


async def test_moving_an_alias_changes_the_next_answer(stack: Stack) -> None:
    first, second = stack.adapter_ids
    alone = [(await stack.inference.Generate(request(m))).text for m in (first, second)]
    await stack.registry.SetModelAlias(pb.SetModelAliasRequest(model=first, alias="production"))
    served = await stack.inference.Generate(request("helper@production"))
    assert (served.model, served.text) == (first, alone[0])
    await stack.registry.SetModelAlias(pb.SetModelAliasRequest(model=second, alias="production"))
    served = await stack.inference.Generate(request("helper@production"))
    assert (served.model, served.text) == (second, alone[1])
    newest = await stack.inference.Generate(request("helper"))  # a bare name: newest version
    assert newest.model == second


async def test_the_default_model_is_the_production_alias_of_the_default_name(
    serve: Callable[..., Any], tiny_models: TinyModels
) -> None:
    stack: Stack = await serve(inference_default_model="helper")
    served = await stack.inference.Generate(request(""))
    assert served.model == stack.adapter_ids[1]  # no alias yet: the newest version
    await stack.registry.SetModelAlias(
        pb.SetModelAliasRequest(model=stack.adapter_ids[0], alias="production")
    )
    served = await stack.inference.Generate(request(""))
    assert served.model == stack.adapter_ids[0]


async def test_a_prompt_alone_fills_the_templates_text(stack: Stack) -> None:
    template = await stack.registry.GetPromptTemplate(
        pb.GetPromptTemplateRequest(template_id="summarization")
    )
    generate = ipb.GenerateRequest(
        model="tiny",
        prompt="The river runs past the town.",
        template_id="summarization",
        sampling=ipb.SamplingParams(max_new_tokens=4),
    )
    rendered = render(template.template, "The river runs past the town.")
    answer = await stack.inference.Generate(generate)
    assert answer.rendered_prompt == rendered
    verbatim = await stack.inference.Generate(request("tiny", rendered, max_new_tokens=4))
    assert answer.text == verbatim.text
    with_text = ipb.GenerateRequest(
        model="tiny",
        template_id="summarization",
        text="The river runs past the town.",
        sampling=ipb.SamplingParams(max_new_tokens=4),
    )
    assert (await stack.inference.Generate(with_text)).rendered_prompt == rendered


async def _wait_served(stack: Stack, model: str, timeout: float = 2.0) -> ipb.GenerateResponse:
    """A request that must be served (the slot of a cancelled call is free within `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer: ipb.GenerateResponse = await stack.inference.Generate(request(model))
            return answer
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)


def _engine_idle(stack: Stack) -> bool:
    inference = stack.server.process.inference
    assert inference is not None
    return all(b.running == 0 and b.waiting == 0 for b in inference.engine.describe())


async def test_a_full_engine_answers_resource_exhausted_with_a_retry_hint(
    serve: Callable[..., Any],
) -> None:
    stack: Stack = await serve(inference_max_queued=1)
    await stack.inference.Generate(request("tiny"))  # loads the base
    long = stack.inference.StreamGenerate(
        ipb.StreamGenerateRequest(request=request("tiny", max_new_tokens=2000))
    )
    await long.read()  # in flight
    refused = await expect_error(
        stack.inference.Generate(request("tiny")), grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    assert refused.retry_info is not None
    assert refused.retry_info.retry_delay.ToNanoseconds() == 1_000_000_000  # the default, 1 s
    async with llmops.AsyncClient(stack.server.address, timeout=10) as client:
        with pytest.raises(llmops.ResourceExhausted) as caught:
            await client.inference.generate("tiny", PROMPT)
    assert caught.value.retry_delay == 1.0
    long.cancel()
    await _wait_served(stack, "tiny")


async def test_a_cancelled_or_timed_out_call_frees_its_slot_at_once(
    serve: Callable[..., Any],
) -> None:
    stack: Stack = await serve(inference_max_queued=1)
    adapter = stack.adapter_ids[0]
    alone = (await stack.inference.Generate(request(adapter))).text
    stream = stack.inference.StreamGenerate(
        ipb.StreamGenerateRequest(request=request(adapter, max_new_tokens=2000))
    )
    await stream.read()
    stream.cancel()
    assert (await _wait_served(stack, adapter)).text == alone
    timed = stack.inference.Generate(request(adapter, max_new_tokens=2000), timeout=0.05)
    await expect_timeout(timed)
    assert (await _wait_served(stack, adapter)).text == alone
    deadline = time.monotonic() + 2
    while not _engine_idle(stack):
        assert time.monotonic() < deadline, "the engine still runs a cancelled request"
        await asyncio.sleep(0.01)


async def expect_timeout(call: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_an_evicted_adapter_reloads_with_the_same_answer(
    serve: Callable[..., Any], reference: Reference
) -> None:
    stack: Stack = await serve(inference_max_adapters=1)
    first, second = stack.adapter_ids
    answer = (await stack.inference.Generate(request(first))).text
    other = (await stack.inference.Generate(request(second))).text
    inference = stack.server.process.inference
    assert inference is not None
    [state] = inference.engine.describe()
    assert [a.adapter_id for a in state.adapters] == [second]
    assert (await stack.inference.Generate(request(first))).text == answer
    [state] = inference.engine.describe()
    assert [a.adapter_id for a in state.adapters] == [first]
    assert (await stack.inference.Generate(request(second))).text == other
    base = await stack.inference.Generate(request("tiny"))
    assert base.text == reference(None, PROMPT, TOKENS)  # attaching and evicting left it alone


async def test_a_seeded_sample_repeats_and_differs_from_greedy(stack: Stack) -> None:
    adapter = stack.adapter_ids[0]
    sampled = [
        (await stack.inference.Generate(request(adapter, temperature=1.5, seed=7))).text
        for _ in range(2)
    ]
    greedy = (await stack.inference.Generate(request(adapter))).text
    assert sampled[0] == sampled[1]
    assert sampled[0] != greedy


@pytest.mark.parametrize(
    ("sampling", "field"),
    [
        ({"max_new_tokens": -1}, "sampling.max_new_tokens"),
        ({"max_new_tokens": 100_000}, "sampling.max_new_tokens"),
        ({"temperature": -0.5}, "sampling.temperature"),
        ({"temperature": 2.5}, "sampling.temperature"),
        ({"top_p": 1.5}, "sampling.top_p"),
        ({"top_p": -0.1}, "sampling.top_p"),
        ({"stop": [""]}, "sampling.stop[0]"),
        ({"top_k": -1}, "sampling.top_k"),
        ({"top_k": 5000}, "sampling.top_k"),
        ({"repetition_penalty": -1.0}, "sampling.repetition_penalty"),
        ({"repetition_penalty": 3.0}, "sampling.repetition_penalty"),
        ({"n": -1}, "sampling.n"),
        ({"n": 9}, "sampling.n"),
    ],
)
async def test_bad_sampling_is_refused_with_field_violations(
    stack: Stack, sampling: dict[str, Any], field: str
) -> None:
    refused = await expect_error(stack.inference.Generate(request("tiny", **sampling)), INVALID)
    assert refused.fields == [field]
    call = stack.inference.StreamGenerate(
        ipb.StreamGenerateRequest(request=request("tiny", **sampling))
    )
    streamed_refusal = await expect_error(call.read(), INVALID)
    assert streamed_refusal.fields == [f"request.{field}"]


async def test_bad_prompts_are_refused_with_field_violations(stack: Stack) -> None:
    missing = await expect_error(stack.inference.Generate(request("tiny", "")), INVALID)
    assert missing.fields == ["prompt"]
    long = await expect_error(stack.inference.Generate(request("tiny", "river " * 400)), INVALID)
    assert long.fields == ["prompt"]
    assert "256" in long.violations["prompt"]
    text_alone = ipb.GenerateRequest(model="tiny", text="x")
    assert (await expect_error(stack.inference.Generate(text_alone), INVALID)).fields == [
        "template_id"
    ]
    both = ipb.GenerateRequest(model="tiny", prompt="x", text="y", template_id="summarization")
    assert (await expect_error(stack.inference.Generate(both), INVALID)).fields == ["prompt"]
    unknown_template = ipb.GenerateRequest(model="tiny", prompt="x", template_id="no-such")
    await expect_error(stack.inference.Generate(unknown_template), grpc.StatusCode.NOT_FOUND)


async def test_an_unknown_model_is_not_found_and_a_dataset_is_the_wrong_kind(
    stack: Stack,
) -> None:
    for ref in ("no-such-model", "mdl-000000000000", "helper@no-such-alias"):
        missing = await expect_error(
            stack.inference.Generate(request(ref)), grpc.StatusCode.NOT_FOUND
        )
        assert missing.resource_info is not None
        assert missing.resource_info.resource_name == ref
    dataset = await stack.registry.GetDataset(pb.GetDatasetRequest(dataset="demo-sft"))
    wrong = await expect_error(stack.inference.Generate(request(dataset.id)), INVALID)
    assert wrong.fields == ["model"]
    assert "dataset" in wrong.message
    # No default model registered: llmops-tiny is not there, and the error says how to build it.
    missing = await expect_error(stack.inference.Generate(request("")), grpc.StatusCode.NOT_FOUND)
    assert "llmops models build-tiny" in missing.message


async def test_a_model_whose_files_do_not_load_fails_its_precondition(
    stack: Stack, tmp_path: Path
) -> None:
    broken = await stack.registry.CreateModel(base_model("broken", make_base_model_dir(tmp_path)))
    refused = await expect_error(
        stack.inference.Generate(request(broken.id)), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert refused.subjects == [f"models/{broken.id}"]
    served = await stack.inference.Generate(request(stack.adapter_ids[0]))  # still serving
    assert served.text


async def test_a_failed_decode_step_ends_its_batch_and_serving_goes_on(stack: Stack) -> None:
    answer = (await stack.inference.Generate(request("tiny"))).text
    inference = stack.server.process.inference
    assert inference is not None
    [base] = inference.engine._bases.values()  # type: ignore[attr-defined]
    model = base.loop.core.model  # the decode loop's model, on its thread in this process
    forward = model.forward

    def broken(*args: Any, **kwargs: Any) -> Any:
        model.forward = forward  # fails once
        raise RuntimeError("out of memory (simulated)")

    model.forward = broken
    await expect_error(stack.inference.Generate(request("tiny")), grpc.StatusCode.UNAVAILABLE)
    assert (await stack.inference.Generate(request("tiny"))).text == answer


async def test_an_adapter_in_use_is_never_evicted(serve: Callable[..., Any]) -> None:
    stack: Stack = await serve(inference_max_adapters=1)
    first, second = stack.adapter_ids
    other = (await stack.inference.Generate(request(second))).text
    busy = stack.inference.StreamGenerate(
        ipb.StreamGenerateRequest(request=request(first, max_new_tokens=2000))
    )
    await busy.read()
    refused = await expect_error(
        stack.inference.Generate(request(second)), grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    assert "in use" in refused.message
    busy.cancel()
    assert (await _wait_served(stack, second)).text == other


async def test_a_model_in_the_artifact_store_is_served_from_it(
    stack: Stack, adapters: list[Path]
) -> None:
    key = "models/stored-adapter"
    put_tree(stack.server.settings.data_dir, adapters[0], key)
    stored = await stack.registry.CreateModel(
        pb.CreateModelRequest(
            model=pb.Model(
                name="stored",
                kind=pb.MODEL_KIND_ADAPTER,
                uri=f"store://{key}",
                origin=pb.ModelOrigin(base_model=stack.base_id),
            )
        )
    )
    served = await stack.inference.Generate(request(stored.id))
    local = await stack.inference.Generate(request(stack.adapter_ids[0]))
    assert served.text == local.text


async def test_llmops_generate_prints_the_answer_streams_it_and_speaks_json(
    stack: Stack, adapters: list[Path], reference: Reference
) -> None:
    """The CLI over the same server: `helper` is the newest version (the second adapter)."""
    import json

    from typer.testing import CliRunner

    from llmops.cli.main import app

    def llmops_cli(*args: str) -> Any:
        return CliRunner().invoke(app, ["--address", stack.server.address, *args])

    expected = reference(adapters[1], PROMPT, TOKENS)
    asked = ["generate", "--model", "helper", "--prompt", PROMPT, "--max-new-tokens", str(TOKENS)]
    plain = llmops_cli(*asked)
    assert (plain.exit_code, plain.stdout) == (0, expected + "\n"), plain.stderr
    streamed_out = llmops_cli(*asked, "--stream")
    assert (streamed_out.exit_code, streamed_out.stdout) == (0, expected + "\n")
    answer = json.loads(llmops_cli(*asked, "-o", "json").stdout)
    assert (answer["text"], answer["model"]) == (expected, stack.adapter_ids[1])
    lines = [
        json.loads(line)
        for line in llmops_cli(*asked, "--stream", "-o", "json").stdout.splitlines()
    ]
    assert lines[0]["model"] == stack.adapter_ids[1]
    assert "".join(line.get("text_delta", "") for line in lines) == expected
    assert lines[-1]["finish_reason"] in ("FINISH_REASON_LENGTH", "FINISH_REASON_STOP")

    templated = llmops_cli("generate", "-m", "tiny", "-t", "summarization", "--text", "A river.")
    assert templated.exit_code == 0, templated.stderr
    missing = llmops_cli("generate", "--model", "tiny")
    assert missing.exit_code == 2
    assert missing.stderr.strip() == "error: give --prompt, or --template with --text"
    refused = llmops_cli("generate", "--model", "ghost", "--prompt", PROMPT)
    assert refused.exit_code == 1 and refused.stderr.startswith("error: NOT_FOUND")


def chat(model: str, *turns: tuple[str, str], **sampling: Any) -> ipb.GenerateRequest:
    sampling.setdefault("max_new_tokens", TOKENS)
    messages = [ipb.ChatMessage(role=role, content=content) for role, content in turns]
    return ipb.GenerateRequest(
        model=model, messages=messages, sampling=ipb.SamplingParams(**sampling)
    )


CONVERSATION = (
    ("system", "You summarize."),
    ("user", "The river runs past the town."),
    ("assistant", "A river, a town."),
    ("user", "The bridge is old."),
)


async def test_messages_are_rendered_with_the_models_chat_template(
    stack: Stack, tiny_models: TinyModels, adapters: list[Path], reference: Callable[..., str]
) -> None:
    from llmops_ml import loading

    tokenizer = loading.load_tokenizer(tiny_models.base)
    expected = tokenizer.apply_chat_template(
        [{"role": r, "content": c} for r, c in CONVERSATION],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert isinstance(expected, str) and expected.endswith("assistant:")
    answer = await stack.inference.Generate(chat(stack.adapter_ids[0], *CONVERSATION))
    assert answer.rendered_prompt == expected
    assert answer.text == reference(adapters[0], expected, TOKENS)
    as_prompt = await stack.inference.Generate(request(stack.adapter_ids[0], expected))
    assert as_prompt.text == answer.text
    assert as_prompt.usage == answer.usage


async def test_bad_messages_are_refused_with_field_violations(stack: Stack) -> None:
    turn = ("user", "hello")
    with_prompt = chat("tiny", turn)
    with_prompt.prompt = "x"
    refused = await expect_error(stack.inference.Generate(with_prompt), INVALID)
    assert refused.fields == ["prompt"]
    with_template = chat("tiny", turn)
    with_template.template_id = "summarization"
    refused = await expect_error(stack.inference.Generate(with_template), INVALID)
    assert refused.fields == ["template_id"]
    refused = await expect_error(
        stack.inference.Generate(chat("tiny", turn, ("robot", "x"))), INVALID
    )
    assert refused.fields == ["messages[1].role"]
    long = chat("tiny", ("user", "river " * 400))
    refused = await expect_error(stack.inference.Generate(long), INVALID)
    assert refused.fields == ["messages"]
    call = stack.inference.StreamGenerate(
        ipb.StreamGenerateRequest(request=chat("tiny", ("", "x")))
    )
    assert (await expect_error(call.read(), INVALID)).fields == ["request.messages[0].role"]


async def test_a_model_without_a_chat_template_refuses_messages(
    stack: Stack, tiny_models: TinyModels, tmp_path: Path
) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(tiny_models.base, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    model = await stack.registry.CreateModel(base_model("plain", plain))
    refused = await expect_error(
        stack.inference.Generate(chat(model.id, ("user", "hi"))),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert refused.subjects == [f"models/{model.id}"]
    assert "chat template" in refused.message
    assert (await stack.inference.Generate(request(model.id))).text  # a prompt still works


async def test_n_answers_sample_with_seed_plus_their_index(stack: Stack) -> None:
    adapter = stack.adapter_ids[1]
    many = await stack.inference.Generate(request(adapter, temperature=1.5, seed=40, n=3))
    assert [c.index for c in many.choices] == [0, 1, 2]
    alone = [
        await stack.inference.Generate(request(adapter, temperature=1.5, seed=40 + i))
        for i in range(3)
    ]
    assert [c.text for c in many.choices] == [a.text for a in alone]
    assert [c.finish_reason for c in many.choices] == [a.finish_reason for a in alone]
    assert len({c.text for c in many.choices}) == 3
    assert (many.text, many.finish_reason) == (many.choices[0].text, many.choices[0].finish_reason)
    assert many.usage.prompt_tokens == alone[0].usage.prompt_tokens
    assert many.usage.completion_tokens == sum(a.usage.completion_tokens for a in alone)

    messages = await streamed(stack.inference, request(adapter, temperature=1.5, seed=40, n=3))
    texts = ["", "", ""]
    for message in messages:
        texts[message.index] += message.text_delta
    assert texts == [c.text for c in many.choices]
    ends = [m for m in messages if m.finish_reason]
    assert sorted(m.index for m in ends) == [0, 1, 2]
    assert [m.usage == many.usage for m in messages] == [False] * (len(messages) - 1) + [True]


async def test_top_k_and_repetition_penalty_reach_the_sampler(stack: Stack) -> None:
    adapter = stack.adapter_ids[0]
    greedy = (await stack.inference.Generate(request(adapter, max_new_tokens=40))).text
    top_1 = await stack.inference.Generate(
        request(adapter, max_new_tokens=40, temperature=1.5, top_k=1, seed=3)
    )
    assert top_1.text == greedy  # only the most likely token is left to sample
    sampled = await stack.inference.Generate(
        request(adapter, max_new_tokens=40, temperature=1.5, seed=3)
    )
    assert sampled.text != greedy
    penalized = [
        (
            await stack.inference.Generate(
                request(adapter, max_new_tokens=40, repetition_penalty=1.8)
            )
        ).text
        for _ in range(2)
    ]
    assert penalized[0] == penalized[1] != greedy


async def test_listed_served_models_show_bases_and_their_adapters_lru_first(
    serve: Callable[..., Any],
) -> None:
    stack: Stack = await serve(inference_max_adapters=2)
    empty = await stack.inference.ListServedModels(ipb.ListServedModelsRequest())
    assert (list(empty.models), empty.engine) == ([], "hf")
    first, second = stack.adapter_ids
    for model in (first, second, first):
        await stack.inference.Generate(request(model))
    [served] = (await stack.inference.ListServedModels(ipb.ListServedModelsRequest())).models
    assert served.model == stack.base_id
    assert [a.model for a in served.adapters] == [second, first]
    assert all(a.size_bytes > 0 and a.active_requests == 0 for a in served.adapters)
    busy = stack.inference.StreamGenerate(
        ipb.StreamGenerateRequest(request=request(second, max_new_tokens=2000))
    )
    await busy.read()
    [served] = (await stack.inference.ListServedModels(ipb.ListServedModelsRequest())).models
    assert [(a.model, a.active_requests) for a in served.adapters] == [(first, 0), (second, 1)]
    assert served.running_requests + served.queued_requests == 1
    busy.cancel()


async def test_llmops_chat_answers_one_turn_from_flags_or_stdin(
    stack: Stack, adapters: list[Path], reference: Reference
) -> None:
    """`llmops chat` renders the conversation with the chat template, as Generate does."""
    from typer.testing import CliRunner

    from llmops.cli.main import app

    def llmops_cli(*args: str, stdin: str | None = None) -> Any:
        return CliRunner().invoke(app, ["--address", stack.server.address, *args], input=stdin)

    expected = (
        await stack.inference.Generate(chat("helper", ("system", "Be brief."), ("user", "Hello")))
    ).text
    flags = ["chat", "-m", "helper", "--system", "Be brief.", "--max-new-tokens", str(TOKENS)]
    one = llmops_cli(*flags, "Hello")
    assert (one.exit_code, one.stdout) == (0, expected + "\n"), one.stderr
    piped = llmops_cli(*flags, "--stream", stdin="Hello\n")
    assert (piped.exit_code, piped.stdout) == (0, expected + "\n"), piped.stderr
    answer = json.loads(llmops_cli(*flags, "Hello", "-o", "json").stdout)
    assert answer["rendered_prompt"].startswith("system: Be brief.")
    several = llmops_cli(*flags, "Hello", "-n", "2", "--temperature", "1.2", "--seed", "5")
    assert several.stdout.startswith("[0] ") and "\n[1] " in several.stdout
    nothing = llmops_cli("chat", "-m", "helper", stdin="")
    assert nothing.exit_code == 2


def _scrape(metrics_url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample the server exposes, keyed by name and labels."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_count_answers_tokens_latencies_and_the_adapter_cache(
    serve: Callable[..., Any],
) -> None:
    stack: Stack = await serve(inference_max_adapters=1)
    first, second = stack.adapter_ids
    url = stack.server.metrics_url
    before = _scrape(url)

    def grew(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return _scrape(url).get(key, 0.0) - before.get(key, 0.0)

    answers = [
        await stack.inference.Generate(request(first)),  # a miss: attached
        await stack.inference.Generate(request(first)),  # a hit
        await stack.inference.Generate(request(second)),  # a miss, evicting the first
    ]
    stream = stack.inference.StreamGenerate(
        ipb.StreamGenerateRequest(request=request("tiny", max_new_tokens=2000))
    )
    await stream.read()
    stream.cancel()
    deadline = time.monotonic() + 5
    while not grew(
        "llmops_inference_requests_total", model=stack.base_id, finish_reason="cancelled"
    ):
        assert time.monotonic() < deadline, "the cancelled answer was never counted"
        await asyncio.sleep(0.01)

    reasons = {a.finish_reason for a in answers}
    finished = sum(
        grew("llmops_inference_requests_total", model=first, finish_reason=reason)
        for reason in ("stop", "length")
    )
    assert finished == 2 and reasons <= {ipb.FINISH_REASON_STOP, ipb.FINISH_REASON_LENGTH}
    assert grew("llmops_inference_generated_tokens_total", model=first) == sum(
        a.usage.completion_tokens for a in answers[:2]
    )
    assert (
        grew("llmops_inference_prompt_tokens_total", model=second) == answers[2].usage.prompt_tokens
    )
    assert grew("llmops_inference_generated_tokens_total", model=stack.base_id) >= 1
    assert grew("llmops_inference_time_to_first_token_seconds_count") == 4
    # one per delivery after an answer's first: one per step, fewer when a reader fell behind
    gaps = grew("llmops_inference_inter_token_latency_seconds_count")
    cancelled_tokens = grew("llmops_inference_generated_tokens_total", model=stack.base_id)
    assert 1 <= gaps <= sum(a.usage.completion_tokens - 1 for a in answers) + cancelled_tokens
    assert grew("llmops_inference_queue_wait_seconds_count") == 4
    assert grew("llmops_inference_batch_size_count") >= max(
        a.usage.completion_tokens for a in answers
    )
    assert grew("llmops_inference_adapter_cache_hits_total") == 1
    assert grew("llmops_inference_adapter_cache_misses_total") == 2
    assert grew("llmops_inference_adapter_cache_evictions_total") == 1
    loaded = _scrape(url)[
        ("llmops_inference_loaded_adapters", frozenset({("base_model", stack.base_id)}))
    ]
    assert loaded == 1
