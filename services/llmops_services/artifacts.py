"""The artifact store: a local directory by default, an S3 bucket (or any fsspec URL) otherwise.

Keys are made by the server from checked parts, never taken from users, and stored in the
database as `store://<key>` so the store can move. Every resolved path is checked to stay
inside the store: no `..`, no absolute paths, no links followed out of it.

A remote store is read and written through a local cache directory (`artifact_cache`): readers
ask `local_path(uri)`, which downloads the artifact once per machine; writers build an artifact
in `workspace(key)` and `publish(key)` it before anything records it. On a local store both are
the store's own paths and publishing is a no-op.
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

from llmops_services.artifact_cache import ArtifactCache

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


def _options(url: str, endpoint_url: str) -> dict[str, Any]:
    """fsspec options of a store URL: for S3, the endpoint (MinIO, moto, another provider) and
    no listing cache, since other processes write to the same bucket."""
    if not url.startswith(("s3://", "s3a://")):
        return {}
    options: dict[str, Any] = {"use_listings_cache": False}
    if endpoint_url:
        options["endpoint_url"] = endpoint_url
    return options


class ArtifactStore:
    """Reads and writes artifacts under one root, local or remote.

    A remote store needs `cache_dir`, where `local_path` downloads and `workspace` writes.
    Credentials of an S3 store come from where botocore looks (`AWS_ACCESS_KEY_ID` and
    `AWS_SECRET_ACCESS_KEY`, `~/.aws`, an instance role); the endpoint from `endpoint_url`.
    """

    def __init__(self, url: str, *, cache_dir: Path | None = None, endpoint_url: str = "") -> None:
        self.url = url
        fs, root = fsspec.core.url_to_fs(url, **_options(url, endpoint_url))
        self.fs: Any = fs
        self.is_local = isinstance(fs, LocalFileSystem)
        self.cache: ArtifactCache | None = None
        if self.is_local:
            root = os.path.realpath(root)
            Path(root).mkdir(parents=True, exist_ok=True)
        elif cache_dir is None:
            raise ValueError(f"a remote artifact store ({url}) needs a local cache directory")
        else:
            self.cache = ArtifactCache(cache_dir)
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
        """A local path for a `store://` URI: the store's own on a local store; on a remote one
        the cached copy, downloaded first if this machine has none (artifacts never change
        once published, so a cached copy is never checked again). A missing key gives a path
        that does not exist, as on a local store."""
        key = self.key_of(uri)
        if self.cache is None:
            return Path(self.path(key))
        return self.cache.fetch(key, lambda target: self._download(key, target))

    def _download(self, key: str, target: Path) -> bool:
        """Copies the file or tree of `key` to `target`; False when there is none."""
        remote = self.path(key)
        try:
            info = self.fs.info(remote)
        except FileNotFoundError:
            return False
        if info["type"] != "directory":
            target.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(remote, str(target))
            return True
        sources, targets = [], []
        for found in sorted(self.fs.find(remote)):
            relative = found[len(remote) + 1 :] if found.startswith(remote + "/") else ""
            parts = relative.split("/")
            if not relative or any(part in ("", ".", "..") for part in parts):
                continue  # a folder marker, or a name that would land outside the target
            sources.append(found)
            targets.append(str(target.joinpath(*parts)))
        if not sources:
            return False
        for local in targets:
            Path(local).parent.mkdir(parents=True, exist_ok=True)
        self.fs.get(sources, targets)
        return True

    def workspace(self, key: str) -> Path:
        """Where a writer builds the artifact of `key`: the store's own path on a local store,
        a directory in the cache on a remote one. `publish(key)` makes it readable to others."""
        if self.cache is None:
            return Path(self.path(key))
        return self.cache.workspace(safe_key(*key.split("/")))

    def key_of_local(self, path: Path) -> str:
        """The key of a path inside a workspace (the inverse of `workspace`)."""
        base = self.root if self.cache is None else str(self.cache.work)
        real = os.path.realpath(path)
        if os.path.commonpath([real, base]) != base or real == base:
            raise UnsafeKey(f"{path} is not inside the artifact store's workspaces")
        return safe_key(*Path(real).relative_to(base).parts)

    def publish(self, key: str) -> str:
        """Uploads the workspace of `key` (a file or a tree) to a remote store and returns its
        URI; nothing to do on a local store. Call it before recording the URI anywhere: a
        recorded artifact must be readable from every machine."""
        target = self.path(key)
        if self.cache is None:
            return self.uri(key)
        source = self.cache.workspace(key)
        if source.is_file():
            self.fs.put_file(str(source), target)
            return self.uri(key)
        files = sorted(p for p in source.rglob("*") if p.is_file() and not p.is_symlink())
        if not files:
            raise FileNotFoundError(f"nothing to publish at {source}")
        self.fs.put(
            [str(p) for p in files], [f"{target}/{p.relative_to(source).as_posix()}" for p in files]
        )
        return self.uri(key)

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
