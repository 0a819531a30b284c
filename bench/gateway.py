"""Benchmark: the REST gateway (`.bin/llmops-gateway`, grpc-gateway v2) against direct gRPC to the
same server, for a Registry read (GetModel by name) and a small Generate.

One run starts the real platform server (bench/platform_server.py: `app.serve`, every per-call
concern on) in its own process, and the real gateway binary in front of it
(`-backend ADDR -listen 127.0.0.1:0`; its JSON access log goes to a file, as in production). It
builds the tiny model (`llmops_workers.tiny.build_tiny_model`, random weights; or reuses
`--model-dir`) and registers it through the Registry. Then, at each `--concurrency`, for
`--duration` per cell:

- **GetModel**: `GET /v1/models/bench-tiny` through the gateway against
  `RegistryService.GetModel(model="bench-tiny")` with the generated Python stubs;
- **Generate**: `POST /v1/generate` against `InferenceService.Generate`, one prompt,
  `--new-tokens` greedy tokens (1 torch thread in the server).

REST clients are threads with one HTTP/1.1 keep-alive connection each (`http.client`); gRPC
clients are threads sharing one channel (the gateway also holds one connection to the server).
Each client sends its next request when the last one is answered. Cells are interleaved per
repeat, rotating the order (a slow moment of a shared machine hits all alike); the table gives
medians over `--repeats` of each cell's p50, p99 and QPS, and gateway/direct ratios of the same
run. The issue's target: gateway latency <= 1.5x direct. Exit status 1 if any request fails.

    .venv/bin/python bench/gateway.py --quick        # smoke run: c=1,4, 0.5 s cells, 1 repeat
    .venv/bin/python bench/gateway.py [--concurrency 1,16] [--duration 3] [--repeats 3] \
        [--new-tokens 8] [--model-dir DIR] [--pin] [--json OUT]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import grpc

from llmops.v1 import inference_service_pb2 as ipb
from llmops.v1 import inference_service_pb2_grpc, registry_service_pb2_grpc
from llmops.v1 import registry_service_pb2 as rpb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/NAME.py`
from bench._common import BenchError, fail, log, percentile, read_line, stop

REPO = Path(__file__).resolve().parents[1]
GATEWAY = REPO / ".bin" / "llmops-gateway"
MODEL = "bench-tiny"
PROMPT = "The cat sat on the mat. Summarize:"
TARGET = 1.5  # gateway latency <= 1.5x direct (the target)
OPERATIONS = ("GetModel", "Generate")
PATHS = ("direct", "gateway")


@dataclass
class Run:
    """One cell, one repeat: every latency (seconds), the wall time, the failures."""

    latencies: list[float]
    seconds: float
    failures: list[str]

    @property
    def qps(self) -> float:
        return len(self.latencies) / self.seconds


@dataclass
class Row:
    """One operation at one concurrency: medians over the repeats, direct and gateway."""

    operation: str
    concurrency: int
    p50_ms: dict[str, float]
    p99_ms: dict[str, float]
    qps: dict[str, float]
    requests: dict[str, int]
    qps_runs: dict[str, list[float]] = field(default_factory=dict)

    def ratio(self, metric: str) -> float:
        values: dict[str, float] = getattr(self, metric)
        return values["gateway"] / values["direct"]


# Processes


@contextmanager
def started(
    name: str, command: list[str], env: dict[str, str], prefix: str, workdir: Path, timeout: float
) -> Iterator[str]:
    """Starts `command` in its own session, stderr to workdir/NAME.log; yields the line with
    `prefix` that it prints once it listens; stops it on exit."""
    log_path = workdir / f"{name}.log"
    with log_path.open("w") as stderr:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
    try:
        try:
            line = read_line(process, prefix, timeout)
        except BenchError as exc:
            tail = log_path.read_text()[-2000:]
            fail(f"the {name} did not start: {exc}\nlast lines of its stderr:\n{tail}")
        yield line
    finally:
        stop(process)


def server_command(cpu: str | None, command: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *command] if cpu is not None else command


# Clients


def rest_client(url: str, operation: str, new_tokens: int) -> Callable[[], None]:
    """One keep-alive HTTP/1.1 connection; each call sends one request and reads the answer."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    if operation == "GetModel":
        method, path, body = "GET", f"/v1/models/{MODEL}", None
        headers: dict[str, str] = {}
    else:
        sampling = {"max_new_tokens": new_tokens, "temperature": 0}
        payload = {"model": MODEL, "prompt": PROMPT, "sampling": sampling}
        method, path, body = "POST", "/v1/generate", json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}

    def call() -> None:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise BenchError(f"{method} {path}: HTTP {response.status} {data[:300]!r}")
        answer = json.loads(data)
        if operation == "GetModel" and answer.get("name") != MODEL:
            raise BenchError(f"GET {path}: unexpected answer {data[:300]!r}")
        if operation == "Generate" and not answer.get("usage", {}).get("completion_tokens"):
            raise BenchError(f"POST {path}: no tokens in {data[:300]!r}")

    return call


