"""Runs the real platform server for the benchmark, exactly as production does: `app.serve`.

Settings come from the `LLMOPS_*` environment like any server process; every per-call concern
(request id, auth, log line, metrics) is on.
`serve` prints `gRPC     127.0.0.1:PORT  (...)` once it listens; SIGTERM stops it.

Usage: python bench/platform_server.py [--api-key ROLE] [--profile OUT.prof]

--api-key ROLE   creates an API key with ROLE before serving and prints `apikey   SECRET`, so
                 calls go through the authenticated path (a sha256 and a cache lookup per call)
                 instead of the anonymous one that applies while no key exists.
--profile OUT    runs the server under cProfile and writes the stats to OUT when it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import sys

from llmops_services.app import serve
from llmops_services.context import Platform
from llmops_services.runtime.auth import create_key
from llmops_services.settings import Settings


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--api-key", metavar="ROLE", default="")
    parser.add_argument("--profile", metavar="OUT", default="")
    args = parser.parse_args(argv)
    # pydantic-settings fills every field from LLMOPS_* (mypy sees only the constructor).
    settings = Settings()  # type: ignore[call-arg]
    if args.api_key:
        platform = Platform.open(settings)
        try:
            key = create_key(platform.db, args.api_key, "benchmark")
        finally:
            platform.close()
        print(f"apikey   {key.secret}", flush=True)
    if not args.profile:
        asyncio.run(serve(settings))
        return 0
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(serve(settings))
    finally:
        profiler.disable()
        profiler.dump_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
