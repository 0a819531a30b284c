"""A job's events and checkpoints to contract messages (the same for every kind)."""

from __future__ import annotations

from google.rpc import status_pb2

from llmops.v1 import jobs_pb2
from llmops_services.db.tables import CheckpointRow, JobEventRow, JobRow
from llmops_services.registry.convert import timestamp


def job_event(row: JobEventRow) -> jobs_pb2.JobEvent:
    """The message of one event."""
    return jobs_pb2.JobEvent(
        sequence=row.sequence,
        create_time=timestamp(row.create_time),
        type=jobs_pb2.JobEventType.Value(f"JOB_EVENT_TYPE_{row.type}"),
        state=jobs_pb2.JobState.Value(f"JOB_STATE_{row.state or 'UNSPECIFIED'}"),
        message=row.message,
        step=row.step,
        metrics={str(k): float(v) for k, v in row.metrics.items()},
        attempt=row.attempt,
    )


def checkpoint(row: CheckpointRow) -> jobs_pb2.Checkpoint:
    """The message of a checkpoint."""
    return jobs_pb2.Checkpoint(
        step=row.step,
        create_time=timestamp(row.create_time),
        metrics={str(k): float(v) for k, v in row.metrics.items()},
        uri=row.uri,
        registered_model=row.registered_model_id,
    )


def error(row: JobRow) -> status_pb2.Status | None:
    """A failed job's error as a `google.rpc.Status`; None when it has none."""
    if not row.error_code:
        return None
    return status_pb2.Status(code=row.error_code, message=row.error_message)


STATES = {value: name.removeprefix("JOB_STATE_") for name, value in jobs_pb2.JobState.items()}
"""The stored state of each contract state (for `List…` filters)."""