def grpc_client(channel: grpc.Channel, operation: str, new_tokens: int) -> Callable[[], None]:
    """A call through the generated stubs on the shared channel."""
    if operation == "GetModel":
        registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
        request = rpb.GetModelRequest(model=MODEL)

        def get_model() -> None:
            if registry.GetModel(request, timeout=60).name != MODEL:
                raise BenchError("GetModel: unexpected answer")

        return get_model
    inference = inference_service_pb2_grpc.InferenceServiceStub(channel)
    generate_request = ipb.GenerateRequest(
        model=MODEL,
        prompt=PROMPT,
        sampling=ipb.SamplingParams(max_new_tokens=new_tokens, temperature=0.0),
    )

    def generate() -> None:
        if not inference.Generate(generate_request, timeout=60).usage.completion_tokens:
            raise BenchError("Generate: no tokens")

    return generate


def measure(calls: Sequence[Callable[[], None]], seconds: float) -> Run:
    """Each call on its own thread, back to back, until `seconds` have passed."""
    latencies: list[list[float]] = [[] for _ in calls]
    failures: list[str] = []
    barrier = threading.Barrier(len(calls) + 1)
    deadline = 0.0

    def worker(index: int) -> None:
        call, mine = calls[index], latencies[index]
        barrier.wait()
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            try:
                call()
            except (BenchError, grpc.RpcError, OSError, http.client.HTTPException) as exc:
                failures.append(f"{type(exc).__name__}: {exc}"[:500])
                return
            mine.append(time.perf_counter() - began)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    start = time.perf_counter()
    deadline = start + seconds
    barrier.wait()
    for thread in threads:
        thread.join(120)
    elapsed = time.perf_counter() - start
    return Run([x for mine in latencies for x in mine], elapsed, failures)


# The run


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--concurrency", default="1,16", help="comma-separated (1,16)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per cell (3)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=8, help="Generate's greedy tokens (8)")
    parser.add_argument("--model-dir", type=Path, default=None, help="a tiny model to reuse")
    parser.add_argument("--gateway", type=Path, default=GATEWAY, help="the gateway binary")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="server and gateway on CPU 1, this process (the clients) on CPU 0 (taskset)",
    )
    parser.add_argument("--json", metavar="OUT", default="", help="write runs and medians here")
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: c=1,4, 0.5 s per cell, 1 repeat"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.concurrency, args.duration, args.repeats = "1,4", 0.5, 1
    try:
        args.concurrencies = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})
    except ValueError:
        parser.error(f"--concurrency: expected integers, got {args.concurrency!r}")
    if not args.concurrencies or args.concurrencies[0] < 1:
        parser.error("--concurrency: give at least one positive integer")
    if args.repeats < 1 or args.new_tokens < 1 or args.duration <= 0:
        parser.error("--repeats and --new-tokens must be at least 1, --duration positive")
    if not os.access(args.gateway, os.X_OK):
        parser.error(f"{args.gateway} is not executable: build it with `make gateway`")
    return args


def register(address: str, model_dir: Path) -> None:
    with grpc.insecure_channel(address) as channel:
        registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
        model = rpb.Model(name=MODEL, kind=rpb.MODEL_KIND_BASE, uri=str(model_dir))
        registry.CreateModel(rpb.CreateModelRequest(model=model), timeout=60)


