"""Benchmark: unary Registry reads (GetPromptTemplate) against a bare grpc.aio echo server.

Starts, each in its own process, the echo server (bench/echo_server.py: no interceptors, no
database, the ceiling of Python gRPC on this machine) and the real platform server
(bench/platform_server.py: `app.serve` with every per-call concern on) in a few configurations, then
drives each with `ghz` at every concurrency, several times, interleaved, and prints the medians as
a markdown table: QPS, p50/p99 latency, the ratio to the echo server's QPS at the same
concurrency, and the server's CPU time per call.

    .venv/bin/python bench/registry_reads.py [--duration 10s] [--concurrency 1,50] [--json OUT]

The servers are pinned to one CPU and ghz to the other (`taskset`), so the load generator does
not steal the server's core; `--no-pin` lets the scheduler place both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from llmops.v1 import registry_service_pb2, registry_service_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/NAME.py`
from bench._common import BenchError, fail, log, read_line, stop

REPO = Path(__file__).resolve().parents[1]
PROTO = "protos/llmops/v1/registry_service.proto"
IMPORT_PATHS = "protos,third_party/googleapis"
CALL = "llmops.v1.RegistryService/GetPromptTemplate"
TEMPLATE_ID = "summarization"
GHZ_INSTALL = "go install github.com/bojand/ghz/cmd/ghz@v0.120.0"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Variant:
    """One server configuration under test."""

    name: str
    description: str
    command: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    platform: bool = True


VARIANTS = {
    "echo": Variant(
        "echo",
        "bench/echo_server.py: grpc.aio, constant response, no interceptors",
        ("bench/echo_server.py", "0"),
        platform=False,
    ),
    "platform": Variant(
        "platform",
        "app.serve, request id, auth, metrics, JSON log line per call at INFO (production default)",
        ("bench/platform_server.py",),
    ),
    "platform-warning": Variant(
        "platform-warning",
        "as platform, LLMOPS_LOG_LEVEL=WARNING (no per-call log line)",
        ("bench/platform_server.py",),
        {"LLMOPS_LOG_LEVEL": "WARNING"},
    ),
    "platform-apikey": Variant(
        "platform-apikey",
        "as platform, with a reader API key sent on every call (authenticated path)",
        ("bench/platform_server.py", "--api-key", "reader"),
    ),
}


@dataclass
class Server:
    """A started server process."""

    variant: Variant
    process: subprocess.Popen[str]
    address: str
    log_path: Path
    api_key: str = ""
    response_bytes: int = 0

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process (all its threads) so far."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Run:
    """One ghz run against one server."""

    server: str
    concurrency: int
    repetition: int
    qps: float
    p50_ms: float
    p99_ms: float
    count: int
    errors: dict[str, int]
    server_cpu_us_per_call: float


@dataclass
class Row:
    """The medians of one (server, concurrency) over the repetitions."""

    server: str
    concurrency: int
    qps: float
    p50_ms: float
    p99_ms: float
    ratio: float
    server_cpu_us_per_call: float
    qps_runs: list[float]


def find_ghz(given: str) -> str:
    """The ghz binary: --ghz, $GHZ, PATH, or ~/go/bin, in that order."""
    candidates = [given, os.environ.get("GHZ", ""), shutil.which("ghz") or ""]
    candidates.append(str(Path(os.environ.get("GOPATH", Path.home() / "go")) / "bin" / "ghz"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    fail(
        "ghz not found (looked at --ghz, $GHZ, PATH and ~/go/bin).\n"
        f"Install it with Go:  {GHZ_INSTALL}\n"
        "then put ~/go/bin on PATH or pass --ghz /path/to/ghz."
    )


def ghz_version(ghz: str) -> str:
    """ghz's module version (go-installed builds answer `dev` to --version)."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    try:
        out = subprocess.run([go, "version", "-m", ghz], capture_output=True, text=True, timeout=10)
        for line in out.stdout.splitlines():
            parts = line.split()
            if parts[:2] == ["mod", "github.com/bojand/ghz"]:
                return parts[2]
    except (OSError, subprocess.SubprocessError):
        pass
    out = subprocess.run([ghz, "--version"], capture_output=True, text=True, timeout=10)
    return (out.stdout or out.stderr).strip()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def parse_duration(text: str) -> float:
    """Seconds of a ghz duration such as `10s`, `500ms` or `1m`."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0}
    for suffix in ("ms", "s", "m"):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


def pinned(cpu: str | None, command: Sequence[str]) -> list[str]:
    return ["taskset", "-c", cpu, *command] if cpu is not None else list(command)


@contextmanager
def start_server(
    variant: Variant, workdir: Path, cpu: str | None, startup_timeout: float
) -> Iterator[Server]:
    """Starts the variant's server in its own process; terminates it (then kills) on exit."""
    data_dir = workdir / variant.name
    data_dir.mkdir()
    log_path = workdir / f"{variant.name}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if variant.platform:
        env |= {
            "LLMOPS_DATA_DIR": str(data_dir),
            "LLMOPS_GRPC_PORT": "0",
            "LLMOPS_METRICS_PORT": "-1",
            "LLMOPS_LOG_LEVEL": "INFO",
            **variant.env,
        }
    command = pinned(cpu, [sys.executable, *variant.command])
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
        )
    try:
        api_key = ""
        if "--api-key" in variant.command:
            api_key = read_line(process, "apikey ", startup_timeout).split()[1]
        prefix = "gRPC " if variant.platform else "echo "
        address = read_line(process, prefix, startup_timeout).split()[1]
    except BaseException as exc:
        stop(process)
        if not isinstance(exc, BenchError):
            raise
        tail = log_path.read_text()[-2000:]
        raise BenchError(
            f"the {variant.name} server did not start: {exc}\nlast lines of its stderr:\n{tail}"
        ) from None
    try:
        yield Server(variant, process, address, log_path, api_key)
    finally:
        stop(process)


