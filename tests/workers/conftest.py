"""Fixtures for the engine tests: small data files cut from the bundled datasets (the tiny models
are tests/conftest.py's `tiny_models`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_models import read_rows, write_rows


@pytest.fixture(scope="session")
def engine_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small training and eval files cut from the bundled datasets.

    Named apart from the root conftest's `data_dir` (a server's data directory) so that both
    fixtures stay reachable from here. `eval.jsonl` holds the first 12 eval rows (5
    classification, 4 summarization, 3 extraction) and then 4 preference pairs.
    """
    root = tmp_path_factory.mktemp("data")
    write_rows(root / "sft.jsonl", read_rows("demo-sft.train.jsonl", 24))
    write_rows(root / "sft-validation.jsonl", read_rows("demo-sft.validation.jsonl", 8))
    write_rows(root / "preference.jsonl", read_rows("demo-preference.train.jsonl", 24))
    evaluation = read_rows("demo-eval.test.jsonl", 12) + read_rows("demo-preference.test.jsonl", 4)
    write_rows(root / "eval.jsonl", evaluation)
    return root
