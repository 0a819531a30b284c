"""Fixtures of the job tests: tiny models built once per session (two pretraining steps: the
tests need real Llama checkpoints with the platform's tokenizer, not good ones)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops_workers.tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny"
    build_tiny_model(path, pretrain_steps=2)
    return path


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "student"
    build_tiny_model(path, kind="student", pretrain_steps=2)
    return path
