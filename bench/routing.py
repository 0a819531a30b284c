"""Benchmark: routing generation over two Inference replicas by adapter affinity (the gateway's
`-inference-backends` with `-inference-routing affinity`) against round-robin (what a plain
Kubernetes Service gives: every replica sees every adapter), with more adapters than one
replica's adapter budget holds.

One run builds the tiny model (`llmops_workers.tiny.build_tiny_model`, random weights; or reuses
`--model-dir`) and `--adapters` LoRA adapters with random (not zero) B matrices, and registers
them once in a shared data dir (one SQLite registry). Each cell then starts, fresh (cold adapter
caches), two real platform servers on that data dir (bench/platform_server.py, each its own
process and Prometheus metrics, `LLMOPS_INFERENCE_MAX_ADAPTERS=--max-adapters`, 1 torch thread)
and the real gateway binary in front of them with `-inference-backends A,B` and the cell's
`-inference-routing`. `--concurrency` client threads (one HTTP/1.1 keep-alive connection each)
send `POST /v1/generate` back to back, each for an adapter drawn uniformly at random (seeded),
`--new-tokens` greedy tokens: first a warm-up of `--warmup` seconds (not counted), then
`--duration` seconds measured.

Per cell: the adapter cache hit rate over both replicas (`llmops_inference_adapter_cache_hits`
and `_misses` from their /metrics, the measured period only), evictions, where each adapter is
attached at the end (ListServedModels of each replica), p50/p99 latency and requests/s. Cells
alternate affinity / round-robin per repeat; the table gives medians over `--repeats` and
affinity / round-robin ratios of the same run. Greedy answers are compared: every answer for an
adapter must be the same text in both modes and on both replicas. Exit status 1 if a request
fails or answers differ.

    .venv/bin/python bench/routing.py --quick   # smoke run: 2 s cells, 1 repeat
    .venv/bin/python bench/routing.py [--adapters 6] [--max-adapters 3] [--concurrency 4] \
        [--duration 20] [--warmup 5] [--repeats 3] [--new-tokens 8] [--model-dir DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit
from urllib.request import urlopen

import grpc

from llmops.v1 import inference_service_pb2 as ipb
from llmops.v1 import inference_service_pb2_grpc, registry_service_pb2_grpc
from llmops.v1 import registry_service_pb2 as rpb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/NAME.py`
from bench._common import BenchError, fail, log, percentile, stop

REPO = Path(__file__).resolve().parents[1]
GATEWAY = REPO / ".bin" / "llmops-gateway"
PROMPT = "The cat sat on the mat. Summarize:"
MODES = ("affinity", "round-robin")
PEFT_NOTICE = "`is_gradient_checkpointing` is deprecated"
MAX_RETRIES = 20  # refusals (429) of one request before it counts as failed


@dataclass
class Cell:
    """One mode, one repeat: latencies (s), wall time, cache counters, where adapters ended."""

    mode: str
    latencies: list[float]
    seconds: float
    hits: float
    misses: float
    evictions: float
    refusals: int  # 429s (every adapter slot busy), retried and counted in the latency
    placement: dict[str, list[int]]  # adapter name -> replicas that have it attached
    failures: list[str] = field(default_factory=list)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else float("nan")

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds


# Models and processes


def build_models(model_dir: Path, adapters_dir: Path, count: int) -> list[Path]:
    """The tiny base (unless `model_dir` holds one) and `count` random LoRA adapters on it."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmops_workers.tiny import build_tiny_model

    transformers.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    torch.set_num_threads(1)
    if not (model_dir / "config.json").exists():
        log(f"building the tiny model in {model_dir}")
        build_tiny_model(model_dir, pretrain_steps=0, threads=1)
    paths = []
    for seed in range(1, count + 1):
        path = adapters_dir / f"adapter-{seed}"
        base = AutoModelForCausalLM.from_pretrained(str(model_dir))
        torch.manual_seed(seed)
        config = LoraConfig(
            r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", PEFT_NOTICE, FutureWarning)
            get_peft_model(base, config).save_pretrained(str(path))
        paths.append(path)
    return paths


def register(address: str, model_dir: Path, adapters: list[Path]) -> list[str]:
    """Registers the base as `bench-tiny` and the adapters as `bench-adapter-N`; their names."""
    names = []
    with grpc.insecure_channel(address) as channel:
        registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
        base = registry.CreateModel(
            rpb.CreateModelRequest(
                model=rpb.Model(name="bench-tiny", kind=rpb.MODEL_KIND_BASE, uri=str(model_dir))
            ),
            timeout=60,
        )
        for i, path in enumerate(adapters, start=1):
            name = f"bench-adapter-{i}"
            model = rpb.Model(
                name=name,
                kind=rpb.MODEL_KIND_ADAPTER,
                uri=str(path),
                origin=rpb.ModelOrigin(base_model=base.id),
            )
            registry.CreateModel(rpb.CreateModelRequest(model=model), timeout=60)
            names.append(name)
    return names


def read_lines(
    process: subprocess.Popen[str], prefixes: Sequence[str], timeout: float
) -> list[str]:
    """The first stdout line of `process` containing each prefix, in order, within `timeout`.
    A thread reads stdout to its end, so the process never blocks on a full pipe."""
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()

    def pump(stream: IO[str]) -> None:
        for line in stream:
            lines.put(line)
        lines.put("")  # end of output

    threading.Thread(target=pump, args=(process.stdout,), daemon=True).start()
    deadline = time.monotonic() + timeout
    found: list[str] = []
    while len(found) < len(prefixes):
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.001))
        except queue.Empty:
            fail(f"it printed no {prefixes[len(found)].strip()!r} line within {timeout:.0f} s")
        if not line:
            fail(f"it exited ({process.wait()}) before printing {prefixes[len(found)]!r}")
        if prefixes[len(found)] in line:
            found.append(line)
    return found


