"""The scaled-out backends: PostgreSQL for metadata and an fsspec artifact store."""

from __future__ import annotations

import math
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import llmops
from tests.conftest import ServerThread, make_settings
from tests.postgres import private_postgres

ROWS = b'{"prompt": "a", "reference": "b", "task": "extraction"}\n'


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as base, private_postgres(Path(base)) as url:
        yield url


def _model_dir(path: Path) -> Path:
    path.mkdir()
    (path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (path / "tokenizer.json").write_text('{"model": {"type": "BPE"}}')
    (path / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    return path


def test_registry_on_postgresql_survives_a_restart(postgres_url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", database_url=postgres_url)
    first = ServerThread(settings).start()
    try:
        with llmops.Client(first.address, timeout=10) as client:
            assert {d.name for d in client.datasets.list()} == {
                "demo-sft",
                "demo-preference",
                "demo-eval",
                "demo-preference-test",
            }
            uploaded = client.datasets.upload(ROWS, kind="eval", name="pg-eval")
            base = client.models.create("pg-base", str(_model_dir(tmp_path / "base")))
            second = client.models.create("pg-base", str(tmp_path / "base"))
            client.models.set_alias(base.id, "staging", reason="first")
            client.models.set_alias(second.id, "staging", reason="second")
            rolled = client.models.rollback("pg-base", "staging")
            assert rolled.model == base.id
            pages = list(client.datasets.list_page(page_size=2).datasets)
            assert len(pages) == 2
    finally:
        first.stop()
    again = ServerThread(make_settings(tmp_path / "data", database_url=postgres_url)).start()
    try:
        with llmops.Client(again.address, timeout=10) as client:
            assert client.datasets.get("pg-eval").sha256 == uploaded.dataset.sha256
            assert client.models.get("pg-base@staging").id == base.id
            assert client.models.get("pg-base").version == 2
            moves = list(client.models.alias_history("pg-base", "staging"))
            assert [m.reason for m in moves] == ["rollback", "second", "first"]
            assert len(list(client.datasets.list())) == 5
    finally:
        again.stop()


def test_idempotency_keys_are_per_kind_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    running = ServerThread(make_settings(tmp_path / "data", database_url=postgres_url)).start()
    try:
        with llmops.Client(running.address, timeout=10) as client:
            client.models.create("pg-jobs-base", str(_model_dir(tmp_path / "base")))
            run = client.eval.create("pg-jobs-base", "demo-eval", idempotency_key="pg-key")
            job = client.training.create(
                "sft", "pg-jobs-base", "demo-sft", idempotency_key="pg-key"
            )
            assert job.id != run.id
            again = client.training.create(
                "sft", "pg-jobs-base", "demo-sft", idempotency_key="pg-key"
            )
            assert again.id == job.id
            assert (
                client.eval.create("pg-jobs-base", "demo-eval", idempotency_key="pg-key").id
                == run.id
            )
    finally:
        running.stop()


def test_datasets_in_an_fsspec_store(tmp_path: Path) -> None:
    store = f"memory://llmops-{uuid.uuid4().hex}"
    settings = make_settings(tmp_path / "data", artifacts_url=store, seed_sample_data=False)
    running = ServerThread(settings).start()
    try:
        with llmops.Client(running.address, timeout=10) as client:
            uploaded = client.datasets.upload(ROWS, kind="eval", name="remote")
            assert uploaded.dataset.uri.startswith("store://datasets/sha256/")
            platform = running.process.platform
            assert platform is not None
            with platform.store.open(uploaded.dataset.uri) as handle:
                assert handle.read() == ROWS
            client.datasets.delete("remote")
            assert not platform.store.exists(platform.store.key_of(uploaded.dataset.uri))
    finally:
        running.stop()


def test_non_finite_metrics_are_kept_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    """PostgreSQL's JSON refuses Infinity: an eval of a model that never predicts the reference
    has an infinite perplexity, and saving it failed the run there."""
    running = ServerThread(make_settings(tmp_path / "data", database_url=postgres_url)).start()
    try:
        with llmops.Client(running.address, timeout=10) as client:
            made = client.models.create(
                "pg-inf", str(_model_dir(tmp_path / "inf")), metrics={"perplexity": math.inf}
            )
            assert made.metrics["perplexity"] == math.inf
            assert client.models.get("pg-inf").metrics["perplexity"] == math.inf
    finally:
        running.stop()
