"""The artifact store on S3 (a real moto server): trees published from a workspace, read back
through the local cache of another machine, the cache complete or absent, keys kept in."""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from llmops_services.artifact_cache import ArtifactCache
from llmops_services.artifacts import ArtifactStore, UnsafeKey
from tests.s3 import PrivateS3

TREE = {
    "adapter_config.json": b'{"r": 4}',
    "adapter_model.safetensors": bytes(range(256)) * 512,
    "tokenizer/tokenizer.json": b'{"vocab": {}}',
}


@pytest.fixture(scope="module")
def s3() -> Iterator[PrivateS3]:
    server = PrivateS3().start()
    yield server
    server.stop()


@pytest.fixture
def bucket(s3: PrivateS3) -> str:
    return s3.new_bucket()


def open_store(s3: PrivateS3, bucket: str, cache: Path) -> ArtifactStore:
    return ArtifactStore(f"s3://{bucket}/store", cache_dir=cache, endpoint_url=s3.endpoint_url)


def write_tree(root: Path) -> None:
    for name, data in TREE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def publish_tree(store: ArtifactStore, key: str) -> str:
    work = store.workspace(key)
    write_tree(work)
    return store.publish(store.key_of_local(work))


def test_a_published_tree_is_in_the_bucket_and_read_back_on_another_machine(
    s3: PrivateS3, bucket: str, tmp_path: Path
) -> None:
    writer = open_store(s3, bucket, tmp_path / "writer-cache")
    work = writer.workspace("jobs/j1/attempt-1/adapter")
    assert work.is_relative_to(tmp_path / "writer-cache")
    uri = publish_tree(writer, "jobs/j1/attempt-1/adapter")
    assert uri == "store://jobs/j1/attempt-1/adapter"
    listed = sorted(s3.filesystem().find(f"{bucket}/store"))
    assert listed == sorted(f"{bucket}/store/jobs/j1/attempt-1/adapter/{n}" for n in TREE)

    reader = open_store(s3, bucket, tmp_path / "reader-cache")
    local = reader.local_path(uri)
    assert local.name == "adapter" and local.is_relative_to(tmp_path / "reader-cache")
    assert read_tree(local) == TREE
    # published artifacts never change: the copy is used as it is, without asking the store
    s3.filesystem().rm(f"{bucket}/store/jobs", recursive=True)
    assert reader.local_path(uri) == local and read_tree(local) == TREE
    assert not any((tmp_path / "reader-cache" / "tmp").iterdir())


def test_files_are_stored_once_and_cached(s3: PrivateS3, bucket: str, tmp_path: Path) -> None:
    store = open_store(s3, bucket, tmp_path / "cache")
    source = tmp_path / "rows.jsonl"
    source.write_bytes(b'{"a": 1}\n')
    uri, digest = store.put_content_addressed(source, "datasets", ".jsonl")
    assert digest == hashlib.sha256(source.read_bytes()).hexdigest()
    assert store.exists(store.key_of(uri))
    with store.open(uri) as handle:
        assert handle.read() == b'{"a": 1}\n'
    local = store.local_path(uri)
    assert local.name == f"{digest}.jsonl" and local.read_bytes() == b'{"a": 1}\n'
    store.delete(uri)
    assert not store.exists(store.key_of(uri))


def test_a_missing_key_gives_a_path_that_does_not_exist(
    s3: PrivateS3, bucket: str, tmp_path: Path
) -> None:
    store = open_store(s3, bucket, tmp_path / "cache")
    missing = store.local_path("store://models/none")
    assert not missing.exists() and not missing.parent.exists()
    publish_tree(store, "models/none")  # published later, found then
    assert read_tree(store.local_path("store://models/none")) == TREE


