"""A local copy of a remote artifact store, for the code that can only read local paths.

Hugging Face `from_pretrained`, PEFT and vLLM open model directories by path (and memory-map
safetensors), and the trainer resumes from a checkpoint directory: none of them read from an
object store. So a remote artifact is downloaded once per machine and loaded from disk, rather
than streamed. Artifacts are immutable once published (their keys carry job ids, attempts or
sha256 digests), so a cached copy is never revalidated.

Layout of the cache directory:

- `objects/<sha256 of the key>/<last part of the key>`: a downloaded artifact, a file or a tree.
  The `<sha256>` directory appears only by renaming a finished download into place, so its
  existence is the completion mark: no reader (thread or process) ever sees half a tree. Two
  downloads of one key each write their own temporary directory; the first rename wins and
  the other is discarded.
- `work/<key>`: where writers build an artifact before they publish it to the store.
- `tmp/`: downloads under way; what a killed process left there may be deleted at any time no
  download is running.

Nothing is evicted: the cache grows with what the machine has loaded (see docs/deploy.md).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


class ArtifactCache:
    """Downloaded copies and writers' workspaces under one local directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))
        self.objects = self.root / "objects"
        self.work = self.root / "work"
        self.tmp = self.root / "tmp"
        for folder in (self.objects, self.work, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)

    def entry(self, key: str) -> Path:
        """Where the copy of `key` is once downloaded (its name kept: `step-40`, `x.jsonl`)."""
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.objects / digest / key.rsplit("/", 1)[-1]

    def workspace(self, key: str) -> Path:
        """Where a writer builds the artifact of `key` before publishing it."""
        return self.work / key

    def fetch(self, key: str, download: Callable[[Path], bool]) -> Path:
        """The local copy of `key`, made by `download(target)` unless complete already.

        `download` writes the artifact (file or tree) at `target` and returns False when the
        store has no such key; then the returned path does not exist, as a local store's path
        of a missing key would not."""
        entry = self.entry(key)
        if entry.parent.is_dir():
            return entry
        staging = Path(tempfile.mkdtemp(prefix="fetch-", dir=self.tmp))
        try:
            if download(staging / entry.name):
                try:
                    os.rename(staging, entry.parent)
                except OSError as error:
                    # another thread or process finished the same download first
                    if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return entry
