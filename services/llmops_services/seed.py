"""First-start registration of the bundled prompt templates and demo datasets (idempotent)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from sqlalchemy import select

from llmops_services.artifacts import sha256_file
from llmops_services.context import Platform
from llmops_services.db.tables import DatasetRow
from llmops_services.registry import datasets, templates
from llmops_services.registry.dataset_rules import DatasetLimits
from llmops_services.sample_data import SAMPLE_DATASETS

log = logging.getLogger("llmops.seed")


def seed(platform: Platform) -> None:
    """Adds what is missing of the bundled templates and datasets."""
    config_dir = platform.settings.config_dir
    template_file = config_dir / "prompt_templates.json"
    if template_file.is_file():
        added = platform.db.run_sync(lambda s: templates.seed_templates(s, template_file))
        if added:
            log.info("registered bundled prompt templates", extra={"count": added})
    for name, kind, filename, description in SAMPLE_DATASETS:
        _seed_dataset(platform, config_dir / "datasets" / filename, name, kind, description)


def _seed_dataset(platform: Platform, path: Path, name: str, kind: str, description: str) -> None:
    present = platform.db.run_sync(
        lambda s: s.scalars(select(DatasetRow.id).where(DatasetRow.name == name)).first()
    )
    if present or not path.is_file():
        return
    settings = platform.settings
    spool = settings.data_dir / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=spool) as scratch:
        copy = Path(scratch) / path.name
        shutil.copyfile(path, copy)
        # Bundled data is checked against the default limits: operator limits are for uploads.
        stats = datasets.validate_file(copy, kind, DatasetLimits())  # type: ignore[arg-type]
        upload = datasets.ReceivedUpload(
            name=name,
            kind=kind,  # type: ignore[arg-type]
            description=description,
            path=copy,
            sha256=sha256_file(copy),
            size_bytes=copy.stat().st_size,
        )
        row, _ = datasets.store_dataset(platform.db, platform.store, upload, stats)
        log.info("registered bundled dataset", extra={"dataset": row.name, "rows": row.row_count})
