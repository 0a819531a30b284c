"""OpenTelemetry: spans for every call, exported over OTLP/gRPC when an endpoint is set."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_provider: TracerProvider | None = None


def configure_tracing(service_name: str, otlp_endpoint: str) -> TracerProvider:
    """Installs the process's tracer provider once; later calls return it unchanged."""
    global _provider
    if _provider is not None:
        return _provider
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def tracing_on() -> bool:
    """Whether this process makes spans (only when they are exported)."""
    return _provider is not None


def shutdown_tracing() -> None:
    """Flushes spans that are still buffered."""
    if _provider is not None:
        _provider.force_flush()