def spawn(
    stack: ExitStack, name: str, command: list[str], env: dict[str, str], workdir: Path
) -> subprocess.Popen[str]:
    """Starts `command` in its own session, stderr to workdir/NAME.log; stopped when `stack`
    closes."""
    with (workdir / f"{name}.log").open("a") as stderr:
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
    stack.callback(stop, process, close_stdout=False)  # the reader thread owns stdout
    return process


def listening(
    process: subprocess.Popen[str],
    name: str,
    prefixes: Sequence[str],
    workdir: Path,
    timeout: float,
) -> list[str]:
    """The lines with `prefixes` that a spawned process prints once it listens."""
    try:
        return read_lines(process, prefixes, timeout)
    except BenchError as exc:
        tail = (workdir / f"{name}.log").read_text()[-2000:]
        fail(f"the {name} did not start: {exc}\nlast lines of its stderr:\n{tail}")


@dataclass
class Replica:
    address: str
    metrics_url: str


def start_replicas(
    stack: ExitStack, env: dict[str, str], workdir: Path, timeout: float
) -> list[Replica]:
    """Two platform servers on the shared data dir, started together."""
    command = [sys.executable, "bench/platform_server.py"]
    names = ("replica-0", "replica-1")
    processes = [spawn(stack, name, command, env, workdir) for name in names]
    replicas = []
    for name, process in zip(names, processes, strict=True):
        grpc_line, metrics_line = listening(process, name, ("gRPC ", "metrics "), workdir, timeout)
        replicas.append(Replica(grpc_line.split()[1], metrics_line.split()[1]))
    return replicas


# Measuring


def cache_counters(replicas: Sequence[Replica]) -> dict[str, float]:
    """Adapter cache hits, misses and evictions summed over the replicas."""
    totals = {"hits": 0.0, "misses": 0.0, "evictions": 0.0}
    for replica in replicas:
        with urlopen(replica.metrics_url, timeout=10) as answer:
            text = answer.read().decode()
        for line in text.splitlines():
            for name in totals:
                if line.startswith(f"llmops_inference_adapter_cache_{name}_total "):
                    totals[name] += float(line.split()[1])
    return totals


