"""The promotion gate: a protected alias (`production` by default, `LLMOPS_PROTECTED_ALIASES`)
moves only to a model with a passing gated eval run, judged against the gates as they are now.
An admin may force the move; it is logged and kept in the alias history as forced."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from llmops_services.context import Platform
from llmops_services.db.tables import JobRow, ModelRow
from llmops_services.errors import FailedPrecondition, PermissionDenied, PreconditionViolation
from llmops_services.eval.service import KIND, verdicts
from llmops_services.runtime.context import Principal

log = logging.getLogger("llmops.promotion")


@dataclass(frozen=True)
class Allowed:
    """Why a move may happen: the gated run that passed, or an admin's force."""

    eval_run: str = ""
    forced: bool = False


def _gated_runs(session: Session, model_id: str) -> list[JobRow]:
    query = (
        select(JobRow)
        .where(JobRow.kind == KIND, JobRow.model_id == model_id, JobRow.state == "SUCCEEDED")
        .order_by(JobRow.end_time.desc())
    )
    return [r for r in session.scalars(query).all() if r.resolved_hyperparameters.get("gate")]


def check_move(
    platform: Platform,
    session: Session,
    model: ModelRow,
    alias: str,
    force: bool,
    principal: Principal,
) -> Allowed:
    """Whether `model` may take `alias`; raises FAILED_PRECONDITION naming the failing gates."""
    if alias not in platform.settings.protected_aliases:
        return Allowed()
    runs = _gated_runs(session, model.id)
    for run in runs:
        if all(v.passed for v in verdicts(platform, session, run) or ()):
            return Allowed(eval_run=run.id)
    if force:
        if principal.role != "admin":
            raise PermissionDenied(
                f"only an admin may force {alias!r}; key {principal.key_id} is {principal.role}"
            )
        log.warning(
            "alias %s of %s forced to %s past the gates by %s",
            alias,
            model.name,
            model.id,
            principal.key_id,
        )
        return Allowed(forced=True)
    subject = f"models/{model.id}"
    if not runs:
        raise FailedPrecondition(
            f"{model.name} v{model.version} has no gated eval run; {alias!r} is protected: run "
            f"`llmops eval run --model {model.id} --dataset <eval set> --gate` first",
            violations=[PreconditionViolation("GATE", subject, "no passing gated eval run")],
        )
    failing = [v for v in verdicts(platform, session, runs[0]) or () if not v.passed]
    raise FailedPrecondition(
        f"{model.name} v{model.version} fails the gates for {alias!r} (latest gated run "
        f"{runs[0].id}): " + "; ".join(v.description for v in failing),
        violations=[PreconditionViolation("GATE", subject, v.description) for v in failing],
    )
