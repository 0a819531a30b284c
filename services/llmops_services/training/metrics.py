"""Prometheus gauges of training jobs, read from the database when scraped.

The database is the truth about jobs, and any number of service replicas and workers change it;
counting there at scrape time gives every replica the same answer, with no counter to keep in
step. What only a worker sees (attempt durations, tokens/s) is served by the worker itself.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from llmops_services.db.database import Database
from llmops_services.db.tables import JobRow, utcnow
from llmops_services.jobs.kinds import JobKind

METHODS = ("sft", "qlora", "dpo", "distill")
STATES = ("QUEUED", "RUNNING", "CANCELLING", "PAUSED", "SUCCEEDED", "FAILED", "CANCELLED")


class TrainingJobsCollector(Collector):
    """`llmops_training_jobs{method,state}`, queue depth and the age of the oldest queued job."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _read(self, session: Session) -> tuple[dict[tuple[str, str], int], float]:
        counts = session.execute(
            select(JobRow.method, JobRow.state, func.count())
            .where(JobRow.kind == JobKind.TRAINING)
            .group_by(JobRow.method, JobRow.state)
        ).all()
        oldest = session.scalar(
            select(func.min(JobRow.update_time)).where(
                JobRow.kind == JobKind.TRAINING, JobRow.state == "QUEUED"
            )
        )
        age = 0.0
        if oldest is not None:
            now = utcnow()
            if oldest.tzinfo is None:  # SQLite returns naive UTC times
                now = now.replace(tzinfo=None)
            age = max((now - oldest).total_seconds(), 0.0)
        return {(m, s): int(n) for m, s, n in counts}, age

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts, age = self.db.run_sync(self._read)
        jobs = GaugeMetricFamily(
            "llmops_training_jobs", "Training jobs by method and state.", labels=["method", "state"]
        )
        for method in METHODS:
            for state in STATES:
                jobs.add_metric([method, state], counts.get((method, state), 0))
        yield jobs
        queued = sum(n for (_, state), n in counts.items() if state == "QUEUED")
        yield GaugeMetricFamily(
            "llmops_training_queue_depth", "Training jobs waiting for a worker.", value=queued
        )
        yield GaugeMetricFamily(
            "llmops_training_queue_oldest_age_seconds",
            "How long the longest-waiting queued training job has waited.",
            value=age,
        )


_registered: TrainingJobsCollector | None = None


def register(db: Database) -> None:
    """Serves the job gauges of `db` from this process's `/metrics` (the latest database wins)."""
    global _registered
    unregister()
    _registered = TrainingJobsCollector(db)
    REGISTRY.register(_registered)


def unregister() -> None:
    """Stops serving the job gauges (the database is closing)."""
    global _registered
    if _registered is not None:
        REGISTRY.unregister(_registered)
        _registered = None
