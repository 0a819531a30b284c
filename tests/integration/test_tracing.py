"""Traces leave over OTLP when `LLMOPS_OTLP_ENDPOINT` is set, continuing the caller's trace."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)

from llmops.v1 import registry_service_pb2 as pb
from llmops.v1 import registry_service_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[2]


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A real OTLP/gRPC trace receiver that keeps what it is sent."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str]] = []
        self.received = threading.Event()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append((span.trace_id.hex(), span.name))
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


def test_spans_are_exported_with_the_callers_trace_id(tmp_path: Path) -> None:
    collector = Collector()
    receiver = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, receiver)  # type: ignore[no-untyped-call]
    port = receiver.add_insecure_port("127.0.0.1:0")
    receiver.start()
    env = {**os.environ, "LLMOPS_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
    command = [sys.executable, "-m", "llmops", "serve", "registry", "--grpc-port", "0"]
    command += ["--metrics-port", "-1", "--data-dir", str(tmp_path / "data")]
    trace_id = secrets.token_hex(16)
    try:
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
        ) as server:
            try:
                assert server.stdout is not None
                address = server.stdout.readline().split()[1]
                with grpc.insecure_channel(address) as channel:
                    pb_grpc.RegistryServiceStub(channel).GetPromptTemplate(
                        pb.GetPromptTemplateRequest(template_id="extraction"),
                        metadata=(("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),),
                        timeout=10,
                    )
                server.send_signal(signal.SIGTERM)
                server.communicate(timeout=30)
            finally:
                if server.poll() is None:
                    server.kill()
                    server.wait()
        assert collector.received.wait(10)
    finally:
        receiver.stop(0)
    assert (trace_id, "/llmops.v1.RegistryService/GetPromptTemplate") in collector.spans
