"""Engine conformance: the same checks through the Inference service for every engine behind it.

Each test runs once per engine: `hf` (transformers + PEFT, its decode loop on a thread of the
server process) and `hf-process` (the same in a child process) always, and `vllm` (a real vLLM
server on the same tiny model, spoken to over HTTP) under `make test-vllm`,
which builds vLLM's own venv and sets `LLMOPS_TEST_VLLM_PYTHON` (the `vllm` marker keeps those
cases out of `make test`). Whatever the engine: greedy answers equal plain `model.generate` for
the base and two adapters, alone and in flight together; the stream is the unary answer; chat
goes through the model's chat template; an unknown model is NOT_FOUND and an adapter whose files
do not load is FAILED_PRECONDITION with the engine still serving; evicted adapters reload to the
same answer; a cancelled stream gives its place back.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import socket
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
import pytest

from llmops.v1 import inference_service_pb2 as ipb
from llmops.v1 import inference_service_pb2_grpc, registry_service_pb2_grpc
from llmops.v1 import registry_service_pb2 as pb
from tests.conftest import ServerThread, make_settings
from tests.integration.helpers import base_model, expect_error, make_base_model_dir
from tests.integration.served_models import Reference, make_lora_adapters, plain_generate
from tests.integration.vllm_server import vllm_server

if TYPE_CHECKING:
    from llmops.v1.inference_service_pb2_grpc import InferenceServiceAsyncStub
    from llmops.v1.registry_service_pb2_grpc import RegistryServiceAsyncStub

Inference: TypeAlias = "InferenceServiceAsyncStub"
Registry: TypeAlias = "RegistryServiceAsyncStub"

BASE = "tiny"
"""The base's name in the Registry, and the name the vLLM server serves it under."""
PROMPTS = [
    "Summarize: the tiny model reads a short text about a river and a town.",
    "Extract: Ada Lovelace lives in London.",
]
TOKENS = 16
ENGINES = [
    pytest.param("hf"),
    pytest.param("hf-process"),
    pytest.param("vllm", marks=pytest.mark.vllm),
]


