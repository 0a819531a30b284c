"""Load: many jobs and many streams at once, against the real platform, checking that nothing is
lost, nothing runs twice, no slot leaks and the services keep answering.

Part `jobs`: `llmops up --workers W` (the services, a private Redis, W real workers) with the tiny
model. C clients create N training jobs (one step each) with idempotency keys, every key sent
twice, by two different clients at about the same time; meanwhile P pollers (a Get and a List
each second) and V watchers (a WatchTrainingJob stream per job, job after job) run, and a prober
calls `grpc.health.v1.Health/Check` every 50 ms. It ends when every job has ended. Checked: every
key gave one job, the job list holds exactly those N, every job SUCCEEDED with one model, every
watched stream ended on its job's end; reported: health latency (target: every check within
100 ms), job throughput, calls made.

Part `inference`: the platform server (`bench/platform_server.py`) with the tiny base and four
LoRA adapters. S concurrent streams for D seconds over the base and the adapters, each with up to
64 new tokens, a fifth of them cancelled by the client after their first piece. Checked: after the
run the engine holds no running or queued request (no leaked slot); reported: stream latency p50
and p99, time to first token, the server's RSS at the start, the end and its growth, answers and
cancels.

    .venv/bin/python bench/load.py                 # both parts, the issue's sizes (~8 min)
    .venv/bin/python bench/load.py --quick          # both parts, small (~1 min): a smoke run
    .venv/bin/python bench/load.py --part jobs --jobs 200 --clients 20 --pollers 25 --watchers 25

Exit status 1 when a check fails (a job lost or duplicated, a stream that failed, a leaked slot);
timings are reported against their targets, never a reason to fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import llmops
from llmops.v1 import inference_service_pb2 as ipb
from llmops.v1 import inference_service_pb2_grpc, jobs_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/NAME.py`
from bench._common import percentile, read_line, stop
from bench.inference import ADAPTERS, build_models, register, start_servers

REPO = Path(__file__).resolve().parents[1]

HEALTH_TARGET_MS = 100.0
CANCEL_SHARE = 0.2
PROMPTS = [
    "Summarize: the river rose after a week of rain and the town moved its market uphill.",
    "Classify the topic.\nText: The match ended in a draw after extra time.\nTopic:",
    "Extract the person's full name.\nText: Ada Lovelace lives in London.\nName:",
    "Once upon a time",
]
TERMINAL = {jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELLED}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Prober(threading.Thread):
    """Health checks every 50 ms on a channel of their own; their latencies in ms."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.latencies: list[float] = []
        self.failures = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while not self.stopping.is_set():
                started = time.perf_counter()
                try:
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                    self.latencies.append((time.perf_counter() - started) * 1000)
                except grpc.RpcError:
                    self.failures += 1
                self.stopping.wait(0.05)


@dataclass
class JobsResult:
    jobs: int
    clients: int
    pollers: int
    watchers: int
    workers: int
    seconds: float
    keys_with_one_job: int
    listed: int
    succeeded: int
    models: int
    watched: int
    watched_to_end: int
    polls: int
    poll_errors: int
    create_errors: list[str]
    health_checks: int
    health_failures: int
    health_p50_ms: float
    health_p99_ms: float
    health_max_ms: float
    problems: list[str] = field(default_factory=list)


