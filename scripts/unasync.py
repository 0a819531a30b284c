"""Writes the sync SDK from the async one, the way httpcore's `scripts/unasync.py` does.

The async client and its job handles are the source; their sync twins are generated from them by
a small set of rewrites (`async def` → `def`, `await x` → `x`, `AsyncIterator` → `Iterator`,
`grpc.aio` → `grpc`, `asyncio.sleep` → `time.sleep`, ...), then sorted and formatted by ruff.
Where the two faces really differ (how the channel closes, the docstrings that name the face),
`SYNC_TEXT` holds the exact async text and its sync replacement; each must be found exactly once,
so a change to the source that would leave the sync face wrong stops the generator instead.

    python scripts/unasync.py            # rewrites the sync files (`make unasync`)
    python scripts/unasync.py --out DIR  # writes them under DIR instead, for the freshness test
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path("clients/python/llmops")

FILES = {
    PACKAGE / "async_client.py": PACKAGE / "client.py",
    PACKAGE / "_async_jobs.py": PACKAGE / "_sync_jobs.py",
}

SYNC_TEXT: dict[Path, list[tuple[str, str]]] = {
    PACKAGE / "async_client.py": [
        (
            "The asyncio SDK: `AsyncClient`, the `grpc.aio` twin of `Client` with the same "
            "sub-clients.",
            "The synchronous SDK: `Client` and its sub-clients, returning the contract's messages\n"
            "(training jobs and eval runs wrapped in handles that can wait for, watch and cancel"
            " them).",
        ),
        ("Create it inside a running event loop.\n", ""),
        (
            "This file is the source of the sync client too: `scripts/unasync.py` writes "
            "`client.py` from\nit (`make unasync`), so both faces take the same arguments and "
            "behave the same.",
            "Generated from `async_client.py`, so both faces take the same arguments and behave "
            "the same.",
        ),
        (
            "Chunks of the upload; the async client reads them in a thread, so its loop keeps "
            "going.",
            "Chunks of the upload, read as they are sent.",
        ),
        ("await asyncio.to_thread(f.read, chunk_size)", "f.read(chunk_size)"),
        (
            "Asyncio client for all four services over one `grpc.aio` channel.",
            "Synchronous client for all four services over one channel.",
        ),
        (
            '''    async def close(self, grace: float | None = None) -> None:
        """Closes the channel; calls still running after `grace` seconds are cancelled."""
        await self._channel.close(grace)''',
            '''    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self._channel.close()''',
        ),
    ],
    PACKAGE / "_async_jobs.py": [
        (
            '"""The async job handles, and the source of the sync ones: '
            "`scripts/unasync.py` writes\n"
            "`_sync_jobs.py` from this file (`make unasync`), so the two cannot drift apart.",
            '''"""The sync job handles, generated from `_async_jobs.py`.''',
        ),
        (
            "A training job, eval run or merge job of the async client, reading its latest "
            "message.",
            "A training job, eval run or merge job of the sync client, reading its latest message.",
        ),
    ],
}

# Applied in order, after SYNC_TEXT.
REWRITES: list[tuple[str, str]] = [
    # `(await get(id)).watch()` → `get(id).watch()`, but not `f(await g())`.
    (r"(?<![\w)\]])\(await ([\w.]+\([^()]*\))\)", r"\1"),
    (r"^import asyncio\n", ""),
    (r"\basync def\b", "def"),
    (r"^( *)async for (\w+) in ([\w.]+):\n *yield \2\n", r"\1yield from \3\n"),
    (r"\basync for\b", "for"),
    (r"\basync with\b", "with"),
    (r"\bawait ", ""),
    (r"\basyncio\.sleep\(", "time.sleep("),
    (r"\bAwaitable\[([\w.]+)\]", r"\1"),
    (r"\bAwaitable, ", ""),
    (r"\bgrpc\.aio\.", "grpc."),
    (r"\b(\w+)AsyncStub\b", r"\1Stub"),
    (r"\b__a(enter|exit|iter|next)__\b", r"__\1__"),
    (r"\bStopAsyncIteration\b", "StopIteration"),
    (r"\bAsync([A-Z]\w*)", r"\1"),
    (r"\b_AioTransport\b", "_Transport"),
    (r"\bapaginate\b", "paginate"),
    (r"\baio_channel\b", "sync_channel"),
    (r"\bawait_for\b", "wait_for"),
    (r"\baclose\b", "close"),
    (r"\bllmops\._async_jobs\b", "llmops._sync_jobs"),
    (r"\bllmops\.async_client\b", "llmops.client"),
]

# What must not be left in a sync file.
LEFTOVER = re.compile(r"\b(async|await|asyncio|aio|Awaitable)\b")


def header(source: Path) -> str:
    return f"# Generated from {source.name} by scripts/unasync.py (make unasync): do not edit.\n"


def unasync(source: Path, text: str) -> str:
    """The sync twin of one async source file, before ruff sorts and formats it."""
    for old, new in SYNC_TEXT.get(source, []):
        found = text.count(old)
        if found != 1:
            raise SystemExit(f"{source}: expected one {old!r}, found {found}")
        text = text.replace(old, new)
    for pattern, replacement in REWRITES:
        text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
    for number, line in enumerate(text.splitlines(), 1):
        if LEFTOVER.search(line):
            raise SystemExit(f"{source}:{number}: still async after the rewrite: {line.strip()}")
    return header(source) + text


def ruff(target: Path, text: str) -> str:
    """`text` with imports sorted and formatted as ruff does it for `target` in this repo."""
    ruff = [sys.executable, "-m", "ruff"]
    name = ["--stdin-filename", str(target)]
    steps = [[*ruff, "check", "--select", "I", "--fix-only", "--quiet", *name, "-"]]
    steps.append([*ruff, "format", "--quiet", *name, "-"])
    for command in steps:
        text = subprocess.run(
            command, input=text, capture_output=True, text=True, check=True, cwd=ROOT
        ).stdout
    return text


def generate(out: Path) -> list[Path]:
    """Writes every sync file under `out`; returns their paths."""
    written = []
    for source, target in FILES.items():
        text = ruff(target, unasync(source, (ROOT / source).read_text()))
        path = out / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="root to write under (the repo)")
    for path in generate(parser.parse_args().out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
