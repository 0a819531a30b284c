"""The trace context a job keeps: what its worker's attempt spans continue, across the queue."""

from __future__ import annotations

from opentelemetry import propagate

from llmops_services.runtime.context import Context, trace_id_var


def job_traceparent(context: Context) -> str:
    """The W3C `traceparent` to store on a job created by this call: this call's own span when
    tracing is on, else the caller's `traceparent`, else one made from the call's trace id."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if carrier.get("traceparent"):
        return carrier["traceparent"]
    for key, value in context.invocation_metadata() or ():
        if key == "traceparent":
            return str(value)[:64]
    return f"00-{trace_id_var.get()}-{'0' * 15}1-01" if trace_id_var.get() else ""
