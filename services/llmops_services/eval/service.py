"""EvalService: validate, persist, enqueue; report what workers measured, judged by the gates."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from llmops.v1 import eval_service_pb2 as pb
from llmops.v1 import eval_service_pb2_grpc as pb_grpc
from llmops.v1 import jobs_pb2
from llmops_services.context import Platform
from llmops_services.db.tables import JobRow
from llmops_services.eval import convert, gates, requests
from llmops_services.jobs import api, creation
from llmops_services.jobs import convert as job_convert
from llmops_services.jobs.kinds import JobKind
from llmops_services.jobs.queue import JobQueue
from llmops_services.jobs.store import get_job
from llmops_services.jobs.trace_context import job_traceparent
from llmops_services.registry import models
from llmops_services.registry.names import require
from llmops_services.runtime.context import Context
from llmops_services.runtime.pagination import page_of
from llmops_services.runtime.server import ServiceBinding

log = logging.getLogger("llmops.eval")

KIND = JobKind.EVAL


def gates_file(platform: Platform) -> Path:
    """Where the gates live: `LLMOPS_EVAL_GATES_FILE`, else `<config dir>/eval_gates.yaml`."""
    settings = platform.settings
    return settings.eval_gates_file or settings.config_dir / "eval_gates.yaml"


def latest_run(session: Session, model_ref: str, dataset_id: str) -> JobRow | None:
    """The newest finished run of a model on a dataset (the baseline of a relative gate)."""
    model = models.find_model(session, model_ref)
    query = (
        select(JobRow)
        .where(
            JobRow.kind == KIND,
            JobRow.state == "SUCCEEDED",
            JobRow.model_id == model.id,
            JobRow.dataset_id == dataset_id,
        )
        .order_by(JobRow.end_time.desc())
        .limit(1)
    )
    return session.scalars(query).first()


def verdicts(
    platform: Platform,
    session: Session,
    row: JobRow,
    loaded: list[gates.Gate] | None = None,
) -> list[gates.Verdict] | None:
    """The gates' verdicts on a finished gated run, against the gates file as it is now (or
    `loaded`, when the caller read it once for many runs); None for a run that is not gated or
    not finished."""
    if row.state != "SUCCEEDED" or not row.resolved_hyperparameters.get("gate"):
        return None
    if loaded is None:
        loaded = gates.load_gates(gates_file(platform))

    def baseline(model_ref: str, task: str, metric: str) -> tuple[float, str] | None:
        run = latest_run(session, model_ref, row.dataset_id)
        if run is None:
            return None
        value = convert.measured(run).get((task, metric))
        return None if value is None else (value, run.id)

    return gates.judge(loaded, convert.measured(row), baseline)


class EvalService(pb_grpc.EvalServiceServicer):
    """Evaluation runs of models on eval datasets."""

    def __init__(self, platform: Platform, queue: JobQueue) -> None:
        self.platform = platform
        self.db = platform.db
        self.queue = queue

    def _message(
        self, session: Session, row: JobRow, loaded: list[gates.Gate] | None = None
    ) -> pb.EvalRun:
        return convert.eval_run(row, verdicts(self.platform, session, row, loaded))

    async def CreateEvalRun(self, request: pb.CreateEvalRunRequest, context: Context) -> pb.EvalRun:
        key = request.idempotency_key
        if request.gate:  # a broken gates file is refused now, not after the run
            gates.load_gates(gates_file(self.platform))

        def draft(session: Session) -> creation.Draft:
            checked = requests.check(session, request)
            row = JobRow(
                model_id=checked.model.id,
                dataset_id=checked.dataset.id,
                template_id=checked.template_id,
                template_version=checked.template_version,
                hyperparameters=checked.settings,
                resolved_hyperparameters=checked.settings,
                traceparent=job_traceparent(context),
            )
            return creation.Draft(row, "run created")

        return await creation.create_job(self.db, self.queue, KIND, key, draft, self._message)

    async def GetEvalRun(self, request: pb.GetEvalRunRequest, context: Context) -> pb.EvalRun:
        require("id", request.id)
        return await self.db.run(lambda s: self._message(s, get_job(s, request.id, KIND)))

    async def ListEvalRuns(
        self, request: pb.ListEvalRunsRequest, context: Context
    ) -> pb.ListEvalRunsResponse:
        state = job_convert.STATES.get(request.state, "UNSPECIFIED")
        page = page_of(request.page_size, request.page_token, request.model, state)

        def work(session: Session) -> list[pb.EvalRun]:
            query = select(JobRow).where(JobRow.kind == KIND)
            if request.model:
                query = query.where(JobRow.model_id == models.find_model(session, request.model).id)
            if state != "UNSPECIFIED":
                query = query.where(JobRow.state == state)
            query = query.order_by(JobRow.create_time.desc(), JobRow.id)
            rows = session.scalars(query.offset(page.offset).limit(page.limit + 1)).all()
            loaded = gates.load_gates(gates_file(self.platform))  # once for the whole page
            return [self._message(session, r, loaded) for r in rows]

        runs = await self.db.run(work)
        return pb.ListEvalRunsResponse(
            eval_runs=runs[: page.limit], next_page_token=page.next_token(len(runs))
        )

    async def CancelEvalRun(self, request: pb.CancelEvalRunRequest, context: Context) -> pb.EvalRun:
        require("id", request.id)
        return await self.db.run(lambda s: convert.eval_run(api.cancel(s, request.id, KIND)))

    async def ListEvalRunEvents(
        self, request: pb.ListEvalRunEventsRequest, context: Context
    ) -> pb.ListEvalRunEventsResponse:
        require("id", request.id)
        events, token = await api.events_page(
            self.db, request.id, KIND, request.page_size, request.page_token
        )
        return pb.ListEvalRunEventsResponse(events=events, next_page_token=token)

    async def WatchEvalRun(
        self, request: pb.WatchEvalRunRequest, context: Context
    ) -> AsyncIterator[jobs_pb2.JobEvent]:
        require("id", request.id)
        poll = self.platform.settings.watch_poll_seconds
        async for event in api.watch(
            self.db, request.id, KIND, request.after_sequence, poll, self.queue.signals
        ):
            yield event

    async def CompareEvalRuns(
        self, request: pb.CompareEvalRunsRequest, context: Context
    ) -> pb.CompareEvalRunsResponse:
        require("first", request.first)
        require("second", request.second)

        def work(session: Session) -> pb.CompareEvalRunsResponse:
            first = get_job(session, request.first, KIND)
            second = get_job(session, request.second, KIND)
            a, b = convert.measured(first), convert.measured(second)
            rows = [
                pb.MetricComparison(
                    task=task,
                    metric=metric,
                    first=a[(task, metric)],
                    second=b[(task, metric)],
                    delta=b[(task, metric)] - a[(task, metric)],
                )
                for task, metric in sorted(a.keys() & b.keys())
            ]
            return pb.CompareEvalRunsResponse(
                first=self._message(session, first),
                second=self._message(session, second),
                rows=rows,
            )

        return await self.db.run(work)


def binding(platform: Platform, queue: JobQueue) -> ServiceBinding:
    """How to host the eval service on a server."""
    servicer = EvalService(platform, queue)
    return ServiceBinding(
        full_name=pb.DESCRIPTOR.services_by_name["EvalService"].full_name,
        add_to_server=lambda server: pb_grpc.add_EvalServiceServicer_to_server(servicer, server),
    )
