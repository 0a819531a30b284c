"""Prometheus gauges of every kind of job (training, eval, merge), read from the database when
scraped.

All kinds share one queue and one pool of workers, so what the alerts watch (jobs failing, jobs
waiting too long, jobs queued with no worker) is counted over all of them; training jobs are
also counted by method. The database is the truth about jobs, and any number of service
replicas and workers change it: counting there at scrape time gives every replica the same
answer, with no counter to keep in step (aggregate with `max`, not `sum`). What only a worker
sees (attempt durations, tokens/s) is served by the worker itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from llmops_services.db.database import Database
from llmops_services.db.tables import JobRow, utcnow
from llmops_services.jobs.kinds import JobKind
from llmops_services.jobs.states import ACTIVE, TERMINAL

STATES = ACTIVE + TERMINAL
TRAINING_METHODS = ("sft", "qlora", "dpo", "distill")


def _age_seconds(oldest: datetime | None, now: datetime) -> float:
    if oldest is None:
        return 0.0
    if oldest.tzinfo is None:  # SQLite returns naive UTC times
        now = now.replace(tzinfo=None)
    return max((now - oldest).total_seconds(), 0.0)


Counts = dict[tuple[str, str, str], int]
"""(kind, method, state) -> jobs; method is empty for kinds other than training."""


class JobsCollector(Collector):
    """`llmops_jobs{kind,state}`, `llmops_jobs_queue_oldest_age_seconds{kind}` and
    `llmops_training_jobs{method,state}`, from two queries per scrape."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _read(self, session: Session) -> tuple[Counts, dict[str, float]]:
        counts = session.execute(
            select(JobRow.kind, JobRow.method, JobRow.state, func.count()).group_by(
                JobRow.kind, JobRow.method, JobRow.state
            )
        ).all()
        oldest = session.execute(
            select(JobRow.kind, func.min(JobRow.update_time))
            .where(JobRow.state == "QUEUED")
            .group_by(JobRow.kind)
        ).all()
        now = utcnow()
        ages = {str(kind): _age_seconds(time, now) for kind, time in oldest}
        return {(str(k), str(m or ""), str(s)): int(n) for k, m, s, n in counts}, ages

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts, ages = self.db.run_sync(self._read)
        by_kind: dict[tuple[str, str], int] = {}
        for (kind, _, state), n in counts.items():
            by_kind[kind, state] = by_kind.get((kind, state), 0) + n
        jobs = GaugeMetricFamily(
            "llmops_jobs",
            "Jobs of every kind (training, eval, merge) by state, from the database.",
            labels=["kind", "state"],
        )
        for kind in JobKind:
            for state in STATES:
                jobs.add_metric([kind.value, state], by_kind.get((kind.value, state), 0))
        yield jobs
        training = GaugeMetricFamily(
            "llmops_training_jobs",
            "Training jobs by method and state, from the database.",
            labels=["method", "state"],
        )
        for method in TRAINING_METHODS:
            for state in STATES:
                training.add_metric(
                    [method, state], counts.get((JobKind.TRAINING.value, method, state), 0)
                )
        yield training
        age = GaugeMetricFamily(
            "llmops_jobs_queue_oldest_age_seconds",
            "How long the longest-waiting QUEUED job of each kind has waited since it was last "
            "queued (0 when none waits).",
            labels=["kind"],
        )
        for kind in JobKind:
            age.add_metric([kind.value], ages.get(kind.value, 0.0))
        yield age


_registered: JobsCollector | None = None


def register(db: Database) -> None:
    """Serves the job gauges of `db` from this process's `/metrics` (the latest database wins)."""
    global _registered
    unregister()
    _registered = JobsCollector(db)
    REGISTRY.register(_registered)


def unregister() -> None:
    """Stops serving the job gauges (the database is closing)."""
    global _registered
    if _registered is not None:
        REGISTRY.unregister(_registered)
        _registered = None
