"""Every RPC fuzzed with messages Hypothesis builds from its request descriptor
(`protobuf_strategies.py`: hostile strings, integer limits, undeclared enum values, NaN, nested
and repeated fields), sent over a raw channel to a real server with the tiny model registered as
the default model: no call may answer INTERNAL or UNKNOWN, the server must keep answering, and no
file may appear outside its data directory (names like `../../etc/passwd` and
`store://../../outside` are among the generated values).

Examples are derandomized (the same messages every run) and no Hypothesis database is written.
`LLMOPS_FUZZ_EXAMPLES` (default 15) sets the examples per RPC."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmops.v1 import inference_service_pb2 as inference_pb
from scripts.gen_security_table import contract_methods, full_name
from tests.conftest import ServerThread, make_settings
from tests.integration.protobuf_strategies import message, text

EXAMPLES = int(os.environ.get("LLMOPS_FUZZ_EXAMPLES", "15"))
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNIMPLEMENTED}
# Generation and watching may run into the call's own deadline; nothing else has a reason to.
MAY_TAKE_LONG = ("Generate", "StreamGenerate", "Watch")
CALL_SECONDS = 10.0
METHODS = contract_methods()


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[ServerThread]:
    data_dir = tmp_path_factory.mktemp("rpc-fuzz") / "data"
    settings_ = make_settings(
        data_dir, inference_threads=1, inference_device="cpu", inference_max_new_tokens=16
    )
    server = ServerThread(settings_).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            from llmops.v1 import registry_service_pb2 as pb
            from llmops.v1 import registry_service_pb2_grpc as rpc

            model = pb.Model(name="llmops-tiny", kind=pb.MODEL_KIND_BASE, uri=str(tiny_model))
            rpc.RegistryServiceStub(channel).CreateModel(pb.CreateModelRequest(model=model))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def channel(fuzzed: ServerThread) -> Iterator[grpc.Channel]:
    # no retries: each generated request is sent once, as written
    with grpc.insecure_channel(fuzzed.address, options=[("grpc.enable_retries", 0)]) as opened:
        yield opened


def call(
    channel: grpc.Channel, method: MethodDescriptor, requests: list[Message]
) -> grpc.StatusCode:
    """The status of one call of `method` (a client stream sends every request; a server
    stream is read for at most three messages, then cancelled)."""
    name = full_name(method)
    raw: dict[str, None] = {"request_serializer": None, "response_deserializer": None}
    wire = [request.SerializeToString() for request in requests]
    try:
        if method.client_streaming:
            channel.stream_unary(name, **raw)(iter(wire), timeout=CALL_SECONDS)
        elif method.server_streaming:
            stream = channel.unary_stream(name, **raw)(wire[0], timeout=CALL_SECONDS)
            for count, _ in enumerate(stream):
                if count >= 2:
                    stream.cancel()  # type: ignore[no-untyped-call]
                    break
        else:
            channel.unary_unary(name, **raw)(wire[0], timeout=CALL_SECONDS)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def sampling() -> st.SearchStrategy[inference_pb.SamplingParams]:
    """Sampling within the documented ranges, edges included (the generic pass above sends the
    values out of range)."""
    return st.builds(
        inference_pb.SamplingParams,
        max_new_tokens=st.integers(1, 16),
        temperature=st.floats(0, 2),
        top_p=st.floats(0, 1),
        top_k=st.integers(0, 1000),
        repetition_penalty=st.floats(0, 2),
        n=st.integers(0, 3),
        seed=st.integers(-(2**63), 2**63 - 1),
        stop=st.lists(text().filter(lambda stop: 1 <= len(stop) <= 256), max_size=3),
    )


def plausible_generation() -> st.SearchStrategy[inference_pb.GenerateRequest]:
    """Requests that mostly pass validation, so that odd prompts, chats, templates and sampling
    reach the template renderer, the tokenizer and the engine."""
    model = st.sampled_from(["", "llmops-tiny", "llmops-tiny@production"])
    chat = st.lists(
        st.builds(
            inference_pb.ChatMessage,
            role=st.sampled_from(["system", "user", "assistant", "tool", "", "root"]),
            content=text(),
        ),
        max_size=3,
    )
    template = st.sampled_from(["summarization", "classification", "extraction", "absent"])
    return st.one_of(
        st.builds(
            inference_pb.GenerateRequest,
            model=model,
            prompt=text(),
            sampling=sampling(),
        ),
        st.builds(inference_pb.GenerateRequest, model=model, messages=chat, sampling=sampling()),
        st.builds(
            inference_pb.GenerateRequest,
            model=model,
            template_id=template,
            text=text(),
            sampling=sampling(),
        ),
    )


@pytest.mark.parametrize("streamed", [False, True], ids=["Generate", "StreamGenerate"])
def test_plausible_generation_requests_never_fail_as_a_bug(
    channel: grpc.Channel, streamed: bool
) -> None:
    """Runs before the RPC-by-RPC pass below, which may delete the model."""
    service = inference_pb.DESCRIPTOR.services_by_name["InferenceService"]
    method = service.methods_by_name["StreamGenerate" if streamed else "Generate"]
    answered: dict[str, int] = {}

    @settings(
        max_examples=EXAMPLES * 2,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(plausible_generation())
    def fuzz(request: inference_pb.GenerateRequest) -> None:
        wire: Message = inference_pb.StreamGenerateRequest(request=request) if streamed else request
        code = call(channel, method, [wire])
        answered[code.name] = answered.get(code.name, 0) + 1
        assert code not in NEVER and code != grpc.StatusCode.DEADLINE_EXCEEDED, (code, request)

    fuzz()
    assert answered.get("OK", 0) >= EXAMPLES // 2, answered  # most of them reached the engine


CORRUPT = b"\xff\xff\xff"  # a field number whose varint never ends: no message of any type


def test_bytes_that_are_no_message_are_refused_as_invalid(channel: grpc.Channel) -> None:
    """Corrupt wire format, and a string field holding bytes that are not UTF-8, are
    INVALID_ARGUMENT naming the request type, for every RPC (grpc's own parsing would answer
    UNKNOWN with a Python exception)."""
    for method in METHODS:
        name = full_name(method)
        raw: dict[str, None] = {"request_serializer": None, "response_deserializer": None}
        payloads = [CORRUPT]
        first = method.input_type.fields_by_number.get(1)
        if first is not None and first.type == first.TYPE_STRING:
            payloads.append(b"\x0a\x02\xff\xfe")  # field 1, two bytes, not UTF-8
        for payload in payloads:
            with pytest.raises(grpc.RpcError) as refused:
                if method.client_streaming:
                    channel.stream_unary(name, **raw)(iter([payload]), timeout=CALL_SECONDS)
                elif method.server_streaming:
                    list(channel.unary_stream(name, **raw)(payload, timeout=CALL_SECONDS))
                else:
                    channel.unary_unary(name, **raw)(payload, timeout=CALL_SECONDS)
            error = refused.value
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, error.details())
            assert method.input_type.full_name in (error.details() or ""), name


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


@pytest.mark.parametrize(
    "method", METHODS, ids=[m.containing_service.name + "." + m.name for m in METHODS]
)
def test_no_generated_request_makes_an_rpc_fail_as_a_bug(
    method: MethodDescriptor, fuzzed: ServerThread, channel: grpc.Channel, tmp_path: Path
) -> None:
    root = fuzzed.settings.data_dir.parent.parent  # pytest's base temp dir: every test's files
    before = files_under(root)
    answered: dict[str, int] = {}
    requests = st.lists(message(method.input_type), min_size=1, max_size=3)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(requests)
    def fuzz(generated: list[Message]) -> None:
        code = call(channel, method, generated)
        answered[code.name] = answered.get(code.name, 0) + 1
        assert code not in NEVER, (code, generated[0])
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:  # only generation has a queue to fill
            assert method.name in ("Generate", "StreamGenerate"), generated[0]
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            assert method.name.startswith(MAY_TAKE_LONG), generated[0]

    fuzz()
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    data_dir = fuzzed.settings.data_dir.resolve()
    escaped = [
        path
        for path in files_under(root) - before
        if not path.resolve().is_relative_to(data_dir) and not path.is_relative_to(tmp_path)
    ]
    assert not escaped, escaped
    assert sum(answered.values()) >= 1, answered


def test_the_server_counted_no_internal_error(fuzzed: ServerThread) -> None:
    """After every RPC's fuzzing (this module's tests run in order): the server's own count."""
    text = urllib.request.urlopen(fuzzed.metrics_url, timeout=10).read().decode()
    internal = [
        line
        for line in text.splitlines()
        if line.startswith("grpc_server_handled_total") and 'grpc_code="INTERNAL"' in line
    ]
    assert all(line.endswith(" 0.0") for line in internal), internal
