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


def test_an_fsspec_store_works_without_local_paths(tmp_path: Path) -> None:
    store = ArtifactStore(f"memory://llmops-{uuid.uuid4().hex}")
    source = tmp_path / "blob.bin"
    source.write_bytes(b"weights")
    uri, _ = store.put_content_addressed(source, "blobs")
    with store.open(uri) as handle:
        assert handle.read() == b"weights"
    with pytest.raises(UnsafeKey, match="local artifact store"):
        store.local_path(uri)
    store.delete(uri)
    assert not store.exists(store.key_of(uri))