def test_unsafe_keys_and_paths_are_refused(s3: PrivateS3, bucket: str, tmp_path: Path) -> None:
    store = open_store(s3, bucket, tmp_path / "cache")
    for uri in ["store://../x", "store:///etc/passwd", "store://a//b", "s3://other/x"]:
        with pytest.raises(UnsafeKey):
            store.local_path(uri)
    for key in ["../x", "a/../../x", "/etc"]:
        with pytest.raises(UnsafeKey):
            store.workspace(key)
    assert store.cache is not None
    for path in [tmp_path / "elsewhere", tmp_path / "cache" / "objects" / "x", store.cache.work]:
        with pytest.raises(UnsafeKey):
            store.key_of_local(path)
    with pytest.raises(FileNotFoundError):
        store.publish("models/empty")


def test_objects_named_outside_the_tree_are_not_downloaded(
    s3: PrivateS3, bucket: str, tmp_path: Path
) -> None:
    store = open_store(s3, bucket, tmp_path / "cache")
    publish_tree(store, "models/m")
    s3.filesystem().pipe(f"{bucket}/store/models/m/../../../../escaped", b"x")
    local = store.local_path("store://models/m")
    assert read_tree(local) == TREE
    assert not list(tmp_path.rglob("escaped"))


def test_concurrent_readers_in_threads_share_one_complete_copy(
    s3: PrivateS3, bucket: str, tmp_path: Path
) -> None:
    uri = publish_tree(open_store(s3, bucket, tmp_path / "writer"), "models/shared")
    store = open_store(s3, bucket, tmp_path / "cache")
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda _: store.local_path(uri), range(8)))
    assert len(set(paths)) == 1 and read_tree(paths[0]) == TREE
    assert not any((tmp_path / "cache" / "tmp").iterdir())


def _read_in_a_process(endpoint: str, bucket: str, cache: str, uri: str) -> dict[str, bytes]:
    store = ArtifactStore(f"s3://{bucket}/store", cache_dir=Path(cache), endpoint_url=endpoint)
    return read_tree(store.local_path(uri))


def test_concurrent_readers_in_processes_share_one_complete_copy(
    s3: PrivateS3, bucket: str, tmp_path: Path
) -> None:
    uri = publish_tree(open_store(s3, bucket, tmp_path / "writer"), "models/shared")
    context = multiprocessing.get_context("spawn")
    arguments = (s3.endpoint_url, bucket, str(tmp_path / "cache"), uri)
    with context.Pool(3) as pool:
        trees = pool.starmap(_read_in_a_process, [arguments] * 3)
    assert trees == [TREE] * 3
    assert len(list((tmp_path / "cache" / "objects").iterdir())) == 1


def test_a_reader_never_sees_half_a_download(tmp_path: Path) -> None:
    """The first download is held half way; a second one finishes meanwhile and wins. Until
    then the entry does not exist; afterwards it is whole, and the loser's copy is dropped."""
    cache = ArtifactCache(tmp_path / "cache")
    half_written, release = threading.Event(), threading.Event()

    def slow(target: Path) -> bool:
        write_tree_part(target, "first")
        half_written.set()
        release.wait(30)
        (target / "adapter_model.safetensors").write_bytes(b"first")
        return True

    def fast(target: Path) -> bool:
        write_tree_part(target, "second")
        (target / "adapter_model.safetensors").write_bytes(b"second")
        return True

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(cache.fetch, "models/m", slow)
        assert half_written.wait(30)
        entry = cache.entry("models/m")
        assert not entry.exists() and not entry.parent.exists()
        assert cache.fetch("models/m", fast) == entry
        release.set()
        assert first.result(30) == entry
    assert read_tree(entry) == {"config.json": b"second", "adapter_model.safetensors": b"second"}
    assert not any(cache.tmp.iterdir())


def write_tree_part(target: Path, text: str) -> None:
    target.mkdir(parents=True)
    (target / "config.json").write_text(text)


def test_a_failed_download_leaves_nothing(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")

    def failing(target: Path) -> Any:
        write_tree_part(target, "partial")
        raise ConnectionError("the store went away")

    with pytest.raises(ConnectionError):
        cache.fetch("models/m", failing)
    assert not cache.entry("models/m").parent.exists() and not any(cache.tmp.iterdir())