@pytest.fixture(scope="session")
def conformance_adapters(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_lora_adapters(tiny_model, tmp_path_factory.mktemp("conformance-adapters"))


@pytest.fixture(scope="session")
def tiny_reference(tiny_model: Path) -> Reference:
    return plain_generate(tiny_model)


@pytest.fixture(scope="session")
def vllm_url(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A vLLM server on the tiny base, for the whole session."""
    python = os.environ.get("LLMOPS_TEST_VLLM_PYTHON", "")
    if not python:
        pytest.fail("the vllm cases need LLMOPS_TEST_VLLM_PYTHON (vLLM's venv): make test-vllm")
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    with vllm_server(Path(python), tiny_model, BASE, log) as url:
        yield url


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The settings that put the parameter's engine behind the service."""
    if request.param in ("hf", "hf-process"):
        return {
            "inference_engine": "hf",
            "inference_engine_process": request.param == "hf-process",
            "inference_device": "cpu",
            "inference_threads": 1,
        }
    return {"inference_engine": "vllm", "vllm_url": request.getfixturevalue("vllm_url")}


@dataclass
class Served:
    server: ServerThread
    registry: Registry
    inference: Inference
    adapter_ids: list[str]
    engine: str


@pytest.fixture
async def serve(
    data_dir: Path,
    tiny_model: Path,
    conformance_adapters: list[Path],
    engine: dict[str, Any],
) -> AsyncIterator[Callable[..., Any]]:
    """Starts a server on the parameter's engine with the tiny base registered as `tiny` and
    the two adapters as `helper` versions 1 and 2."""
    started: list[tuple[ServerThread, grpc.aio.Channel]] = []

    async def start(**overrides: Any) -> Served:
        server = ServerThread(make_settings(data_dir, **engine, **overrides)).start()
        channel = grpc.aio.insecure_channel(server.address)
        started.append((server, channel))
        registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
        base = await registry.CreateModel(base_model(BASE, tiny_model))
        ids = [
            (await registry.CreateModel(adapter_model("helper", path, base.id))).id
            for path in conformance_adapters
        ]
        inference = inference_service_pb2_grpc.InferenceServiceStub(channel)
        return Served(server, registry, inference, ids, engine["inference_engine"])

    yield start
    for server, channel in started:
        await channel.close(None)
        server.stop()


@pytest.fixture
async def served(serve: Callable[..., Any]) -> Served:
    result: Served = await serve()
    return result


def adapter_model(name: str, path: Path, base_id: str) -> pb.CreateModelRequest:
    return pb.CreateModelRequest(
        model=pb.Model(
            name=name,
            kind=pb.MODEL_KIND_ADAPTER,
            uri=str(path),
            origin=pb.ModelOrigin(base_model=base_id),
        )
    )


def request(model: str, prompt: str = PROMPTS[0], **sampling: Any) -> ipb.GenerateRequest:
    sampling.setdefault("max_new_tokens", TOKENS)
    return ipb.GenerateRequest(model=model, prompt=prompt, sampling=ipb.SamplingParams(**sampling))


async def test_greedy_answers_equal_plain_generate_for_the_base_and_two_adapters(
    served: Served, conformance_adapters: list[Path], tiny_reference: Reference
) -> None:
    for prompt in PROMPTS:
        base = await served.inference.Generate(request(BASE, prompt))
        first = await served.inference.Generate(request(served.adapter_ids[0], prompt))
        second = await served.inference.Generate(request(served.adapter_ids[1], prompt))
        assert base.text == tiny_reference(None, prompt, TOKENS)
        assert first.text == tiny_reference(conformance_adapters[0], prompt, TOKENS)
        assert second.text == tiny_reference(conformance_adapters[1], prompt, TOKENS)
        assert len({base.text, first.text, second.text}) == 3
        assert first.model == served.adapter_ids[0]
        assert 0 < first.usage.completion_tokens <= TOKENS


async def test_the_base_and_two_adapters_in_flight_together_answer_as_alone(
    served: Served,
) -> None:
    models = [BASE, *served.adapter_ids]
    cases = [(model, prompt) for model in models for prompt in PROMPTS]
    alone = [(await served.inference.Generate(request(m, p))).text for m, p in cases]
    together = await asyncio.gather(
        *(served.inference.Generate(request(m, p)) for m, p in cases * 2)
    )
    assert [answer.text for answer in together] == alone * 2


async def test_the_concatenated_stream_is_the_unary_answer(served: Served) -> None:
    for model in (BASE, served.adapter_ids[1]):
        unary = await served.inference.Generate(request(model))
        call = served.inference.StreamGenerate(ipb.StreamGenerateRequest(request=request(model)))
        messages = [message async for message in call]
        assert "".join(m.text_delta for m in messages) == unary.text
        assert messages[0].model == unary.model
        assert messages[-1].finish_reason == unary.finish_reason
        assert messages[-1].usage == unary.usage


async def test_messages_go_through_the_models_chat_template(served: Served) -> None:
    turns = [ipb.ChatMessage(role="user", content="Where does Ada live?")]
    chat = ipb.GenerateRequest(
        model=served.adapter_ids[0],
        messages=turns,
        sampling=ipb.SamplingParams(max_new_tokens=TOKENS),
    )
    answer = await served.inference.Generate(chat)
    assert "Where does Ada live?" in answer.rendered_prompt
    assert answer.rendered_prompt != "Where does Ada live?"  # the template wrapped it
    as_prompt = await served.inference.Generate(
        request(served.adapter_ids[0], answer.rendered_prompt)
    )
    assert answer.text == as_prompt.text


async def test_an_unknown_model_is_not_found_and_an_unloadable_adapter_is_refused(
    served: Served, conformance_adapters: list[Path], tmp_path: Path
) -> None:
    await expect_error(
        served.inference.Generate(request("no-such-model")), grpc.StatusCode.NOT_FOUND
    )
    corrupt = tmp_path / "corrupt-adapter"  # a sound config over weights that do not parse
    corrupt.mkdir()
    shutil.copy(conformance_adapters[0] / "adapter_config.json", corrupt)
    (corrupt / "adapter_model.safetensors").write_bytes(b"not safetensors")
    base = await served.registry.GetModel(pb.GetModelRequest(model=BASE))
    broken = await served.registry.CreateModel(adapter_model("broken", corrupt, base.id))
    refused = await expect_error(
        served.inference.Generate(request(broken.id)), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert refused.subjects == [f"models/{broken.id}"]
    assert "could not be loaded" in refused.message
    good = await served.inference.Generate(request(served.adapter_ids[0]))  # still serving
    assert good.text


async def test_an_evicted_adapter_reloads_with_the_same_answer(
    serve: Callable[..., Any],
) -> None:
    served: Served = await serve(inference_max_adapters=1)
    first, second = served.adapter_ids
    answer = (await served.inference.Generate(request(first))).text
    other = (await served.inference.Generate(request(second))).text
    listed = await served.inference.ListServedModels(ipb.ListServedModelsRequest())
    [base] = listed.models
    assert [a.model for a in base.adapters] == [second]
    assert (listed.engine, base.engine) == (served.engine, served.engine)
    assert (await served.inference.Generate(request(first))).text == answer
    assert (await served.inference.Generate(request(second))).text == other


async def test_a_cancelled_stream_gives_its_place_back(serve: Callable[..., Any]) -> None:
    served: Served = await serve(inference_max_queued=1)
    adapter = served.adapter_ids[0]
    alone = (await served.inference.Generate(request(adapter))).text
    long = request(adapter, max_new_tokens=480)
    call = served.inference.StreamGenerate(ipb.StreamGenerateRequest(request=long))
    await call.read()  # it is generating, in the one place
    call.cancel()
    deadline = time.monotonic() + 5
    while True:  # the place is free as soon as the server has seen the cancel
        try:
            answer = await served.inference.Generate(request(adapter))
            break
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)
    assert answer.text == alone
    listed = await served.inference.ListServedModels(ipb.ListServedModelsRequest())
    [base] = listed.models
    assert (base.running_requests, base.queued_requests) == (0, 0)
    assert [a.active_requests for a in base.adapters] == [0]


# What only the vLLM engine has: a server serves one base, adapters live in another process
# (which may lose them), and the engine is chosen per base model.


async def test_an_unreachable_vllm_server_is_unavailable(data_dir: Path, tiny_model: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = make_settings(data_dir, inference_engine="vllm", vllm_url=url)
    server = ServerThread(settings).start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
            inference = inference_service_pb2_grpc.InferenceServiceStub(channel)
            await registry.CreateModel(base_model(BASE, tiny_model))
            refused = await expect_error(
                inference.Generate(request(BASE)), grpc.StatusCode.UNAVAILABLE
            )
            assert url in refused.message and "not reachable" in refused.message
    finally:
        server.stop()


@pytest.mark.vllm
async def test_a_base_the_vllm_server_does_not_serve_is_refused(
    data_dir: Path, tiny_model: Path, vllm_url: str, tmp_path: Path
) -> None:
    other = tmp_path / "other-base"
    shutil.copytree(tiny_model, other)
    server = ServerThread(
        make_settings(data_dir, inference_engine="vllm", vllm_url=vllm_url)
    ).start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
            inference = inference_service_pb2_grpc.InferenceServiceStub(channel)
            model = await registry.CreateModel(base_model("other", other))
            refused = await expect_error(
                inference.Generate(request("other")), grpc.StatusCode.FAILED_PRECONDITION
            )
            assert refused.subjects == [f"models/{model.id}"]
            assert "--served-model-name other" in refused.message
            # The same files under the name the server serves are answered.
            await registry.CreateModel(base_model(BASE, tiny_model))
            assert (await inference.Generate(request(BASE))).text
    finally:
        server.stop()


@pytest.mark.vllm
@pytest.mark.parametrize("engine", ["vllm"], indirect=True)
async def test_an_adapter_the_vllm_server_lost_is_loaded_again(
    serve: Callable[..., Any], vllm_url: str
) -> None:
    served: Served = await serve()
    adapter = served.adapter_ids[0]
    before = (await served.inference.Generate(request(adapter))).text
    unload = urllib.request.Request(
        f"{vllm_url}/v1/unload_lora_adapter",
        data=json.dumps({"lora_name": adapter}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(unload, timeout=30) as response:  # as a restart would
        assert response.status == 200
    assert (await served.inference.Generate(request(adapter))).text == before


@pytest.mark.vllm
async def test_the_engine_is_chosen_per_base_model(
    data_dir: Path,
    tiny_model: Path,
    tiny_student: Path,
    conformance_adapters: list[Path],
    vllm_url: str,
    tiny_reference: Reference,
) -> None:
    settings = make_settings(
        data_dir,
        inference_device="cpu",
        inference_threads=1,
        vllm_servers={BASE: vllm_url},  # the default engine stays hf
    )
    server = ServerThread(settings).start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
            inference = inference_service_pb2_grpc.InferenceServiceStub(channel)
            base = await registry.CreateModel(base_model(BASE, tiny_model))
            student = await registry.CreateModel(base_model("student", tiny_student))
            adapter = await registry.CreateModel(
                adapter_model("helper", conformance_adapters[0], base.id)
            )
            answer = await inference.Generate(request(adapter.id))
            assert answer.text == tiny_reference(conformance_adapters[0], PROMPTS[0], TOKENS)
            assert (await inference.Generate(request("student"))).text
            listed = await inference.ListServedModels(ipb.ListServedModelsRequest())
            engines = {b.model: b.engine for b in listed.models}
            assert engines == {base.id: "vllm", student.id: "hf"}
            assert listed.engine == "hf"
    finally:
        server.stop()


async def test_a_dead_engine_process_ends_its_requests_and_is_started_again(
    data_dir: Path, tiny_model: Path, conformance_adapters: list[Path]
) -> None:
    settings = make_settings(
        data_dir, inference_engine_process=True, inference_device="cpu", inference_threads=1
    )
    server = ServerThread(settings).start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
            inference = inference_service_pb2_grpc.InferenceServiceStub(channel)
            base = await registry.CreateModel(base_model(BASE, tiny_model))
            adapter = await registry.CreateModel(
                adapter_model("helper", conformance_adapters[0], base.id)
            )
            before = (await inference.Generate(request(adapter.id))).text
            long = request(adapter.id, max_new_tokens=480)
            call = inference.StreamGenerate(ipb.StreamGenerateRequest(request=long))
            await call.read()  # generating in the engine process
            [child] = multiprocessing.active_children()  # the server runs in this process
            os.kill(child.pid or 0, signal.SIGKILL)
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                while await call.read() != grpc.aio.EOF:  # type: ignore[attr-defined]
                    pass
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "ended" in (ended.value.details() or "")
            after = await inference.Generate(request(adapter.id))  # a new engine process
            assert after.text == before
    finally:
        server.stop()
    assert not multiprocessing.active_children()  # stopping the server stopped its engine


async def test_a_base_the_engine_process_cannot_load_fails_its_precondition(
    data_dir: Path, tiny_model: Path, tmp_path: Path
) -> None:
    settings = make_settings(
        data_dir, inference_engine_process=True, inference_device="cpu", inference_threads=1
    )
    server = ServerThread(settings).start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
            inference = inference_service_pb2_grpc.InferenceServiceStub(channel)
            broken = await registry.CreateModel(base_model("broken", make_base_model_dir(tmp_path)))
            refused = await expect_error(
                inference.Generate(request("broken")), grpc.StatusCode.FAILED_PRECONDITION
            )
            assert refused.subjects == [f"models/{broken.id}"]
            await registry.CreateModel(base_model(BASE, tiny_model))
            assert (await inference.Generate(request(BASE))).text  # still serving
    finally:
        server.stop()