def summarize(runs: dict[tuple[str, int, str], list[Run]], concurrencies: list[int]) -> list[Row]:
    rows = []
    for operation in OPERATIONS:
        for c in concurrencies:
            cells = {path: runs[operation, c, path] for path in PATHS}
            rows.append(
                Row(
                    operation=operation,
                    concurrency=c,
                    p50_ms={
                        p: statistics.median(percentile(r.latencies, 50) for r in rs) * 1000
                        for p, rs in cells.items()
                    },
                    p99_ms={
                        p: statistics.median(percentile(r.latencies, 99) for r in rs) * 1000
                        for p, rs in cells.items()
                    },
                    qps={p: statistics.median(r.qps for r in rs) for p, rs in cells.items()},
                    requests={p: sum(len(r.latencies) for r in rs) for p, rs in cells.items()},
                    qps_runs={p: [round(r.qps, 1) for r in rs] for p, rs in cells.items()},
                )
            )
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| operation | concurrency | direct p50 ms | gateway p50 ms | p50 x "
        "| direct p99 ms | gateway p99 ms | p99 x | direct QPS | gateway QPS | QPS x "
        "| requests direct / gateway |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        d, g = "direct", "gateway"
        lines.append(
            f"| {row.operation} | {row.concurrency} "
            f"| {row.p50_ms[d]:.2f} | {row.p50_ms[g]:.2f} | {row.ratio('p50_ms'):.2f} "
            f"| {row.p99_ms[d]:.2f} | {row.p99_ms[g]:.2f} | {row.ratio('p99_ms'):.2f} "
            f"| {row.qps[d]:,.0f} | {row.qps[g]:,.0f} | {row.ratio('qps'):.2f} "
            f"| {row.requests[d]:,} / {row.requests[g]:,} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    server_cpu = None
    if args.pin:
        server_cpu = "1"
        os.sched_setaffinity(0, {0})
    began = time.monotonic()
    load_before = os.getloadavg()
    runs: dict[tuple[str, int, str], list[Run]] = {}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-gateway-")))
        (workdir / "data").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
        env |= {
            "PYTHONUNBUFFERED": "1",
            "LLMOPS_DATA_DIR": str(workdir / "data"),
            "LLMOPS_GRPC_PORT": "0",
            "LLMOPS_METRICS_PORT": "-1",
            "LLMOPS_LOG_LEVEL": "WARNING",
            "LLMOPS_INFERENCE_DEVICE": "cpu",
            "LLMOPS_INFERENCE_THREADS": "1",
        }
        command = server_command(server_cpu, [sys.executable, "bench/platform_server.py"])
        line = stack.enter_context(
            started("server", command, env, "gRPC ", workdir, args.startup_timeout)
        )
        address = line.split()[1]
        gateway_command = server_command(
            server_cpu,
            [str(args.gateway), "-backend", address, "-listen", "127.0.0.1:0"],
        )
        line = stack.enter_context(
            started("gateway", gateway_command, env, "listening on ", workdir, 30)
        )
        url = line.split("listening on ", 1)[1].split()[0]
        log(f"server at {address}, gateway at {url}")

        model_dir = args.model_dir or workdir / "model"
        if not (model_dir / "config.json").exists():
            from llmops_workers.tiny import build_tiny_model

            log(f"building the tiny model in {model_dir}")
            build_tiny_model(model_dir, pretrain_steps=0, threads=1)
        register(address, model_dir)

        channel = stack.enter_context(grpc.insecure_channel(address))
        grpc.channel_ready_future(channel).result(timeout=30)
        top = max(args.concurrencies)
        clients = {
            (op, path): [
                grpc_client(channel, op, args.new_tokens)
                if path == "direct"
                else rest_client(url, op, args.new_tokens)
                for _ in range(top)
            ]
            for op in OPERATIONS
            for path in PATHS
        }
        cells = [(op, c, path) for op in OPERATIONS for c in args.concurrencies for path in PATHS]
        log("warm-up")  # connections, the model's first load, lazy imports
        for op, c, path in cells:
            warm = measure(clients[op, path][:c], min(args.duration, 1.0))
            if warm.failures:
                fail(f"{op} {path} c={c} failed in the warm-up: {warm.failures[0]}")
        for repeat in range(args.repeats):
            shift = repeat * len(cells) // args.repeats
            for op, c, path in cells[shift:] + cells[:shift]:
                run = measure(clients[op, path][:c], args.duration)
                runs.setdefault((op, c, path), []).append(run)
                log(
                    f"[{repeat + 1}/{args.repeats}] {op} {path} c={c}: {run.qps:,.0f} QPS, "
                    f"p50 {percentile(run.latencies, 50) * 1000:.2f} ms"
                    + (f", {len(run.failures)} failed" if run.failures else "")
                )
        gateway_log_lines = sum(1 for _ in (workdir / "gateway.log").open())

    failures = [(key, f) for key, rs in runs.items() for r in rs for f in r.failures]
    rows = summarize(runs, args.concurrencies)
    print(
        f"GetModel (by name) and Generate ({args.new_tokens} greedy tokens, tiny model, 1 torch "
        f"thread) through the REST gateway against direct gRPC to the same server; "
        f"{args.duration:g} s per cell, medians of {args.repeats} interleaved repeats; "
        f"{os.cpu_count()} cores, load average {load_before[0]:.2f} {load_before[1]:.2f} "
        f"{load_before[2]:.2f} before, {os.getloadavg()[0]:.2f} after; "
        f"{'server and gateway on CPU 1, clients on CPU 0' if args.pin else 'no pinning'}; "
        f"{time.monotonic() - began:.0f} s in all\n"
    )
    print(table(rows))
    print(f"\n(x: gateway / direct; gateway access-log lines: {gateway_log_lines:,})\n")
    print("Targets:")
    for row in rows:
        for metric in ("p50_ms", "p99_ms"):
            value = row.ratio(metric)
            verdict = "pass" if value <= TARGET else "MISS"
            print(
                f"- {row.operation} c={row.concurrency}: gateway {metric.split('_')[0]} <= "
                f"{TARGET:g}x direct: {value:.2f}: {verdict}"
            )
    print(f"- request failures: {'none' if not failures else len(failures)}")
    for (op, c, path), message in failures[:10]:
        log(f"failed: {op} {path} c={c}: {message}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "rows": [asdict(r) for r in rows],
                    "failures": [f"{k}: {m}" for k, m in failures],
                },
                indent=2,
            )
            + "\n"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
