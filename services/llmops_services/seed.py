"""First-start registration of the bundled prompt templates and demo datasets (idempotent)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import select

from llmops_services.artifacts import sha256_file
from llmops_services.context import Platform
from llmops_services.db.tables import DatasetRow
from llmops_services.registry import datasets, templates
from llmops_services.registry.dataset_rules import DatasetKind, DatasetLimits

log = logging.getLogger("llmops.seed")


class SampleDataset(NamedTuple):
    """A bundled dataset the registry registers on first start."""

    name: str
    kind: DatasetKind
    filename: str
    description: str


SAMPLE_DATASETS: list[SampleDataset] = [
    SampleDataset(
        "demo-sft",
        "sft",
        "demo-sft.train.jsonl",
        "Demo SFT train split: name extraction, topic classification and one-sentence "
        "summarization (prompts rendered with the bundled templates).",
    ),
    SampleDataset(
        "demo-preference",
        "preference",
        "demo-preference.train.jsonl",
        "Demo preference train split over the three demo tasks: chosen is the correct answer, "
        "rejected a plausible wrong one.",
    ),
    SampleDataset(
        "demo-eval",
        "eval",
        "demo-eval.test.jsonl",
        "Demo held-out test split over the three demo tasks (unseen name combinations).",
    ),
    SampleDataset(
        "demo-preference-test",
        "preference",
        "demo-preference.test.jsonl",
        "Demo held-out preference pairs: what an eval run measures preference accuracy on.",
    ),
]
"""The bundled files under `config/datasets` that are registered, and as what. The files are made
by the seeded generator `llmops_workers.sample_data` (`python -m llmops_workers.sample_data`)."""


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