def placement(replicas: Sequence[Replica], names: Sequence[str]) -> dict[str, list[int]]:
    """Which replicas have each adapter attached, by ListServedModels (ids mapped to names)."""
    ids: dict[str, str] = {}
    with grpc.insecure_channel(replicas[0].address) as channel:
        registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
        for name in names:
            ids[registry.GetModel(rpb.GetModelRequest(model=name), timeout=30).id] = name
    where: dict[str, list[int]] = {name: [] for name in names}
    for i, replica in enumerate(replicas):
        with grpc.insecure_channel(replica.address) as channel:
            stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
            served = stub.ListServedModels(ipb.ListServedModelsRequest(), timeout=30)
        for base in served.models:
            for adapter in base.adapters:
                if adapter.model in ids:
                    where[ids[adapter.model]].append(i)
    return where


class Client:
    """One keep-alive connection to the gateway and its own seeded choice of adapters."""

    def __init__(self, url: str, names: Sequence[str], new_tokens: int, seed: int) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port, timeout=120
        )
        self.names = names
        self.new_tokens = new_tokens
        self.random = random.Random(seed)

    def call(self, answers: dict[str, set[str]]) -> int:
        """One generation for a random adapter; returns how many times it was refused (429:
        every adapter slot of the replica busy), each retried after its Retry-After as an
        OpenAI SDK would."""
        name = self.random.choice(self.names)
        body = json.dumps(
            {
                "model": name,
                "prompt": PROMPT,
                "sampling": {"max_new_tokens": self.new_tokens, "temperature": 0},
            }
        )
        for refused in range(MAX_RETRIES + 1):
            self.connection.request(
                "POST", "/v1/generate", body, {"Content-Type": "application/json"}
            )
            response = self.connection.getresponse()
            data = response.read()
            if response.status == 429 and refused < MAX_RETRIES:
                time.sleep(float(response.getheader("Retry-After") or 1))
                continue
            if response.status != 200:
                raise BenchError(f"{name}: HTTP {response.status} {data[:300]!r}")
            answers.setdefault(name, set()).add(json.loads(data)["text"])
            return refused
        raise AssertionError("not reached")

    def close(self) -> None:
        self.connection.close()


@dataclass
class Drive:
    latencies: list[float]
    seconds: float
    refusals: int
    failures: list[str]


def drive(clients: Sequence[Client], seconds: float, answers: dict[str, set[str]]) -> Drive:
    """Each client on its own thread, back to back, for `seconds`."""
    latencies: list[list[float]] = [[] for _ in clients]
    refusals = [0 for _ in clients]
    failures: list[str] = []
    barrier = threading.Barrier(len(clients) + 1)
    deadline = 0.0

    def worker(index: int) -> None:
        barrier.wait()
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            try:
                refusals[index] += clients[index].call(answers)
            except (BenchError, OSError, http.client.HTTPException) as exc:
                failures.append(f"{type(exc).__name__}: {exc}"[:500])
                return
            latencies[index].append(time.perf_counter() - began)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    start = time.perf_counter()
    deadline = start + seconds
    barrier.wait()
    for thread in threads:
        thread.join(300)
    elapsed = time.perf_counter() - start
    return Drive([x for mine in latencies for x in mine], elapsed, sum(refusals), failures)


