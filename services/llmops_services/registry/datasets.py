"""Datasets: streamed uploads checked row by row, stored once by sha256, refused while in use."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from llmops.v1 import registry_service_pb2 as pb
from llmops_services.artifacts import ArtifactStore
from llmops_services.db.database import Database
from llmops_services.db.tables import DatasetRow, JobRow
from llmops_services.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from llmops_services.registry.convert import DATASET_KIND_NAMES
from llmops_services.registry.dataset_rules import (
    DatasetInvalid,
    DatasetKind,
    DatasetLimits,
    DatasetStats,
    validate_jsonl,
)
from llmops_services.registry.names import check_name, new_id
from llmops_services.runtime.pagination import Page
from llmops_services.settings import Settings

ACTIVE_JOB_STATES = ("QUEUED", "RUNNING", "CANCELLING", "PAUSED")


def limits_of(settings: Settings) -> DatasetLimits:
    """The upload limits configured for this process."""
    return DatasetLimits(
        max_bytes=settings.max_dataset_bytes,
        max_rows=settings.max_dataset_rows,
        max_line_bytes=settings.max_dataset_line_bytes,
        max_problems=settings.max_dataset_problems,
    )


@dataclass(frozen=True)
class ReceivedUpload:
    """An upload spooled to a local file, hashed on the way in."""

    name: str
    kind: DatasetKind
    description: str
    path: Path
    sha256: str
    size_bytes: int


def _kind_name(kind: int) -> DatasetKind:
    name = DATASET_KIND_NAMES.get(kind)  # type: ignore[call-overload]
    if name is None:
        raise InvalidArgument(
            "metadata.kind is required",
            violations=[FieldViolation("metadata.kind", "must be SFT, PREFERENCE or EVAL")],
        )
    return name  # type: ignore[no-any-return]


async def receive_upload(
    requests: AsyncIterator[pb.UploadDatasetRequest], spool_dir: Path, max_bytes: int
) -> ReceivedUpload:
    """Reads the upload stream to a temporary file; the caller removes it.

    A refusal is raised only once the client has sent the rest of its stream (up to `max_bytes`
    more): a grpc.aio client whose write fails because the call already ended reports INTERNAL
    instead of the server's status (https://github.com/grpc/grpc/issues/36066).
    """
    try:
        return await _spool_upload(requests, spool_dir, max_bytes)
    except InvalidArgument:
        await _discard(requests, max_bytes)
        raise


async def _discard(requests: AsyncIterator[pb.UploadDatasetRequest], max_bytes: int) -> None:
    """Reads and drops what remains of an upload stream, up to `max_bytes` of it."""
    seen = 0
    async for message in requests:
        seen += message.ByteSize()
        if seen > max_bytes:
            return


async def _spool_upload(
    requests: AsyncIterator[pb.UploadDatasetRequest], spool_dir: Path, max_bytes: int
) -> ReceivedUpload:
    first = await anext(aiter(requests), None)
    if first is None or first.WhichOneof("payload") != "metadata":
        raise InvalidArgument(
            "the first upload message must carry metadata",
            violations=[FieldViolation("metadata", "required in the first message")],
        )
    metadata = first.metadata
    kind = _kind_name(metadata.kind)
    if metadata.name:
        check_name("metadata.name", metadata.name)
    spool_dir.mkdir(parents=True, exist_ok=True)
    handle, raw_path = tempfile.mkstemp(prefix="upload-", suffix=".jsonl", dir=spool_dir)
    path = Path(raw_path)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(handle, "wb") as out:
            async for message in requests:
                if message.WhichOneof("payload") != "chunk":
                    raise InvalidArgument(
                        "metadata may only come in the first upload message",
                        violations=[FieldViolation("metadata", "sent twice")],
                    )
                size += len(message.chunk)
                if size > max_bytes:
                    raise InvalidArgument(
                        f"dataset is larger than the limit of {max_bytes} bytes",
                        violations=[FieldViolation("chunk", f"upload exceeds {max_bytes} bytes")],
                    )
                digest.update(message.chunk)
                out.write(message.chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return ReceivedUpload(metadata.name, kind, metadata.description, path, digest.hexdigest(), size)


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from handle


def validate_file(path: Path, kind: DatasetKind, limits: DatasetLimits) -> DatasetStats:
    """Checks every row; a refusal names each bad line, field and reason."""
    try:
        return validate_jsonl(_lines(path), kind, limits)
    except DatasetInvalid as invalid:
        violations = [
            FieldViolation(_problem_field(p.line, p.field), p.reason) for p in invalid.problems
        ]
        more = f"more than {len(violations)}" if invalid.truncated else str(len(violations))
        raise InvalidArgument(
            f"dataset refused: {more} problem(s) in its rows, each named in the field violations",
            violations=violations,
            reason="DATASET_INVALID",
        ) from invalid


def _problem_field(line: int, field: str) -> str:
    """`lines[3].prompt` for a row's field, `lines[3]` for a whole line, `file` for the file."""
    if line <= 0:
        return "file"
    return f"lines[{line}]" + (f".{field}" if field else "")


