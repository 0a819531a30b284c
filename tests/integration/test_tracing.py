"""Traces leave over OTLP when `LLMOPS_OTLP_ENDPOINT` is set, continuing the caller's trace."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.proto.common.v1 import common_pb2

from llmops.v1 import inference_service_pb2 as ipb
from llmops.v1 import inference_service_pb2_grpc as ipb_grpc
from llmops.v1 import registry_service_pb2 as pb
from llmops.v1 import registry_service_pb2_grpc as pb_grpc
from tests.integration.helpers import base_model
from tests.tiny_models import TinyModels

ROOT = Path(__file__).resolve().parents[2]


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A real OTLP/gRPC trace receiver that keeps what it is sent."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str]] = []
        self.attributes: dict[str, dict[str, Any]] = {}  # span name -> its attributes
        self.received = threading.Event()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append((span.trace_id.hex(), span.name))
                    self.attributes[span.name] = {a.key: _value(a.value) for a in span.attributes}
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


def _value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def test_spans_are_exported_with_the_callers_trace_id(tmp_path: Path) -> None:
    collector = Collector()
    trace_id = secrets.token_hex(16)
    with _served(collector, tmp_path / "data", "registry") as channel:
        pb_grpc.RegistryServiceStub(channel).GetPromptTemplate(
            pb.GetPromptTemplateRequest(template_id="extraction"),
            metadata=(("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),),
            timeout=10,
        )
    assert (trace_id, "/llmops.v1.RegistryService/GetPromptTemplate") in collector.spans


@contextmanager
def _served(collector: Collector, data_dir: Path, *services: str) -> Iterator[grpc.Channel]:
    """`llmops serve` with its spans sent to `collector`; yields a channel to it, and stops it
    with SIGTERM (which flushes the spans) on leaving."""
    receiver = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, receiver)  # type: ignore[no-untyped-call]
    port = receiver.add_insecure_port("127.0.0.1:0")
    receiver.start()
    env = {
        **os.environ,
        "LLMOPS_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "LLMOPS_INFERENCE_DEVICE": "cpu",
        "LLMOPS_INFERENCE_THREADS": "1",
    }
    command = [sys.executable, "-m", "llmops", "serve", *services, "--grpc-port", "0"]
    command += ["--metrics-port", "-1", "--data-dir", str(data_dir)]
    try:
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
        ) as server:
            try:
                assert server.stdout is not None
                address = server.stdout.readline().split()[1]
                with grpc.insecure_channel(address) as channel:
                    yield channel
                server.send_signal(signal.SIGTERM)
                server.communicate(timeout=30)
            finally:
                if server.poll() is None:
                    server.kill()
                    server.wait()
        assert collector.received.wait(10)
    finally:
        receiver.stop(0)


def test_a_generate_call_has_a_span_with_the_model_adapter_and_token_counts(
    tmp_path: Path, tiny_models: TinyModels
) -> None:
    collector = Collector()
    trace_id = secrets.token_hex(16)
    with _served(collector, tmp_path / "data", "registry", "inference") as channel:
        base = pb_grpc.RegistryServiceStub(channel).CreateModel(
            base_model("tiny", tiny_models.base), timeout=10
        )
        request = ipb.GenerateRequest(
            model="tiny", prompt="The river", sampling=ipb.SamplingParams(max_new_tokens=5)
        )
        answer = ipb_grpc.InferenceServiceStub(channel).Generate(
            request,
            metadata=(("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),),
            timeout=60,
        )
    assert (trace_id, "/llmops.v1.InferenceService/Generate") in collector.spans
    assert (trace_id, "text_completion tiny") in collector.spans
    attributes = collector.attributes["text_completion tiny"]
    assert attributes["gen_ai.operation.name"] == "text_completion"
    assert attributes["gen_ai.request.model"] == "tiny"
    assert attributes["gen_ai.response.model"] == base.id
    assert attributes["llmops.inference.base_model"] == base.id
    assert attributes["llmops.inference.adapter"] == ""
    assert attributes["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens
    assert attributes["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    assert attributes["gen_ai.request.max_tokens"] == 5
    assert attributes["gen_ai.response.finish_reasons"] in (["length"], ["stop"])