def metadata_of(server: Server) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {server.api_key}"),) if server.api_key else ()


def check_response(server: Server) -> None:
    """One call through the Python client: the server answers, and how big the answer is."""
    with grpc.insecure_channel(server.address) as channel:
        stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        try:
            response = stub.GetPromptTemplate(
                registry_service_pb2.GetPromptTemplateRequest(template_id=TEMPLATE_ID),
                metadata=metadata_of(server),
                timeout=10,
            )
        except grpc.RpcError as exc:
            fail(f"{server.variant.name}: GetPromptTemplate failed: {exc}")
    if response.template_id != TEMPLATE_ID:
        fail(f"{server.variant.name}: unexpected response {response}")
    server.response_bytes = response.ByteSize()


def run_ghz(
    ghz: str, cpu: str | None, server: Server, concurrency: int, duration: str
) -> dict[str, Any]:
    command = [
        ghz,
        "--insecure",
        "--proto",
        PROTO,
        "--import-paths",
        IMPORT_PATHS,
        "--call",
        CALL,
        "--data",
        json.dumps({"template_id": TEMPLATE_ID}),
        "--concurrency",
        str(concurrency),
        "--connections",
        "1",
        "--duration",
        duration,
        "--duration-stop",
        "wait",
        "--format",
        "json",
    ]
    if server.api_key:
        command += ["--metadata", json.dumps(dict(metadata_of(server)))]
    command.append(server.address)
    timeout = parse_duration(duration) + 60
    out = subprocess.run(
        pinned(cpu, command), cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        fail(f"ghz failed ({out.returncode}) against {server.variant.name}:\n{out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def measure(
    ghz: str, cpu: str | None, server: Server, concurrency: int, duration: str, repetition: int
) -> Run:
    cpu_before = server.cpu_seconds()
    result = run_ghz(ghz, cpu, server, concurrency, duration)
    cpu_used = server.cpu_seconds() - cpu_before
    percentiles = {p["percentage"]: p["latency"] / 1e6 for p in result["latencyDistribution"]}
    codes: dict[str, int] = dict(result.get("statusCodeDistribution") or {})
    ok = codes.pop("OK", 0)
    return Run(
        server=server.variant.name,
        concurrency=concurrency,
        repetition=repetition,
        qps=float(result["rps"]),
        p50_ms=percentiles[50],
        p99_ms=percentiles[99],
        count=int(result["count"]),
        errors=codes,
        server_cpu_us_per_call=cpu_used / max(ok, 1) * 1e6,
    )


def summarize(runs: list[Run], names: list[str], concurrencies: list[int]) -> list[Row]:
    rows: list[Row] = []
    for concurrency in concurrencies:
        echo_qps = 0.0
        for name in names:
            mine = [r for r in runs if r.server == name and r.concurrency == concurrency]
            qps = statistics.median(r.qps for r in mine)
            if name == "echo":
                echo_qps = qps
            rows.append(
                Row(
                    server=name,
                    concurrency=concurrency,
                    qps=qps,
                    p50_ms=statistics.median(r.p50_ms for r in mine),
                    p99_ms=statistics.median(r.p99_ms for r in mine),
                    ratio=qps / echo_qps if echo_qps else float("nan"),
                    server_cpu_us_per_call=statistics.median(
                        r.server_cpu_us_per_call for r in mine
                    ),
                    qps_runs=[round(r.qps, 1) for r in mine],
                )
            )
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| server | concurrency | QPS | p50 ms | p99 ms | ratio to echo QPS "
        "| server CPU µs/call | QPS of each run |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.server} | {row.concurrency} | {row.qps:,.0f} | {row.p50_ms:.2f} "
            f"| {row.p99_ms:.2f} | {row.ratio:.2f} | {row.server_cpu_us_per_call:,.0f} "
            f"| {', '.join(f'{q:,.0f}' for q in row.qps_runs)} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Unary Registry reads (GetPromptTemplate): platform vs a bare grpc.aio server."
    )
    parser.add_argument("--duration", default="10s", help="ghz duration of each run (10s)")
    parser.add_argument("--concurrency", default="1,50", help="comma-separated (1,50)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; medians reported")
    parser.add_argument("--warmup", default="3s", help="ghz warm-up per server and concurrency")
    parser.add_argument(
        "--servers",
        default=",".join(VARIANTS),
        help=f"comma-separated, from {', '.join(VARIANTS)} (echo is always included)",
    )
    parser.add_argument("--server-cpu", default="1", help="CPU list the servers are pinned to")
    parser.add_argument("--ghz-cpu", default="0", help="CPU list ghz is pinned to")
    parser.add_argument("--no-pin", action="store_true", help="pin nothing")
    parser.add_argument("--ghz", default="", help="path of the ghz binary")
    parser.add_argument("--json", metavar="OUT", default="", help="write runs and medians here")
    parser.add_argument(
        "--target", type=float, default=0.7, help="least platform/echo QPS ratio (0.7)"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when `platform` is below --target"
    )
    parser.add_argument("--startup-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    try:
        args.concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        parser.error(f"--concurrency: expected integers, got {args.concurrency!r}")
    if not args.concurrencies or min(args.concurrencies) < 1:
        parser.error("--concurrency: give at least one positive integer")
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"--servers: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    args.names = ["echo", *(n for n in VARIANTS if n in names and n != "echo")]
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    for option in ("duration", "warmup"):
        try:
            if parse_duration(getattr(args, option)) <= 0:
                raise ValueError
        except ValueError:
            parser.error(f"--{option}: expected a duration such as 10s, 500ms or 1m")
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    ghz = find_ghz(args.ghz)
    if not args.no_pin and shutil.which("taskset") is None:
        log("taskset not found: running unpinned")
        args.no_pin = True
    if not args.no_pin and len(os.sched_getaffinity(0)) < 2:
        log("fewer than 2 CPUs available: running unpinned")
        args.no_pin = True
    server_cpu = None if args.no_pin else args.server_cpu
    ghz_cpu = None if args.no_pin else args.ghz_cpu
    # SIGTERM (and SIGINT, even where a shell started us ignoring it) end the run like Ctrl-C:
    # KeyboardInterrupt unwinds the context managers, which stop the servers.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    context = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "ghz": ghz_version(ghz),
        "pinning": "none"
        if args.no_pin
        else f"servers on CPU {args.server_cpu}, ghz on CPU {args.ghz_cpu} (taskset)",
        "duration": args.duration,
        "repeat": args.repeat,
        "command": " ".join([".venv/bin/python", "bench/registry_reads.py", *argv]),
    }
    runs: list[Run] = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llmops-bench-")))
        servers: dict[str, Server] = {}
        for name in args.names:
            server = stack.enter_context(
                start_server(VARIANTS[name], workdir, server_cpu, args.startup_timeout)
            )
            check_response(server)
            servers[name] = server
            log(f"started {name} at {server.address} ({server.response_bytes} B response)")
        # The seeding time's nanos take 4 or 5 bytes, so a byte either way is expected.
        sizes = [s.response_bytes for s in servers.values()]
        if max(sizes) - min(sizes) > 2:
            by_server = {n: s.response_bytes for n, s in servers.items()}
            log(f"warning: response sizes differ: {by_server}")
        for server in servers.values():
            for concurrency in args.concurrencies:
                log(f"warm-up {server.variant.name} c={concurrency} {args.warmup}")
                run_ghz(ghz, ghz_cpu, server, concurrency, args.warmup)
        # Interleaved, so a slow minute of the machine hits every server alike.
        for repetition in range(1, args.repeat + 1):
            for concurrency in args.concurrencies:
                for server in servers.values():
                    run = measure(ghz, ghz_cpu, server, concurrency, args.duration, repetition)
                    runs.append(run)
                    log(
                        f"[{repetition}/{args.repeat}] {run.server} c={concurrency}: "
                        f"{run.qps:,.0f} QPS p50 {run.p50_ms:.2f} ms p99 {run.p99_ms:.2f} ms"
                        + (f" errors {run.errors}" if run.errors else "")
                    )
        log_lines = {
            name: sum(1 for _ in s.log_path.open())
            for name, s in servers.items()
            if s.variant.platform
        }
        context["response_bytes"] = next(iter(servers.values())).response_bytes
        context["server_log_lines"] = log_lines

    rows = summarize(runs, args.names, args.concurrencies)
    print(f"CPU: {context['cpu']} ({context['cores']} cores); pinning: {context['pinning']}")
    print(
        f"Python {context['python']}, grpcio {context['grpcio']}, ghz {context['ghz']}; "
        f"{args.repeat} runs of {args.duration} per cell, medians; "
        f"response {context['response_bytes']} B"
    )
    print()
    for name in args.names:
        print(f"- {name}: {VARIANTS[name].description}")
    print()
    print(table(rows))
    print()
    below = []
    for row in rows:
        if row.server == "platform":
            verdict = "meets" if row.ratio >= args.target else "BELOW"
            if row.ratio < args.target:
                below.append(row)
            print(
                f"Verdict c={row.concurrency}: platform at {row.ratio:.2f} of echo QPS, "
                f"{verdict} the {args.target:.2f} target"
            )
    errors = [r for r in runs if r.errors]
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "context": context,
                    "rows": [asdict(r) for r in rows],
                    "runs": [asdict(r) for r in runs],
                },
                indent=2,
            )
            + "\n"
        )
    if errors:
        for run in errors:
            log(f"errors: {run.server} c={run.concurrency} run {run.repetition}: {run.errors}")
        return 1
    return 1 if args.check and below else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
