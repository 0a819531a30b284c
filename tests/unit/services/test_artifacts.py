"""The artifact store keeps keys inside its root, stores content once, works over fsspec."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from llmops_services.artifacts import ArtifactStore, UnsafeKey, safe_key, sha256_file


@pytest.mark.parametrize(
    "parts",
    [("..",), ("a", ".."), ("/etc",), ("a/b",), ("",), (".hidden",), ("a..b",), ("x" * 200,)],
)
def test_unsafe_key_parts_are_refused(parts: tuple[str, ...]) -> None:
    with pytest.raises(UnsafeKey):
        safe_key(*parts)


def test_uris_outside_the_store_are_refused(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    for uri in ["file:///etc/passwd", "store://../x", "store:///etc/passwd", "store://a//b"]:
        with pytest.raises(UnsafeKey):
            store.key_of(uri)
    assert store.key_of("store://datasets/sha256/ab.jsonl") == "datasets/sha256/ab.jsonl"


def test_a_link_out_of_the_store_is_refused(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, tmp_path / "store" / "escape")
    with pytest.raises(UnsafeKey, match="outside the store"):
        store.path("escape/secret")


def test_content_is_stored_once_and_read_back(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    source = tmp_path / "rows.jsonl"
    source.write_bytes(b'{"a": 1}\n')
    uri, digest = store.put_content_addressed(source, "datasets", ".jsonl")
    again, same = store.put_content_addressed(source, "datasets", ".jsonl")
    assert (uri, digest) == (again, same) and digest == sha256_file(source)
    with store.open(uri) as handle:
        assert handle.read() == b'{"a": 1}\n'
    assert store.local_path(uri).read_bytes() == b'{"a": 1}\n'
    assert not list((tmp_path / "store" / "datasets" / "sha256").glob("*.partial-*"))
    store.delete(uri)
    assert not store.exists(store.key_of(uri))


def test_an_fsspec_store_gives_local_paths_through_its_cache(tmp_path: Path) -> None:
    store = ArtifactStore(f"memory://llmops-{uuid.uuid4().hex}", cache_dir=tmp_path / "cache")
    source = tmp_path / "blob.bin"
    source.write_bytes(b"weights")
    uri, _ = store.put_content_addressed(source, "blobs")
    with store.open(uri) as handle:
        assert handle.read() == b"weights"
    local = store.local_path(uri)
    assert local.read_bytes() == b"weights" and local.is_relative_to(tmp_path / "cache")
    store.delete(uri)
    assert not store.exists(store.key_of(uri))


def test_a_remote_store_needs_a_cache_dir() -> None:
    with pytest.raises(ValueError, match="cache directory"):
        ArtifactStore(f"memory://llmops-{uuid.uuid4().hex}")


def test_a_local_store_publishes_in_place(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    work = store.workspace("jobs/j1/attempt-1")
    assert work == tmp_path / "store" / "jobs" / "j1" / "attempt-1"
    (work / "adapter").mkdir(parents=True)
    (work / "adapter" / "a.json").write_text("{}")
    key = store.key_of_local(work / "adapter")
    assert key == "jobs/j1/attempt-1/adapter"
    assert store.publish(key) == "store://jobs/j1/attempt-1/adapter"
    assert store.local_path(store.uri(key)) == work / "adapter"
    with pytest.raises(UnsafeKey):
        store.key_of_local(tmp_path / "elsewhere")
