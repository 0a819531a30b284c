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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from llmops.v1 import inference_service_pb2 as ipb
from llmops.v1 import inference_service_pb2_grpc as ipb_grpc
from llmops.v1 import registry_service_pb2 as pb
from llmops.v1 import registry_service_pb2_grpc as pb_grpc
from tests.integration.helpers import base_model
from tests.tiny_models import TinyModels

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as it arrived: ids in hex, kind as OTLP names it (SPAN_KIND_SERVER, ...)."""

    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    name: str
    kind: str
    service: str  # its resource's service.name
    attributes: dict[str, Any]


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A real OTLP/gRPC trace receiver that keeps what it is sent."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str]] = []
        self.attributes: dict[str, dict[str, Any]] = {}  # span name -> its attributes
        self.received = threading.Event()
        self._arrived = threading.Condition()
        self._all: list[ReceivedSpan] = []

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: _value(a.value) for a in span.attributes}
                    received = ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=trace_pb2.Span.SpanKind.Name(span.kind),
                        service=str(resource.get("service.name", "")),
                        attributes=attributes,
                    )
                    with self._arrived:
                        self.spans.append((received.trace_id, span.name))
                        self.attributes[span.name] = attributes
                        self._all.append(received)
        with self._arrived:
            self._arrived.notify_all()
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        """The spans received so far of one trace."""
        with self._arrived:
            return [span for span in self._all if span.trace_id == trace_id]

    def wait_for_trace(
        self, trace_id: str, wanted: set[tuple[str, str]], timeout: float
    ) -> list[ReceivedSpan]:
        """Waits (woken by each export; processes export in batches) until the trace holds a
        span of every wanted (service.name, span name); returns the trace."""

        def complete() -> bool:
            names = {(s.service, s.name) for s in self._all if s.trace_id == trace_id}
            return wanted <= names

        with self._arrived:
            if not self._arrived.wait_for(complete, timeout):
                seen = sorted({(s.service, s.name) for s in self._all if s.trace_id == trace_id})
                raise AssertionError(f"missing {sorted(wanted - set(seen))}; the trace has {seen}")
        return self.trace(trace_id)


@contextmanager
def receiving(collector: Collector) -> Iterator[str]:
    """Serves `collector` on a free port; yields the endpoint to set as LLMOPS_OTLP_ENDPOINT."""
    receiver = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, receiver)  # type: ignore[no-untyped-call]
    port = receiver.add_insecure_port("127.0.0.1:0")
    receiver.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        receiver.stop(0)


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
    with receiving(collector) as endpoint:
        log = data_dir.parent / "serve.log"
        with (
            serving(endpoint, data_dir, *services, log=log) as address,
            grpc.insecure_channel(address) as channel,
        ):
            yield channel
        assert collector.received.wait(10)


@contextmanager
def serving(
    otlp_endpoint: str, data_dir: Path, *services: str, log: Path, **env: str
) -> Iterator[str]:
    """`llmops serve` (on CPU, one torch thread) exporting its spans to `otlp_endpoint`, with
    `env` added to its environment and its log lines written to `log`; yields its gRPC address,
    and stops it with SIGTERM (which flushes its spans) on leaving."""
    environment = {
        **os.environ,
        "LLMOPS_OTLP_ENDPOINT": otlp_endpoint,
        "LLMOPS_INFERENCE_DEVICE": "cpu",
        "LLMOPS_INFERENCE_THREADS": "1",
        **env,
    }
    command = [sys.executable, "-m", "llmops", "serve", *services, "--grpc-port", "0"]
    command += ["--metrics-port", "-1", "--data-dir", str(data_dir)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with (
        log.open("w") as errors,
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=errors, text=True, env=environment, cwd=ROOT
        ) as server,
    ):
        try:
            assert server.stdout is not None
            yield server.stdout.readline().split()[1]
            server.send_signal(signal.SIGTERM)
            server.communicate(timeout=30)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()


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
