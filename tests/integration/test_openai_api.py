"""The OpenAI-compatible API (/openai/v1 on the real `llmops-gateway` binary) spoken to by the
unmodified `openai` Python SDK and by curl, in front of a real server serving the tiny model and
two LoRA adapters: greedy answers equal the gRPC `Generate` answers (and plain `model.generate`),
streams concatenate to the unary answer, the model list shows bases, adapters and aliases, and
refusals raise the SDK's own exception classes with OpenAI's `param` and `code`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from llmops.v1 import inference_service_pb2 as ipb
from llmops.v1 import inference_service_pb2_grpc, registry_service_pb2_grpc
from llmops.v1 import registry_service_pb2 as pb
from llmops_services.runtime.auth import create_key, revoke_key
from tests.conftest import ServerThread, make_settings
from tests.integration.helpers import base_model, db_of
from tests.integration.served_models import Reference, make_lora_adapters, plain_generate
from tests.integration.test_engine_conformance import PROMPTS, adapter_model
from tests.integration.test_gateway import curl, start_gateway

TOKENS = 16
SYSTEM = "You answer in a few words."
QUESTION = "Where does Ada Lovelace live?"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": QUESTION},
]


@dataclass
class Stack:
    """A server with the base `tiny` and the adapters `helper-a` (alias `production`) and
    `helper-b` on it, the gateway in front, and a gRPC stub for the reference answers."""

    server: ServerThread
    url: str
    inference: inference_service_pb2_grpc.InferenceServiceStub


@contextmanager
def serving(
    data_dir: Path, tiny_model: Path, adapters: list[Path], binary: Path, **overrides: Any
) -> Iterator[Stack]:
    settings = make_settings(data_dir, inference_threads=1, inference_device="cpu", **overrides)
    server = ServerThread(settings).start()
    channel = grpc.insecure_channel(server.address)
    try:
        registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
        base = registry.CreateModel(base_model("tiny", tiny_model))
        for name, path in zip(("helper-a", "helper-b"), adapters, strict=True):
            registry.CreateModel(adapter_model(name, path, base.id))
        registry.SetModelAlias(pb.SetModelAliasRequest(model="helper-a", alias="production"))
        gateway = start_gateway(binary, server.address)
        try:
            inference = inference_service_pb2_grpc.InferenceServiceStub(channel)
            yield Stack(server, gateway.url, inference)
        finally:
            gateway.stop()
    finally:
        channel.close()
        server.stop()


@contextmanager
def sdk(stack: Stack, api_key: str = "any-key-while-auth-is-off") -> Iterator[openai.OpenAI]:
    """The OpenAI SDK pointed at the gateway; no retries, so that refusals surface at once."""
    with openai.OpenAI(
        base_url=f"{stack.url}/openai/v1", api_key=api_key, max_retries=0, timeout=120
    ) as client:
        yield client


@pytest.fixture(scope="module")
def adapter_dirs(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_lora_adapters(tiny_model, tmp_path_factory.mktemp("openai-adapters"))


@pytest.fixture(scope="module")
def reference(tiny_model: Path) -> Reference:
    return plain_generate(tiny_model)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model: Path,
    adapter_dirs: list[Path],
    binary: Path,
) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("openai") / "data"
    with serving(data_dir, tiny_model, adapter_dirs, binary) as running:
        yield running


@pytest.fixture
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    with sdk(stack) as opened:
        yield opened


def grpc_chat(stack: Stack, model: str, **sampling: Any) -> ipb.GenerateResponse:
    """The gRPC answer to MESSAGES."""
    sampling.setdefault("max_new_tokens", TOKENS)
    request = ipb.GenerateRequest(
        model=model,
        messages=[
            ipb.ChatMessage(role="system", content=SYSTEM),
            ipb.ChatMessage(role="user", content=QUESTION),
        ],
        sampling=ipb.SamplingParams(**sampling),
    )
    answer: ipb.GenerateResponse = stack.inference.Generate(request)
    return answer


def finish_reason(reason: ipb.FinishReason.ValueType) -> str:
    return "length" if reason == ipb.FINISH_REASON_LENGTH else "stop"


def texts(answer: ChatCompletion) -> list[str | None]:
    return [choice.message.content for choice in answer.choices]


def test_greedy_chat_answers_equal_grpc_generate(stack: Stack, client: openai.OpenAI) -> None:
    answers = {}
    for model in ("tiny", "helper-a", "helper-b", "helper-a@production"):
        answer = client.chat.completions.create(
            model=model, messages=MESSAGES, max_tokens=TOKENS, temperature=0
        )
        expected = grpc_chat(stack, model)
        (choice,) = answer.choices
        assert (choice.index, choice.message.role) == (0, "assistant")
        assert choice.message.content == expected.text
        assert choice.finish_reason == finish_reason(expected.finish_reason)
        assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
        assert answer.model == model  # as requested
        assert answer.usage is not None
        assert answer.usage.prompt_tokens == expected.usage.prompt_tokens
        assert answer.usage.completion_tokens == expected.usage.completion_tokens
        assert answer.usage.total_tokens == sum(
            (expected.usage.prompt_tokens, expected.usage.completion_tokens)
        )
        answers[model] = expected.text
    assert len({answers["tiny"], answers["helper-a"], answers["helper-b"]}) == 3
    assert answers["helper-a@production"] == answers["helper-a"]

    # Content as an array of text parts is their concatenation.
    parts = client.chat.completions.create(
        model="helper-b",
        messages=[
            {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": QUESTION[:10]},
                    {"type": "text", "text": QUESTION[10:]},
                ],
            },
        ],
        max_tokens=TOKENS,
    )
    assert texts(parts) == [answers["helper-b"]]


def test_a_streamed_chat_concatenates_to_the_unary_answer(client: openai.OpenAI) -> None:
    unary = client.chat.completions.create(model="helper-a", messages=MESSAGES, max_tokens=TOKENS)
    stream = client.chat.completions.create(
        model="helper-a",
        messages=MESSAGES,
        max_tokens=TOKENS,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    first, *middle, last = chunks
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    assert {(c.object, c.id, c.model) for c in chunks} == {
        ("chat.completion.chunk", first.id, "helper-a")
    }
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == unary.choices[0].message.content
    reasons = [c.choices[0].finish_reason for c in middle if c.choices[0].finish_reason]
    assert reasons == [unary.choices[0].finish_reason]
    assert middle[-1].choices[0].finish_reason is not None  # the last choice chunk
    assert last.choices == [] and last.usage == unary.usage
    assert all(c.usage is None for c in chunks[:-1])


def test_n_answers_with_a_seed(stack: Stack, client: openai.OpenAI) -> None:
    def sample(n: int, seed: int) -> ChatCompletion:
        return client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=TOKENS, temperature=1.0, n=n, seed=seed
        )

    two = sample(2, 7)
    assert [choice.index for choice in two.choices] == [0, 1]
    assert texts(two) == texts(sample(2, 7))  # seeded: the same answers again
    through_grpc = grpc_chat(stack, "tiny", temperature=1.0, n=2, seed=7)
    assert texts(two) == [choice.text for choice in through_grpc.choices]
    assert texts(sample(1, 8)) == texts(two)[1:]  # answer i samples with seed + i
    assert texts(two)[0] != texts(two)[1]
    assert two.usage is not None
    assert two.usage.completion_tokens == sum(
        grpc_chat(stack, "tiny", temperature=1.0, n=1, seed=seed).usage.completion_tokens
        for seed in (7, 8)
    )


def test_stop_strings_end_the_answer(stack: Stack, client: openai.OpenAI) -> None:
    full = grpc_chat(stack, "helper-b").text
    assert len(full) >= 6, full
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    expected = full[: full.find(stop)]
    for given in (stop, [stop, "never produced"]):
        answer = client.chat.completions.create(
            model="helper-b", messages=MESSAGES, max_tokens=TOKENS, stop=given
        )
        assert texts(answer) == [expected]
        assert answer.choices[0].finish_reason == "stop"


def test_completions_of_a_list_of_prompts(
    stack: Stack, client: openai.OpenAI, adapter_dirs: list[Path], reference: Reference
) -> None:
    answer = client.completions.create(model="helper-b", prompt=PROMPTS, max_tokens=TOKENS)
    assert answer.object == "text_completion" and answer.id.startswith("cmpl-")
    assert [choice.index for choice in answer.choices] == [0, 1]
    expected = [reference(adapter_dirs[1], prompt, TOKENS) for prompt in PROMPTS]
    assert [choice.text for choice in answer.choices] == expected
    grpc_answers = [
        stack.inference.Generate(
            ipb.GenerateRequest(
                model="helper-b", prompt=p, sampling=ipb.SamplingParams(max_new_tokens=TOKENS)
            )
        )
        for p in PROMPTS
    ]
    assert [a.text for a in grpc_answers] == expected
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in grpc_answers)
    assert answer.usage.completion_tokens == sum(a.usage.completion_tokens for a in grpc_answers)

    stream = client.completions.create(
        model="helper-b",
        prompt=PROMPTS,
        max_tokens=TOKENS,
        stream=True,
        stream_options={"include_usage": True},
    )
    streamed = ["", ""]
    chunks = list(stream)
    for chunk in chunks[:-1]:
        (choice,) = chunk.choices
        streamed[choice.index] += choice.text
    assert streamed == expected
    assert chunks[-1].choices == [] and chunks[-1].usage == answer.usage


def test_the_model_list(client: openai.OpenAI) -> None:
    models = {model.id: model.to_dict() for model in client.models.list()}
    assert {"tiny", "helper-a", "helper-b", "helper-a@production"} <= set(models)
    assert models["helper-a"]["parent"] == "tiny"
    assert models["helper-a@production"]["parent"] == "tiny"
    assert "parent" not in models["tiny"]
    assert {(m["object"], m["owned_by"]) for m in models.values()} == {("model", "llmops")}
    retrieved = client.models.retrieve("helper-a@production")
    assert retrieved.id == "helper-a@production"
    assert retrieved.created == models["helper-a"]["created"]
    assert retrieved.created > 0
    assert retrieved.to_dict()["parent"] == "tiny"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("ghost")
    assert missing.value.code == "model_not_found"


def test_refusals_raise_the_sdks_own_exceptions(stack: Stack, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="ghost", messages=MESSAGES)
    assert (missing.value.code, missing.value.param) == ("model_not_found", "model")
    with pytest.raises(openai.NotFoundError):  # refused before the stream starts
        client.chat.completions.create(model="ghost", messages=MESSAGES, stream=True)

    with pytest.raises(openai.BadRequestError) as hot:  # the service's range check
        client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=5)
    assert (hot.value.param, hot.value.type) == ("temperature", "invalid_request_error")
    with pytest.raises(openai.BadRequestError) as long:
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=100_000)
    assert long.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError) as tools:  # the gateway's refusal
        client.chat.completions.create(
            model="tiny",
            messages=MESSAGES,
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        )
    assert tools.value.param == "tools"
    with pytest.raises(openai.BadRequestError) as echo:
        client.completions.create(model="tiny", prompt="x", echo=True)
    assert echo.value.param == "echo"

    wrong_method = httpx.get(f"{stack.url}/openai/v1/chat/completions", timeout=30)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["type"] == "invalid_request_error"


def test_a_full_engine_raises_rate_limit_error(
    tmp_path: Path, tiny_model: Path, adapter_dirs: list[Path], binary: Path
) -> None:
    data_dir = tmp_path / "data"
    with (
        serving(data_dir, tiny_model, adapter_dirs, binary, inference_max_queued=1) as full,
        sdk(full) as client,
    ):
        long = client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=480, stream=True
        )
        # The response has begun, so its generation holds the engine's one place.
        with long, pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4)
    assert refused.value.code == "rate_limit_exceeded"
    assert refused.value.response.headers["retry-after"] == "1"  # the server's RetryInfo, 1 s


def test_with_auth_on_the_api_key_is_an_llmops_key(stack: Stack, client: openai.OpenAI) -> None:
    key = create_key(db_of(stack.server), "reader", "openai api test")
    try:
        with pytest.raises(openai.AuthenticationError) as wrong:
            client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4)
        assert wrong.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
        with sdk(stack, api_key=key.secret) as keyed:
            answer = keyed.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4)
            assert answer.choices[0].message.content is not None
            assert "tiny" in {model.id for model in keyed.models.list()}
    finally:
        revoke_key(db_of(stack.server), key.key_id)


def test_curl_streams_server_sent_events(stack: Stack, tmp_path: Path) -> None:
    body = {
        "model": "helper-b",
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
        "max_tokens": TOKENS,
        "stream": True,
    }
    headers = tmp_path / "headers"
    status, text = curl(
        "-N", "-X", "POST", f"{stack.url}/openai/v1/chat/completions",
        "-D", str(headers),
        "-H", "content-type: application/json",
        "-H", "authorization: Bearer any",
        "-d", json.dumps(body),
    )  # fmt: skip
    assert status == 200, text
    assert "content-type: text/event-stream" in headers.read_text().lower()
    assert text.endswith("data: [DONE]\n\n")
    events = text.removesuffix("\n\n").split("\n\n")  # one `data:` line per event
    assert all(e.startswith("data: ") and "\n" not in e for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    final = chunks[-1]["choices"][0]
    assert final["delta"] == {} and final["finish_reason"] in ("stop", "length")
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert content == grpc_chat(stack, "helper-b").text
