"""The worker's own Prometheus metrics and trace spans.

Job counts and queue depth come from the database and are served by the training service; what
only a worker sees (how long its attempts take, how fast it trains) is served here, on the
worker's metrics port, which it also advertises in Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import propagate, trace
from prometheus_client import Counter, Gauge, Histogram

from llmops_services.db.tables import JobRow

ATTEMPT_SECONDS = Histogram(
    "llmops_training_attempt_duration_seconds",
    "Wall time of a training attempt on this worker, from claim to its end.",
    ["method", "outcome"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600, float("inf")),
)
JOB_SECONDS = Histogram(
    "llmops_training_job_duration_seconds",
    "Time from a job's first start to its end, for the jobs this worker ended.",
    ["method", "state"],
    buckets=(10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600, 48 * 3600, float("inf")),
)
TOKENS = Counter(
    "llmops_training_tokens_total",
    "Input tokens (without padding) this worker has trained on.",
    ["method"],
)
TOKENS_PER_SECOND = Gauge(
    "llmops_training_tokens_per_second",
    "Training throughput of the attempt running now (input tokens without padding per second).",
    ["method"],
)
STEPS = Counter("llmops_training_steps_total", "Optimizer steps this worker has run.", ["method"])
BUSY = Gauge("llmops_worker_busy", "1 while this worker runs an attempt.")

_tracer = trace.get_tracer("llmops.worker")


@contextmanager
def attempt_span(traceparent: str, job: JobRow, attempt: int) -> Iterator[None]:
    """A span for one attempt, a child of the call that created the job.

    Without a tracer provider (no OTLP endpoint) this is a no-op span.
    """
    parent = propagate.extract({"traceparent": traceparent}) if traceparent else None
    attributes: dict[str, str | int] = {
        "messaging.system": "redis",
        "messaging.operation.type": "process",
        "llmops.job.id": job.id,
        "llmops.job.kind": job.kind,
        "llmops.job.attempt": attempt,
    }
    if job.method:
        attributes["llmops.training.method"] = job.method
    with _tracer.start_as_current_span(
        f"llmops.{job.kind}.attempt",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
    ):
        yield


@contextmanager
def phase(name: str) -> Iterator[None]:
    """A child span for one phase of an attempt (resolve inputs, train, register, ...)."""
    with _tracer.start_as_current_span(f"llmops.job.{name}"):
        yield


def traceparent() -> str:
    """The current span's W3C traceparent, to pass on to gRPC calls; empty without tracing."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")