def run_cell(
    mode: str,
    repeat: int,
    args: argparse.Namespace,
    env: dict[str, str],
    workdir: Path,
    names: Sequence[str],
    answers: dict[str, set[str]],
) -> Cell:
    """Fresh replicas and a gateway in `mode`; warm-up, then the measured period."""
    with ExitStack() as stack:
        replicas = start_replicas(stack, env, workdir, args.startup_timeout)
        backends = ",".join(r.address for r in replicas)
        command = [
            str(args.gateway),
            "-backend", replicas[0].address,
            "-listen", "127.0.0.1:0",
            "-inference-backends", backends,
            "-inference-routing", mode,
        ]  # fmt: skip
        gateway = spawn(stack, "gateway", command, env, workdir)
        (line,) = listening(gateway, "gateway", ("listening on ",), workdir, 30)
        url = line.split("listening on ", 1)[1].split()[0]
        clients = [
            Client(url, names, args.new_tokens, seed=1000 * repeat + i)
            for i in range(args.concurrency)
        ]
        try:
            warm = drive(clients, args.warmup, answers)
            if warm.failures:
                fail(f"{mode}: the warm-up failed: {warm.failures[0]}")
            before = cache_counters(replicas)
            measured = drive(clients, args.duration, answers)
            after = cache_counters(replicas)
        finally:
            for client in clients:
                client.close()
        where = placement(replicas, names)
    return Cell(
        mode=mode,
        latencies=measured.latencies,
        seconds=measured.seconds,
        refusals=measured.refusals,
        hits=after["hits"] - before["hits"],
        misses=after["misses"] - before["misses"],
        evictions=after["evictions"] - before["evictions"],
        placement=where,
        failures=measured.failures,
    )


# Report


def metric(cell: Cell, key: str) -> float:
    """One figure of a cell, by the key the table names it with."""
    if key == "hit_rate":
        return cell.hit_rate
    if key in ("p50_ms", "p99_ms"):
        return percentile(cell.latencies, float(key[1:3])) * 1000
    if key == "rps":
        return cell.rps
    if key == "evictions_per_s":
        return cell.evictions / cell.seconds
    if key == "refused_share":
        return cell.refusals / max(len(cell.latencies), 1)
    raise KeyError(key)


def median_of(cells: Sequence[Cell], key: str) -> float:
    return statistics.median(metric(c, key) for c in cells)


