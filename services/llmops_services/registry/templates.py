"""Prompt templates: immutable versions in the database, checked by the SDK's one template rule."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from llmops.templates import load_template_file, validate_template
from llmops.v1 import registry_service_pb2 as pb
from llmops_services.db.tables import PromptTemplateRow
from llmops_services.errors import FieldViolation, InvalidArgument, NotFound
from llmops_services.registry.names import check_slug
from llmops_services.runtime.pagination import Page


def check_template_text(field: str, text: str) -> None:
    """Refuses a template that does not hold exactly the `{text}` placeholder."""
    problems = validate_template(text)
    if problems:
        raise InvalidArgument(
            f"invalid prompt template: {'; '.join(problems)}",
            violations=[FieldViolation(field, problem) for problem in problems],
        )


def get_template(session: Session, template_id: str, version: int = 0) -> PromptTemplateRow:
    """A template version, or its latest when `version` is 0."""
    query = select(PromptTemplateRow).where(PromptTemplateRow.template_id == template_id)
    if version:
        query = query.where(PromptTemplateRow.version == version)
    row = session.scalars(query.order_by(PromptTemplateRow.version.desc()).limit(1)).first()
    if row is None:
        label = f"{template_id} version {version}" if version else template_id
        raise NotFound(
            f"prompt template {label} not found",
            resource_type="prompt_template",
            resource_name=template_id,
        )
    return row


def list_latest(session: Session, page: Page) -> list[PromptTemplateRow]:
    """The latest version of each template, by id."""
    latest = (
        select(PromptTemplateRow.template_id, func.max(PromptTemplateRow.version).label("version"))
        .group_by(PromptTemplateRow.template_id)
        .subquery()
    )
    query = (
        select(PromptTemplateRow)
        .join(
            latest,
            (PromptTemplateRow.template_id == latest.c.template_id)
            & (PromptTemplateRow.version == latest.c.version),
        )
        .order_by(PromptTemplateRow.template_id)
        .offset(page.offset)
        .limit(page.limit + 1)
    )
    return list(session.scalars(query).all())


def list_versions(session: Session, template_id: str, page: Page) -> list[PromptTemplateRow]:
    """Every version of one template, newest first."""
    get_template(session, template_id)
    query = (
        select(PromptTemplateRow)
        .where(PromptTemplateRow.template_id == template_id)
        .order_by(PromptTemplateRow.version.desc())
        .offset(page.offset)
        .limit(page.limit + 1)
    )
    return list(session.scalars(query).all())


def create_version(
    session: Session, template_id: str, template: str, description: str, task: str
) -> PromptTemplateRow:
    """Stores the next version of a template (version 1 for a new id)."""
    check_slug("prompt_template.template_id", template_id)
    if task:
        check_slug("prompt_template.task", task)
    check_template_text("prompt_template.template", template)
    current = session.scalar(
        select(func.max(PromptTemplateRow.version)).where(
            PromptTemplateRow.template_id == template_id
        )
    )
    row = PromptTemplateRow(
        template_id=template_id,
        version=(current or 0) + 1,
        template=template,
        description=description,
        task=task,
    )
    session.add(row)
    session.flush()
    return row


def seed_templates(session: Session, path: Path) -> int:
    """Adds the versions of the bundled template file that the database lacks; returns how many."""
    added = 0
    for entry in load_template_file(path):
        template_id, version = str(entry["id"]), int(entry["version"])
        if session.get(PromptTemplateRow, (template_id, version)) is not None:
            continue
        check_template_text(f"{path.name}:{template_id}", str(entry["template"]))
        session.add(
            PromptTemplateRow(
                template_id=template_id,
                version=version,
                template=str(entry["template"]),
                description=str(entry.get("description", "")),
                task=str(entry.get("task", "")),
            )
        )
        added += 1
    return added


class TemplateCache:
    """Answers GetPromptTemplate without the database, the hottest read of the platform.

    Versions are immutable, so an explicit version is kept for good; the latest version of an id
    is kept `ttl` seconds (a version created by another process shows within that) and dropped at
    once when this process creates one.
    """

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._versions: dict[tuple[str, int], pb.PromptTemplate] = {}
        self._latest: dict[str, tuple[float, pb.PromptTemplate]] = {}

    def get(self, template_id: str, version: int) -> pb.PromptTemplate | None:
        """The cached answer for (id, version), version 0 meaning the latest."""
        if version:
            return self._versions.get((template_id, version))
        cached = self._latest.get(template_id)
        if cached is None or time.monotonic() - cached[0] >= self._ttl:
            return None
        return cached[1]

    def put(self, message: pb.PromptTemplate, latest: bool) -> None:
        """Remembers a version read from the database (and that it was the latest)."""
        if len(self._versions) >= self._max_entries:
            self._versions.clear()
            self._latest.clear()
        self._versions[(message.template_id, message.version)] = message
        if latest and self._ttl > 0:
            self._latest[message.template_id] = (time.monotonic(), message)

    def invalidate(self, template_id: str) -> None:
        """Forgets the latest version of an id after a new one is created."""
        self._latest.pop(template_id, None)
