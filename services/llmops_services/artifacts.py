"""The artifact store: a local directory by default, any fsspec URL (s3://, gs://, ...) otherwise.

Keys are made by the server from checked parts, never taken from users, and stored in the
database as `store://<key>` so the store can move. Every resolved path is checked to stay
inside the store: no `..`, no absolute paths, no links followed out of it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

STORE_SCHEME = "store://"
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CHUNK = 1024 * 1024


class UnsafeKey(ValueError):
    """A key or URI that would leave the store, or is not one of ours."""


def safe_key(*parts: str) -> str:
    """Joins key parts after checking each is a plain name (letters, digits, `.`, `_`, `-`)."""
    for part in parts:
        if not _PART.match(part) or part in {".", ".."} or ".." in part:
            raise UnsafeKey(f"unsafe artifact key part {part!r}")
    return "/".join(parts)


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ArtifactStore:
    """Reads and writes artifacts under one root, local or remote."""

    def __init__(self, url: str) -> None:
        self.url = url
        fs, root = fsspec.core.url_to_fs(url)
        self.fs: Any = fs
        self.is_local = isinstance(fs, LocalFileSystem)
        if self.is_local:
            root = os.path.realpath(root)
            Path(root).mkdir(parents=True, exist_ok=True)
        self.root: str = root.rstrip("/")

    def uri(self, key: str) -> str:
        """The database form of a key."""
        return STORE_SCHEME + key

    def key_of(self, uri: str) -> str:
        """The key of a `store://` URI, checked part by part."""
        if not uri.startswith(STORE_SCHEME):
            raise UnsafeKey(f"not an artifact-store URI: {uri!r}")
        return safe_key(*uri[len(STORE_SCHEME) :].split("/"))

    def path(self, key: str) -> str:
        """Where a key lives in the underlying filesystem; refuses anything outside the root."""
        safe_key(*key.split("/"))
        full = f"{self.root}/{key}"
        if self.is_local:
            real = os.path.realpath(full)
            if os.path.commonpath([real, self.root]) != self.root:
                raise UnsafeKey(f"artifact key {key!r} resolves outside the store")
        return full

    def local_path(self, uri: str) -> Path:
        """A local path for a `store://` URI; only for a local store."""
        if not self.is_local:
            raise UnsafeKey("local paths exist only for a local artifact store")
        return Path(self.path(self.key_of(uri)))

    def exists(self, key: str) -> bool:
        """Whether an object exists under the key."""
        return bool(self.fs.exists(self.path(key)))

    def put_file(self, source: Path, key: str) -> str:
        """Copies a local file to the key (atomically on a local store) and returns its URI."""
        target = self.path(key)
        if self.is_local:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            partial = f"{target}.partial-{os.getpid()}"
            self.fs.put_file(str(source), partial)
            os.replace(partial, target)
        else:
            self.fs.put_file(str(source), target)
        return self.uri(key)

    def put_content_addressed(self, source: Path, prefix: str, suffix: str = "") -> tuple[str, str]:
        """Stores a file under `<prefix>/sha256/<hex><suffix>`; identical content is stored once.

        Returns the URI and the hex digest.
        """
        digest = sha256_file(source)
        key = safe_key(prefix, "sha256", digest + suffix)
        if not self.exists(key):
            self.put_file(source, key)
        return self.uri(key), digest

    @contextmanager
    def open(self, uri: str, mode: str = "rb") -> Iterator[IO[bytes]]:
        """Opens an artifact for reading."""
        with self.fs.open(self.path(self.key_of(uri)), mode) as handle:
            yield handle

    def delete(self, uri: str) -> None:
        """Removes an artifact (a file or a directory tree) if it exists."""
        path = self.path(self.key_of(uri))
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)
