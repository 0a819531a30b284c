"""Adapter-affinity routing through the real gateway binary (`-inference-backends`) over two real
Inference replicas that share one registry database: every request for an adapter lands on the
one replica that holds it, answers equal a direct call's, a replica that stops is routed
around, and the gateway's served models list every replica's bases, each naming its replica."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from llmops.v1 import inference_service_pb2 as ipb
from llmops.v1 import inference_service_pb2_grpc, registry_service_pb2_grpc
from llmops.v1 import registry_service_pb2 as pb
from llmops_services.gateway import GatewayProcess
from tests.conftest import ServerThread, make_settings
from tests.integration.helpers import base_model
from tests.integration.served_models import make_lora_adapters
from tests.tiny_models import TinyModels

PROMPT = "Summarize: the tiny model reads a short text about a river and a town."
TOKENS = 8
ADAPTERS = 4


@dataclass
class Routed:
    replicas: list[ServerThread]
    url: str
    adapter_ids: dict[str, str]  # name -> model id


def served_adapters(replica: ServerThread) -> set[str]:
    """The adapter ids a replica has attached, from its own ListServedModels."""
    with grpc.insecure_channel(replica.address) as channel:
        stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
        served = stub.ListServedModels(ipb.ListServedModelsRequest(), timeout=10)
    return {adapter.model for base in served.models for adapter in base.adapters}


def direct_answer(replica: ServerThread, model: str) -> str:
    with grpc.insecure_channel(replica.address) as channel:
        stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
        request = ipb.GenerateRequest(
            model=model, prompt=PROMPT, sampling=ipb.SamplingParams(max_new_tokens=TOKENS)
        )
        return stub.Generate(request, timeout=60).text


def wait_until(check: Callable[[], Any], timeout: float = 20) -> Any:
    """Calls `check` until it returns something true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@pytest.fixture
def routed(binary: Path, tiny_models: TinyModels, tmp_path: Path) -> Iterator[Routed]:
    """Two replicas on one data dir and database, the tiny base and ADAPTERS adapters registered,
    and the gateway routing generation over both by affinity."""
    data_dir = tmp_path / "data"
    replicas: list[ServerThread] = []
    gateway: GatewayProcess | None = None
    try:
        for _ in range(2):  # one after the other: the first makes the schema
            settings = make_settings(data_dir, inference_threads=1, inference_device="cpu")
            replicas.append(ServerThread(settings).start())
        paths = make_lora_adapters(tiny_models.base, tmp_path, seeds=range(1, ADAPTERS + 1))
        ids = {}
        with grpc.insecure_channel(replicas[0].address) as channel:
            registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
            base = registry.CreateModel(base_model("tiny", tiny_models.base))
            for i, path in enumerate(paths):
                name = f"routed-{i}"
                model = pb.Model(
                    name=name,
                    kind=pb.MODEL_KIND_ADAPTER,
                    uri=str(path),
                    origin=pb.ModelOrigin(base_model=base.id),
                )
                ids[name] = registry.CreateModel(pb.CreateModelRequest(model=model)).id
        backends = ",".join(replica.address for replica in replicas)
        gateway = GatewayProcess(
            binary,
            replicas[0].address,
            "127.0.0.1:0",
            grace=2,
            extra_args=["-inference-backends", backends],
        )
        gateway.start(timeout=30)
        yield Routed(replicas, gateway.url, ids)
    finally:
        if gateway is not None:
            gateway.stop()
        for replica in replicas:
            replica.stop()


def generate(http: httpx.Client, model: str) -> dict[str, Any]:
    body = {"model": model, "prompt": PROMPT, "sampling": {"max_new_tokens": TOKENS}}
    answer = http.post("/v1/generate", json=body)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def stream_text(http: httpx.Client, model: str) -> str:
    body = {"request": {"model": model, "prompt": PROMPT, "sampling": {"max_new_tokens": TOKENS}}}
    with http.stream("POST", "/v1/generate:stream", json=body) as stream:
        assert stream.status_code == 200
        return "".join(json.loads(line)["result"]["text_delta"] for line in stream.iter_lines())


def test_each_adapter_is_served_by_one_replica_with_direct_answers(routed: Routed) -> None:
    answers: dict[str, set[str]] = {}
    with httpx.Client(base_url=routed.url, timeout=60) as http:
        for name, model_id in routed.adapter_ids.items():
            texts = {generate(http, name)["text"] for _ in range(3)}
            texts.add(generate(http, model_id)["text"])  # by id: the same replica
            texts.add(stream_text(http, name))
            chat = http.post(
                "/openai/v1/completions",
                json={"model": name, "prompt": PROMPT, "max_tokens": TOKENS},
            )
            assert chat.status_code == 200, chat.text
            texts.add(chat.json()["choices"][0]["text"])
            answers[name] = texts

    held = [served_adapters(replica) for replica in routed.replicas]
    for name, model_id in routed.adapter_ids.items():
        holders = [i for i, ids in enumerate(held) if model_id in ids]
        assert len(holders) == 1, f"{name} is attached on replicas {holders}"
        # The answer equals a direct call's to the replica that holds it.
        assert answers[name] == {direct_answer(routed.replicas[holders[0]], model_id)}
    # The adapters differ, so the answers do too (the right adapter was applied).
    assert len({text for texts in answers.values() for text in texts}) == ADAPTERS


def served_through_gateway(http: httpx.Client) -> list[dict[str, Any]]:
    """The bases `GET /v1/served-models` lists through the routing gateway."""
    listed = http.get("/v1/served-models")
    assert listed.status_code == 200, listed.text
    bases: list[dict[str, Any]] = listed.json()["models"]
    return bases


def test_served_models_list_each_replicas_bases_with_its_address(routed: Routed) -> None:
    # Each replica loads the base directly first, so both list it whichever way the adapters go.
    for replica in routed.replicas:
        direct_answer(replica, "tiny")
    with httpx.Client(base_url=routed.url, timeout=60) as http:
        for name in routed.adapter_ids:
            generate(http, name)
        bases = served_through_gateway(http)
    held = [served_adapters(replica) for replica in routed.replicas]
    # One base per replica, in the gateway's -inference-backends order, named by that address.
    assert [base["replica"] for base in bases] == [r.address for r in routed.replicas]
    assert len({base["model"] for base in bases}) == 1
    # Each base's adapters are where the gateway routed them (the replica's own list).
    for base, ids in zip(bases, held, strict=True):
        assert {adapter["model"] for adapter in base.get("adapters", [])} == ids
    assert held[0] | held[1] == set(routed.adapter_ids.values())


def test_a_stopped_replica_is_routed_around(routed: Routed) -> None:
    with httpx.Client(base_url=routed.url, timeout=60) as http:
        before = {name: generate(http, name)["text"] for name in routed.adapter_ids}
        held = [served_adapters(replica) for replica in routed.replicas]
        routed.replicas[1].stop()
        after = {name: generate(http, name)["text"] for name in routed.adapter_ids}
        # The served models leave the stopped replica out rather than fail.
        listed = {base["replica"] for base in served_through_gateway(http)}
    assert after == before
    assert listed == {routed.replicas[0].address}
    # Everything is on the remaining replica now.
    assert set(routed.adapter_ids.values()) <= served_adapters(routed.replicas[0])
    assert held[0] | held[1] == set(routed.adapter_ids.values())
