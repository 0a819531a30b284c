"""Prometheus gauges of every kind of job (training, eval, merge), read from the database when
scraped.

All kinds share one queue and one pool of workers, so what the alerts watch (jobs failing, jobs
waiting too long, jobs queued with no worker) is counted over all of them. As with the training
gauges (`llmops_services.training.metrics`), the database is the truth and every replica that
serves these gives the same answer: aggregate them with `max`, not `sum`.
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


def _age_seconds(oldest: datetime | None, now: datetime) -> float:
    if oldest is None:
        return 0.0
    if oldest.tzinfo is None:  # SQLite returns naive UTC times
        now = now.replace(tzinfo=None)
    return max((now - oldest).total_seconds(), 0.0)


class JobsCollector(Collector):
    """`llmops_jobs{kind,state}` and `llmops_jobs_queue_oldest_age_seconds{kind}`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _read(self, session: Session) -> tuple[dict[tuple[str, str], int], dict[str, float]]:
        counts = session.execute(
            select(JobRow.kind, JobRow.state, func.count()).group_by(JobRow.kind, JobRow.state)
        ).all()
        oldest = session.execute(
            select(JobRow.kind, func.min(JobRow.update_time))
            .where(JobRow.state == "QUEUED")
            .group_by(JobRow.kind)
        ).all()
        now = utcnow()
        ages = {str(kind): _age_seconds(time, now) for kind, time in oldest}
        return {(str(k), str(s)): int(n) for k, s, n in counts}, ages

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts, ages = self.db.run_sync(self._read)
        jobs = GaugeMetricFamily(
            "llmops_jobs",
            "Jobs of every kind (training, eval, merge) by state, from the database.",
            labels=["kind", "state"],
        )
        for kind in JobKind:
            for state in STATES:
                jobs.add_metric([kind.value, state], counts.get((kind.value, state), 0))
        yield jobs
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
