"""Benchmark: the CPU an HTTP client spends per streamed token of vLLM's `/v1/completions`.

The vLLM engine reads one server-sent line per generated token, in the Inference service's
process, where that CPU is taken from the gRPC work of every other call. This compares the two
asyncio clients considered for it, httpx (h11, a pure-Python HTTP parser) and aiohttp (llhttp,
in C), on the same requests: `--concurrency` streams at a time, `--requests` in all, each
`--new-tokens` greedy tokens, every line parsed as JSON as the engine does. Rounds alternate
between the clients; the table gives medians.

    .venv/bin/python bench/vllm_http_client.py --vllm-url http://127.0.0.1:8001 [--rounds 3]

Needs a running vLLM OpenAI server (see docs/benchmarks.md for the start command).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import httpx

PROMPT_IDS = [1, *range(50, 70)]


def served_model(url: str) -> str:
    with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as response:
        models = json.load(response)["data"]
    return str(next(m["id"] for m in models if m.get("parent") is None))


def _count(line: str) -> int:
    if not line.startswith("data:") or "[DONE]" in line:
        return 0
    json.loads(line[len("data:") :])
    return 1


async def rounds_of(
    label: str, one: Callable[[], Awaitable[int]], concurrency: int, requests: int
) -> tuple[float, float]:
    """(chunks per second, client CPU microseconds per chunk) of one round."""
    gate = asyncio.Semaphore(concurrency)

    async def limited() -> int:
        async with gate:
            return await one()

    cpu, wall = time.process_time(), time.perf_counter()
    chunks = sum(await asyncio.gather(*(limited() for _ in range(requests))))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(
        f"{label}: {chunks / wall:,.0f} chunks/s, {cpu / chunks * 1e6:.0f} us/chunk",
        file=sys.stderr,
    )
    return chunks / wall, cpu / chunks * 1e6


async def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--vllm-url", required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    url = args.vllm_url.rstrip("/")
    body: dict[str, Any] = {
        "model": served_model(url),
        "prompt": PROMPT_IDS,
        "max_tokens": args.new_tokens,
        "temperature": 0,
        "stream": True,
        "return_token_ids": True,
    }
    results: dict[str, list[tuple[float, float]]] = {"httpx": [], "aiohttp": []}
    async with (
        httpx.AsyncClient(limits=httpx.Limits(max_connections=None), timeout=None) as hx,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
    ):

        async def with_httpx() -> int:
            async with hx.stream("POST", f"{url}/v1/completions", json=body) as response:
                return sum([_count(line) async for line in response.aiter_lines()])

        async def with_aiohttp() -> int:
            async with session.post(f"{url}/v1/completions", json=body) as response:
                return sum([_count(raw.decode()) async for raw in response.content])

        clients = {"httpx": with_httpx, "aiohttp": with_aiohttp}
        for one in clients.values():  # warm-up: connections, the server's first requests
            await one()
        for _ in range(args.rounds):
            for name, one in clients.items():
                results[name].append(await rounds_of(name, one, args.concurrency, args.requests))
    print(
        f"{args.requests} streams x {args.new_tokens} tokens, {args.concurrency} at a time, "
        f"medians of {args.rounds} alternating rounds\n"
    )
    print("| client | chunks/s | client CPU us per chunk |")
    print("|---|---:|---:|")
    for name, runs in results.items():
        rate = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"| {name} | {rate:,.0f} | {cpu:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