def run_jobs(args: argparse.Namespace, workdir: Path) -> JobsResult:
    """The jobs part: see the module's docstring."""
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir = workdir.parent / "models" / "tiny"
    build_models(model_dir, workdir.parent / "models" / "adapters", pretrain_steps=2, threads=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    env |= {"PYTHONUNBUFFERED": "1", "LLMOPS_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "llmops", "up", "--grpc-port", "0", "--http-port", "-1"]
    command += ["--metrics-port", "-1", "--workers", str(args.workers), "--threads", "1"]
    command += ["--data-dir", str(workdir / "data")]
    with (workdir / "up.log").open("w") as stderr:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
    try:
        address = read_line(process, "gRPC", 120).split()[1]
        return _drive_jobs(args, address, model_dir)
    finally:
        stop(process)


def _drive_jobs(args: argparse.Namespace, address: str, model_dir: Path) -> JobsResult:
    with llmops.Client(address, timeout=60) as client:
        client.models.create("load-tiny", str(model_dir))
    keys = [f"load-{n:04d}" for n in range(args.jobs)]
    ids_by_key: dict[str, set[str]] = {key: set() for key in keys}
    create_errors: list[str] = []
    known: list[str] = []
    lock = threading.Lock()
    stopping = threading.Event()
    params = {"max_steps": 1, "per_device_train_batch_size": 2, "max_length": 32, "lora_r": 4}

    def creator(index: int) -> None:
        # client i sends keys i, i+C, ... and, a moment later, the keys of client i-1 again
        mine = keys[index :: args.clients] + keys[(index - 1) % args.clients :: args.clients]
        with llmops.Client(address, timeout=60) as own:
            for key in mine:
                try:
                    job = own.training.create(
                        "sft", "load-tiny", "demo-sft", hyperparameters=params, idempotency_key=key
                    )
                except llmops.LlmopsError as error:
                    create_errors.append(f"{key}: {error}")
                    continue
                with lock:
                    if not ids_by_key[key]:
                        known.append(job.id)
                    ids_by_key[key].add(job.id)

    polls = [0, 0]

    def poller() -> None:
        with llmops.Client(address, timeout=60) as own:
            while not stopping.is_set():
                try:
                    if known:
                        own.training.get(random.choice(known))
                    next(iter(own.training.list(page_size=20)), None)  # the first page
                    polls[0] += 1
                except llmops.LlmopsError:
                    polls[1] += 1
                stopping.wait(args.poll_interval)

    watched: list[tuple[str, bool]] = []
    next_watch = [0]

    def watcher() -> None:
        with llmops.Client(address, timeout=600) as own:
            while not stopping.is_set():
                with lock:
                    if next_watch[0] >= len(known):
                        job_id = ""
                    else:
                        job_id = known[next_watch[0]]
                        next_watch[0] += 1
                if not job_id:
                    stopping.wait(0.1)
                    continue
                events = list(own.training.watch(job_id))
                ended = bool(events) and events[-1].state in TERMINAL
                watched.append((job_id, ended))

    prober = Prober(address)
    prober.start()
    started = time.monotonic()
    creators = [threading.Thread(target=creator, args=(i,)) for i in range(args.clients)]
    others = [threading.Thread(target=poller, daemon=True) for _ in range(args.pollers)]
    others += [threading.Thread(target=watcher, daemon=True) for _ in range(args.watchers)]
    for thread in creators + others:
        thread.start()
    for thread in creators:
        thread.join()
    log(f"jobs: {len(known)} created in {time.monotonic() - started:.1f} s; waiting for them")
    with llmops.Client(address, timeout=60) as client:
        deadline = time.monotonic() + args.jobs_timeout
        while time.monotonic() < deadline:
            states = [client.training.get(job_id).state for job_id in list(known)]
            if all(state in TERMINAL for state in states):
                break
            time.sleep(1)
        seconds = time.monotonic() - started
        stopping.set()
        prober.stopping.set()
        for thread in others:
            thread.join(30)
        prober.join()
        jobs = list(client.training.list())
        final = [client.training.get(job_id).state for job_id in known]
        models = [m for m in client.models.list(kind="adapter") if m.origin.training_job]
    latencies = prober.latencies or [0.0]
    result = JobsResult(
        jobs=args.jobs,
        clients=args.clients,
        pollers=args.pollers,
        watchers=args.watchers,
        workers=args.workers,
        seconds=round(seconds, 1),
        keys_with_one_job=sum(len(ids) == 1 for ids in ids_by_key.values()),
        listed=len(jobs),
        succeeded=sum(state == jobs_pb2.JOB_STATE_SUCCEEDED for state in final),
        models=len(models),
        watched=len(watched),
        watched_to_end=sum(ended for _, ended in watched),
        polls=polls[0],
        poll_errors=polls[1],
        create_errors=create_errors[:5],
        health_checks=len(prober.latencies),
        health_failures=prober.failures,
        health_p50_ms=round(statistics.median(latencies), 2),
        health_p99_ms=round(percentile(latencies, 99), 2),
        health_max_ms=round(max(latencies), 2),
    )
    if result.keys_with_one_job != args.jobs:
        result.problems.append(f"{args.jobs - result.keys_with_one_job} keys without one job")
    if {j.id for j in jobs} != set(known) or result.listed != args.jobs:
        result.problems.append(f"the job list holds {result.listed} jobs, not {args.jobs}")
    if result.succeeded != args.jobs:
        result.problems.append(f"{args.jobs - result.succeeded} jobs did not succeed")
    if sorted(m.origin.training_job for m in models) != sorted(known):
        result.problems.append("not one model per job")
    if result.watched_to_end != result.watched:
        result.problems.append("a watch stream stopped before its job ended")
    if create_errors:
        result.problems.append(f"{len(create_errors)} creates failed")
    return result


@dataclass
class InferenceResult:
    streams: int
    seconds: float
    answers: int
    cancelled: int
    failed: int
    errors: list[str]
    latency_p50_ms: float
    latency_p99_ms: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    tokens: int
    rss_start_mb: float
    rss_end_mb: float
    rss_growth_mb: float
    running_after: int
    queued_after: int
    problems: list[str] = field(default_factory=list)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _stream_forever(
    stub: Any, models: list[str], until: float, rng: random.Random, out: dict[str, Any]
) -> None:
    while time.monotonic() < until:
        model = rng.choice(models)
        cancel = rng.random() < CANCEL_SHARE
        request = ipb.StreamGenerateRequest(
            request=ipb.GenerateRequest(
                model=model,
                prompt=rng.choice(PROMPTS),
                sampling=ipb.SamplingParams(max_new_tokens=rng.randint(8, 64)),
            )
        )
        sent = time.perf_counter()
        call = stub.StreamGenerate(request, timeout=120)
        first: float | None = None
        try:
            async for piece in call:
                if first is None:
                    first = time.perf_counter() - sent
                    if cancel:
                        call.cancel()
                        break
                if piece.usage.completion_tokens:
                    out["tokens"] += piece.usage.completion_tokens
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED or not cancel:
                out["failed"] += 1
                out["errors"].append(f"{error.code().name}: {error.details()}")
            continue
        if cancel:
            out["cancelled"] += 1
        else:
            out["latencies"].append((time.perf_counter() - sent) * 1000)
            out["ttfts"].append((first or 0.0) * 1000)
            out["answers"] += 1


async def _drive_streams(
    address: str, models: list[str], streams: int, seconds: float
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "latencies": [],
        "ttfts": [],
        "answers": 0,
        "cancelled": 0,
        "failed": 0,
        "errors": [],
        "tokens": 0,
    }
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
        until = time.monotonic() + seconds
        rngs = [random.Random(seed) for seed in range(streams)]
        await asyncio.gather(*(_stream_forever(stub, models, until, r, out) for r in rngs))
    return out


def run_inference(args: argparse.Namespace, workdir: Path) -> InferenceResult:
    """The inference part: see the module's docstring."""
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir, adapters_dir = (
        workdir.parent / "models" / "tiny",
        workdir.parent / "models" / "adapters",
    )
    build_models(model_dir, adapters_dir, pretrain_steps=2, threads=2)
    settings = {"LLMOPS_INFERENCE_THREADS": "1", "LLMOPS_INFERENCE_MAX_QUEUED": "256"}
    with start_servers({"load": settings}, workdir, None, 120) as servers:
        server = servers["load"]
        register(server, model_dir, adapters_dir)
        models = [server.base_id, *server.adapter_ids]
        with grpc.insecure_channel(server.address) as channel:  # warm: load every model once
            stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
            for model in models:
                request = ipb.GenerateRequest(model=model, prompt="Hi")
                stub.Generate(request, timeout=120)
        pid = server.process.pid
        start_rss = rss_mb(pid)
        log(f"inference: {args.streams} streams for {args.seconds:g} s over {len(models)} models")
        out = asyncio.run(_drive_streams(server.address, models, args.streams, args.seconds))
        end_rss = rss_mb(pid)
        running = queued = -1
        with grpc.insecure_channel(server.address) as channel:
            stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                served = stub.ListServedModels(ipb.ListServedModelsRequest(), timeout=10)
                running = sum(base.running_requests for base in served.models)
                queued = sum(base.queued_requests for base in served.models)
                if running == queued == 0:
                    break
                time.sleep(0.2)
    latencies, ttfts = out["latencies"] or [0.0], out["ttfts"] or [0.0]
    result = InferenceResult(
        streams=args.streams,
        seconds=args.seconds,
        answers=out["answers"],
        cancelled=out["cancelled"],
        failed=out["failed"],
        errors=out["errors"][:5],
        latency_p50_ms=round(statistics.median(latencies), 1),
        latency_p99_ms=round(percentile(latencies, 99), 1),
        ttft_p50_ms=round(statistics.median(ttfts), 1),
        ttft_p99_ms=round(percentile(ttfts, 99), 1),
        tokens=out["tokens"],
        rss_start_mb=round(start_rss, 1),
        rss_end_mb=round(end_rss, 1),
        rss_growth_mb=round(end_rss - start_rss, 1),
        running_after=running,
        queued_after=queued,
    )
    if result.failed:
        result.problems.append(f"{result.failed} streams failed: {result.errors}")
    if running or queued:
        result.problems.append(f"slots leaked: {running} running, {queued} queued after the run")
    if not result.answers or not result.cancelled:
        result.problems.append("the run had no answers or no cancels")
    return result


def report(jobs: JobsResult | None, inference: InferenceResult | None) -> str:
    lines = []
    if jobs is not None:
        lines += [
            f"Jobs: {jobs.jobs} training jobs (one step) from {jobs.clients} clients, every key "
            f"sent twice; {jobs.pollers} pollers, {jobs.watchers} watchers, {jobs.workers} "
            f"workers; {jobs.seconds} s",
            "",
            "| keys with one job | jobs listed | succeeded | models | watched to the end | "
            "polls (errors) | health checks (failed) | health p50 / p99 / max ms |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {jobs.keys_with_one_job} / {jobs.jobs} | {jobs.listed} | {jobs.succeeded} | "
            f"{jobs.models} | {jobs.watched_to_end} / {jobs.watched} | {jobs.polls} "
            f"({jobs.poll_errors}) | {jobs.health_checks} ({jobs.health_failures}) | "
            f"{jobs.health_p50_ms} / {jobs.health_p99_ms} / {jobs.health_max_ms} |",
            "",
        ]
    if inference is not None:
        lines += [
            f"Inference: {inference.streams} concurrent streams for {inference.seconds:g} s over "
            f"the base and {len(ADAPTERS)} adapters, {CANCEL_SHARE:.0%} cancelled by the client",
            "",
            "| answers | cancelled | failed | tokens | latency p50 / p99 ms | TTFT p50 / p99 ms | "
            "RSS start / end / growth MB | running, queued after |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {inference.answers} | {inference.cancelled} | {inference.failed} | "
            f"{inference.tokens} | {inference.latency_p50_ms} / {inference.latency_p99_ms} | "
            f"{inference.ttft_p50_ms} / {inference.ttft_p99_ms} | {inference.rss_start_mb} / "
            f"{inference.rss_end_mb} / {inference.rss_growth_mb:+} | {inference.running_after}, "
            f"{inference.queued_after} |",
            "",
        ]
    lines.append("Targets:")
    if jobs is not None:
        verdict = "pass" if jobs.health_max_ms <= HEALTH_TARGET_MS else "missed"
        lines.append(
            f"- health answered within {HEALTH_TARGET_MS:g} ms throughout: max "
            f"{jobs.health_max_ms} ms: {verdict}"
        )
    problems = (jobs.problems if jobs else []) + (inference.problems if inference else [])
    lines.append("- checks: " + ("all held" if not problems else "; ".join(problems)))
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--part", choices=["jobs", "inference", "all"], default="all")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--pollers", type=int, default=25)
    parser.add_argument("--watchers", type=int, default=25)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--poll-interval", type=float, default=1.0, help="seconds between a poller's Get+List"
    )
    parser.add_argument("--jobs-timeout", type=float, default=1800)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.clients, args.pollers, args.watchers, args.workers = 8, 4, 4, 2, 1
        args.streams, args.seconds = 8, 5.0
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    jobs = inference = None
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        workdir = Path(tmp)
        if args.part in ("jobs", "all"):
            jobs = run_jobs(args, workdir / "jobs")
        if args.part in ("inference", "all"):
            inference = run_inference(args, workdir / "inference")
    print(report(jobs, inference))
    if args.json is not None:
        figures = {"jobs": asdict(jobs) if jobs else None}
        figures["inference"] = asdict(inference) if inference else None
        args.json.write_text(json.dumps(figures, indent=2))
    problems = (jobs.problems if jobs else []) + (inference.problems if inference else [])
    return 1 if problems else 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main(sys.argv[1:]))
