"""What a test reads and writes in the artifact store of a test server's data dir, whichever
store `LLMOPS_TEST_BACKEND` gave it (a directory in the data dir, or an S3 bucket)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from llmops_services.artifacts import ArtifactStore
from llmops_services.context import open_store
from llmops_services.settings import Settings
from tests.backend import store_settings_for_tests

Where = Path | Settings
"""A test server's settings, or its data dir when it has the backend's store (`make_settings`)."""


def store_of(where: Where) -> ArtifactStore:
    """The store of a test server, with its cache."""
    if isinstance(where, Settings):
        return open_store(where)
    values: dict[str, Any] = {"data_dir": where, **store_settings_for_tests(where)}
    return open_store(Settings(**values))


def is_stored(where: Where, uri: str) -> bool:
    """Whether the store holds the artifact (asked of the store, not of a cached copy)."""
    store = store_of(where)
    return store.exists(store.key_of(uri))


def local_copy(where: Where, uri: str) -> Path:
    """A local path of the artifact: in the store's directory, or downloaded to the cache."""
    return store_of(where).local_path(uri)


def put_tree(where: Where, source: Path, key: str) -> str:
    """Copies a local directory into the store under `key`, as a worker publishes one."""
    store = store_of(where)
    shutil.copytree(source, store.workspace(key))
    return store.publish(key)


def stored_keys(where: Where) -> list[str]:
    """Every file's key in the store."""
    store = store_of(where)
    found = store.fs.find(store.root) if store.fs.exists(store.root) else []
    return sorted(str(path)[len(store.root) + 1 :] for path in found)