def table(cells: dict[str, list[Cell]]) -> str:
    metrics = (
        ("adapter cache hit rate", "hit_rate", "{:.1%}"),
        ("evictions / s", "evictions_per_s", "{:.2f}"),
        ("429 refusals per request", "refused_share", "{:.3f}"),
        ("p50 latency ms", "p50_ms", "{:.1f}"),
        ("p99 latency ms", "p99_ms", "{:.1f}"),
        ("throughput req/s", "rps", "{:.1f}"),
    )
    lines = [
        "| metric | affinity | round-robin | affinity / round-robin |",
        "|---|---:|---:|---:|",
    ]
    for label, key, fmt in metrics:
        a, r = median_of(cells["affinity"], key), median_of(cells["round-robin"], key)
        ratio = f"{a / r:.2f}" if r else "n/a"
        lines.append(f"| {label} | {fmt.format(a)} | {fmt.format(r)} | {ratio} |")
    requests = {m: sum(len(c.latencies) for c in cs) for m, cs in cells.items()}
    lines.append(
        f"| requests measured | {requests['affinity']:,} | {requests['round-robin']:,} | |"
    )
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--adapters", type=int, default=6, help="adapters in the mix (6)")
    parser.add_argument(
        "--max-adapters", type=int, default=3, help="adapter budget per replica (3)"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="client threads (4)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured s per cell (20)")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured s per cell (5)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=8, help="greedy tokens (8)")
    parser.add_argument("--model-dir", type=Path, default=None, help="a tiny model to reuse")
    parser.add_argument("--gateway", type=Path, default=GATEWAY, help="the gateway binary")
    parser.add_argument("--json", metavar="OUT", default="", help="write the cells here")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s cells, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.repeats = 2.0, 1.0, 1
    if args.adapters < 2 or args.max_adapters < 1 or args.concurrency < 1 or args.repeats < 1:
        parser.error("--adapters >= 2, --max-adapters, --concurrency and --repeats >= 1")
    if args.duration <= 0 or args.warmup < 0 or args.new_tokens < 1:
        parser.error("--duration must be positive, --warmup not negative, --new-tokens >= 1")
    if not os.access(args.gateway, os.X_OK):
        parser.error(f"{args.gateway} is not executable: build it with `make gateway`")
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    began = time.monotonic()
    load_before = os.getloadavg()
    cells: dict[str, list[Cell]] = {mode: [] for mode in MODES}
    answers: dict[str, set[str]] = {}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-routing-")))
        (workdir / "data").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
        env |= {
            "PYTHONUNBUFFERED": "1",
            "LLMOPS_DATA_DIR": str(workdir / "data"),
            "LLMOPS_GRPC_PORT": "0",
            "LLMOPS_METRICS_PORT": "0",
            "LLMOPS_LOG_LEVEL": "WARNING",
            "LLMOPS_INFERENCE_DEVICE": "cpu",
            "LLMOPS_INFERENCE_THREADS": "1",
            "LLMOPS_INFERENCE_MAX_ADAPTERS": str(args.max_adapters),
        }
        model_dir = args.model_dir or workdir / "model"
        adapters = build_models(model_dir, workdir, args.adapters)
        with ExitStack() as first:  # registers once; every cell's replicas share the registry
            command = [sys.executable, "bench/platform_server.py"]
            registrar = spawn(first, "registrar", command, env, workdir)
            (line,) = listening(registrar, "registrar", ("gRPC ",), workdir, args.startup_timeout)
            names = register(line.split()[1], model_dir, adapters)
        for repeat in range(args.repeats):
            order = MODES if repeat % 2 == 0 else MODES[::-1]
            for mode in order:
                cell = run_cell(mode, repeat, args, env, workdir, names, answers)
                cells[mode].append(cell)
                log(
                    f"[{repeat + 1}/{args.repeats}] {mode}: hit rate {cell.hit_rate:.1%}, "
                    f"{cell.rps:.1f} req/s, p50 {percentile(cell.latencies, 50) * 1000:.1f} ms, "
                    f"placement {cell.placement}"
                    + (f", {len(cell.failures)} failed" if cell.failures else "")
                )

    failures = [f"{c.mode}: {f}" for cs in cells.values() for c in cs for f in c.failures]
    differing = {name: texts for name, texts in answers.items() if len(texts) != 1}
    print(
        f"Generation through the gateway over 2 Inference replicas: {args.adapters} adapters "
        f"drawn uniformly, an adapter budget of {args.max_adapters} per replica "
        f"(LLMOPS_INFERENCE_MAX_ADAPTERS), {args.concurrency} clients, {args.new_tokens} greedy "
        f"tokens, tiny model, 1 torch thread per replica; fresh replicas per cell, "
        f"{args.warmup:g} s warm-up + {args.duration:g} s measured, medians of {args.repeats} "
        f"alternating repeats; {os.cpu_count()} cores, load average {load_before[0]:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after; {time.monotonic() - began:.0f} s in all\n"
    )
    print(table(cells))
    print("\nWhere the adapters were attached at the end of each cell (replica indexes):")
    for mode, mode_cells in cells.items():
        for i, cell in enumerate(mode_cells, start=1):
            shown = ", ".join(f"{n.rsplit('-', 1)[1]}:{r}" for n, r in cell.placement.items())
            print(f"- {mode} #{i}: {shown}")
    print(f"\n- request failures: {'none' if not failures else len(failures)}")
    print(
        f"- greedy answers: {'one per adapter, in both modes' if not differing else 'DIFFER'}"
        f" ({len(answers)} adapters answered)"
    )
    for message in failures[:10]:
        log(f"failed: {message}")
    for name, texts in differing.items():
        log(f"{name} answered {len(texts)} different texts")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "cells": {m: [asdict(c) for c in cs] for m, cs in cells.items()},
                },
                indent=2,
            )
            + "\n"
        )
    return 1 if failures or differing else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
