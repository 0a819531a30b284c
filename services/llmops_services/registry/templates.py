"""Prompt templates: immutable versions in the database, checked by the SDK's one template rule."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from llmops.templates import load_template_file, validate_template
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