def find_dataset(session: Session, ref: str) -> DatasetRow:
    """A dataset by id or name."""
    row = session.get(DatasetRow, ref) if ref.startswith("ds-") else None
    if row is None:
        row = session.scalars(select(DatasetRow).where(DatasetRow.name == ref)).first()
    if row is None:
        raise NotFound(f"dataset {ref!r} not found", resource_type="dataset", resource_name=ref)
    return row


def store_dataset(
    db: Database, store: ArtifactStore, upload: ReceivedUpload, stats: DatasetStats
) -> tuple[DatasetRow, bool]:
    """Registers an upload, or returns the identical dataset stored before (True)."""

    def existing(session: Session) -> DatasetRow | None:
        return session.scalars(
            select(DatasetRow).where(
                DatasetRow.sha256 == upload.sha256, DatasetRow.kind == upload.kind
            )
        ).first()

    found = db.run_sync(existing)
    if found is not None:
        return found, True
    name = upload.name or f"{upload.kind}-{upload.sha256[:12]}"

    def check_name_free(session: Session) -> None:
        if session.scalars(select(DatasetRow.id).where(DatasetRow.name == name)).first():
            raise AlreadyExists(
                f"a different dataset is already named {name!r}",
                resource_type="dataset",
                resource_name=name,
            )

    # Checked before the bytes reach the store too, so that a refusal leaves no file behind.
    try:
        db.run_sync(check_name_free)
    except AlreadyExists:
        raced = db.run_sync(existing)  # the same content, stored since the check above
        if raced is None:
            raise
        return raced, True
    uri, _ = store.put_content_addressed(upload.path, "datasets", ".jsonl")

    def insert(session: Session) -> DatasetRow:
        check_name_free(session)
        row = DatasetRow(
            id=new_id("ds"),
            name=name,
            kind=upload.kind,
            description=upload.description,
            sha256=upload.sha256,
            size_bytes=upload.size_bytes,
            row_count=stats.row_count,
            approx_tokens=stats.approx_tokens,
            task_counts=dict(stats.task_counts),
            uri=uri,
        )
        session.add(row)
        session.flush()
        return row

    try:
        return db.run_sync(insert), False
    except (IntegrityError, AlreadyExists):
        # A concurrent upload stored it (or took the name) since the checks above: the same
        # content is that dataset; other content keeps the error (ALREADY_EXISTS for a name).
        raced = db.run_sync(existing)
        if raced is None:
            db.run_sync(check_name_free)
            raise
        return raced, True


def list_datasets(session: Session, kind: str, page: Page) -> list[DatasetRow]:
    """Datasets, newest first, optionally of one kind."""
    query = select(DatasetRow)
    if kind:
        query = query.where(DatasetRow.kind == kind)
    query = query.order_by(DatasetRow.create_time.desc(), DatasetRow.id)
    return list(session.scalars(query.offset(page.offset).limit(page.limit + 1)).all())


def delete_dataset(session: Session, ref: str) -> str:
    """Deletes a dataset unless a job that has not ended uses it; returns its URI if unshared."""
    row = find_dataset(session, ref)
    users = session.scalars(
        select(JobRow.id).where(
            (JobRow.dataset_id == row.id) | (JobRow.validation_dataset_id == row.id),
            JobRow.state.in_(ACTIVE_JOB_STATES),
        )
    ).all()
    if users:
        raise FailedPrecondition(
            f"dataset {row.name} is used by {len(users)} job(s) that have not ended",
            violations=[
                PreconditionViolation("IN_USE", f"jobs/{job}", "job uses this dataset")
                for job in users
            ],
        )
    session.delete(row)
    shared = session.scalars(
        select(DatasetRow.id).where(DatasetRow.uri == row.uri, DatasetRow.id != row.id)
    ).first()
    return "" if shared else row.uri
