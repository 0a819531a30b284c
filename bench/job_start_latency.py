"""Benchmark: how long a training job takes from CreateTrainingJob to RUNNING on an idle worker.

Starts a real stack (`python -m llmops up --workers 1`: gRPC server, its private redis-server and
one `llmops worker`) in a fresh data dir, builds and registers a tiny model, then runs `--jobs`
SFT jobs on `demo-sft` one after another. Before each job the worker is idle: the previous job has
ended and arq has recorded its result. For each job it measures

- client-side: from sending CreateTrainingJob to the moment a WatchTrainingJob stream (opened as
  soon as the create returns) delivers the RUNNING state change: what a client sees, the
  observation delay included (the watch is woken by the Redis announcement of the new event,
  and reads the event log every `LLMOPS_WATCH_POLL_SECONDS` in any case);
- server-side: from the job's QUEUED event to its RUNNING event (the timestamps the server and
  the worker write into the event log), the platform's own start latency;
- where that time goes: the create call, QUEUED event -> arq enqueue -> arq start -> RUNNING
  event (arq records its enqueue and start times in the job's result, to the millisecond), and
  RUNNING event -> seen on the watch.

As soon as a job is seen RUNNING it is cancelled (`--no-cancel` lets it run its one step); the
benchmark then follows the job to its end (CANCELLED, or SUCCEEDED when the worker finished the
step before it noticed the cancel) and waits until arq has the worker free again, and reports
how long that took. Each sample starts after a random 0-2x`poll_delay` pause, so that it reaches
the worker's poll loop at a random phase (back to back, each would wait a whole `poll_delay`).

A baseline runs in the same stack, interleaved with the jobs: a bare arq worker process (this
script with a hidden `--arq-worker` argument) with the training worker's arq settings
(`poll_delay`, `max_jobs`, ...) on its own queue of the same Redis, sent a no-op job:
enqueue_job -> the function starts. The difference is what the platform adds to arq.

    .venv/bin/python bench/job_start_latency.py [--jobs 50] [--json OUT] [--watch-poll SECONDS]

Prints the percentiles (p50/p90/p99/max, linear interpolation) as a markdown table and a verdict
against the 100 ms p50 target (`--check` exits 1 when the client-side or server-side p50 misses
it). LLMOPS_* variables of the calling shell are not passed to the stack; `--watch-poll` sets the
stack's LLMOPS_WATCH_POLL_SECONDS. The stack runs the code that `import llmops_services` finds
(this checkout, or PYTHONPATH), noted in the header with its git state. A job takes 15-30 s on
2 CPU cores (the worker's training child starts torch, cancelled or not), so 50 jobs take
15-25 minutes; other load on the machine shows in the tails (the header gives the load average).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import queue
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

import arq
import grpc
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import Job, JobStatus
from arq.worker import Worker

import llmops
from llmops.v1 import jobs_pb2
from llmops_services.jobs.queue import JOB_QUEUE, arq_job_id
from llmops_services.settings import Settings
from llmops_workers.worker import worker_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/NAME.py`
from bench._common import BenchError, fail, log

REPO = Path(__file__).resolve().parents[1]
BASELINE_QUEUE = "bench:noop"
HEALTH_SUFFIX = ":health-check"
MODEL_NAME = "bench-tiny"
DATASET = "demo-sft"
HYPERPARAMETERS: dict[str, object] = {
    "max_steps": 1,
    "per_device_train_batch_size": 1,
    "max_length": 32,
    "logging_steps": 1,
}
BUILD_TINY = (
    "import sys; from pathlib import Path; from llmops_workers.tiny import build_tiny_model; "
    "build_tiny_model(Path(sys.argv[1]), pretrain_steps=2)"
)


RUNNING = jobs_pb2.JOB_STATE_RUNNING
TERMINAL = (jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELLED)
STATE_CHANGED = jobs_pb2.JOB_EVENT_TYPE_STATE_CHANGED


# --- the baseline: a bare arq worker ------------------------------------------------------------


def platform_worker_options() -> dict[str, Any]:
    """The arq options of the platform's training worker, which the baseline worker copies."""
    settings_class = worker_settings(
        Settings.model_validate({"redis_url": "redis://127.0.0.1:6379/0"})
    )
    names = ("poll_delay", "max_jobs", "max_tries", "job_timeout", "keep_result")
    return {name: getattr(settings_class, name) for name in names}


async def noop(ctx: dict[str, Any]) -> float:
    """The baseline's job: returns the wall-clock time at which it started."""
    return time.time()


def run_baseline_worker(redis_url: str) -> None:
    """Runs a bare arq worker on BASELINE_QUEUE until SIGTERM (the `--arq-worker` mode)."""
    worker = Worker(
        functions=[noop],
        redis_settings=RedisSettings.from_dsn(redis_url),
        queue_name=BASELINE_QUEUE,
        handle_signals=True,
        **platform_worker_options(),
    )
    worker.run()


# --- the stack ----------------------------------------------------------------------------------


@dataclass
class Stack:
    """A running `llmops up` with its private Redis and one worker."""

    process: subprocess.Popen[str]
    address: str
    redis_url: str
    log_path: Path


class StdoutLines:
    """A child's stdout, read by a thread: each line goes to its log and to `wait_for_line`.

    A thread rather than a selector on the pipe: `readline` buffers what the child wrote in one
    go, so a second line already read into that buffer would never wake the selector again. The
    thread also keeps reading to the end, so a full pipe can never block the child.
    """

    def __init__(self, process: subprocess.Popen[str], log_path: Path) -> None:
        assert process.stdout is not None
        self.process = process
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(
            target=self._read, args=(process.stdout, log_path), name="stdout", daemon=True
        )
        self._thread.start()

    def _read(self, stream: IO[str], log_path: Path) -> None:
        with log_path.open("a") as out:
            for line in stream:
                out.write(line)
                out.flush()
                self._lines.put(line)
        self._lines.put(None)

    def wait_for_line(self, prefix: str, timeout: float) -> str:
        """The next line that starts with `prefix`, waiting at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                try:
                    code = self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    fail(f"it closed its stdout before printing a {prefix.strip()!r} line")
                fail(f"it exited with code {code} before printing a {prefix.strip()!r} line")
            if line.startswith(prefix):
                return line
        fail(f"it printed no {prefix.strip()!r} line within {timeout:.0f} s")


def stop(process: subprocess.Popen[Any], timeout: float = 60) -> None:
    """SIGTERM, then SIGKILL to the process group of anything still running after `timeout`."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment without the caller's LLMOPS_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


@contextmanager
def start_stack(workdir: Path, watch_poll: float | None, timeout: float) -> Iterator[Stack]:
    """`llmops up --workers 1` on free ports in a fresh data dir; stopped on exit."""
    data_dir = workdir / "data"
    log_path = workdir / "stack.log"
    extra = {"LLMOPS_WATCH_POLL_SECONDS": str(watch_poll)} if watch_poll is not None else {}
    command = [sys.executable, "-m", "llmops", "up", "--workers", "1", "--data-dir", str(data_dir)]
    command += ["--grpc-port", "0", "--metrics-port", "-1"]
    with log_path.open("w") as stderr:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=clean_env(extra),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
    lines = StdoutLines(process, workdir / "stack.stdout.log")
    try:
        address = lines.wait_for_line("gRPC ", timeout).split()[1]
        redis_url = lines.wait_for_line("redis ", timeout).split()[1]
        lines.wait_for_line("workers ", timeout)
        stack_file = json.loads((data_dir / "stack.json").read_text())
        if stack_file.get("grpc") != address:
            fail(f"stack.json names {stack_file.get('grpc')}, the server printed {address}")
    except BaseException as exc:
        stop(process)
        if not isinstance(exc, BenchError):
            raise
        tail = log_path.read_text()[-2000:]
        raise BenchError(
            f"the stack did not start: {exc}\nlast lines of its log:\n{tail}"
        ) from None
    try:
        yield Stack(process, address, redis_url, log_path)
    finally:
        stop(process)


@contextmanager
def start_baseline_worker(workdir: Path, redis_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """This script in `--arq-worker` mode, in its own process like the platform's worker."""
    log_path = workdir / "baseline-worker.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--arq-worker", redis_url]
    with log_path.open("w") as out:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=clean_env({}),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop(process)


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Polls `condition` until it holds, or fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    fail(f"timed out after {timeout:.0f} s waiting for {what}")


# --- measuring ----------------------------------------------------------------------------------


def seconds(stamp: Any) -> float:
    """A protobuf Timestamp as Unix seconds."""
    return float(stamp.seconds) + float(stamp.nanos) / 1e9


@dataclass
class JobSample:
    """One training job, its times as Unix seconds (`*_at`) or durations in ms."""

    job_id: str
    sent_at: float
    create_rpc_ms: float
    seen_running_at: float
    queued_event_at: float
    running_event_at: float
    arq_enqueued_at: float
    arq_started_at: float
    arq_finished_at: float
    first_step_event_at: float | None
    cancel_sent_at: float | None
    terminal_event_at: float
    terminal_state: str
    worker_free_seen_at: float
    load_1min: float
    event_types: list[str] = field(default_factory=list)

    @property
    def client_ms(self) -> float:
        return (self.seen_running_at - self.sent_at) * 1000

    @property
    def server_ms(self) -> float:
        return (self.running_event_at - self.queued_event_at) * 1000


@dataclass
class BaselineSample:
    """One no-op arq job."""

    enqueue_called_at: float
    arq_enqueued_at: float
    arq_started_at: float
    function_started_at: float

    @property
    def latency_ms(self) -> float:
        return (self.function_started_at - self.enqueue_called_at) * 1000


class Bench:
    """The client side of one run: the SDK client, and arq on the stack's Redis.

    Each sample starts after a random pause of up to `jitter` seconds: samples sent back to back
    lock onto the worker's poll loop (the previous job started at a poll, the next is sent right
    after it) and would each wait nearly a whole `poll_delay`; a random pause puts the enqueue at
    a uniformly random phase of the loop, as independent clients do.
    """

    def __init__(
        self,
        client: llmops.Client,
        runner: asyncio.Runner,
        pool: ArqRedis,
        jitter: float,
        seed: int,
    ) -> None:
        self.client = client
        self.runner = runner
        self.pool = pool
        self.jitter = jitter
        self.random = random.Random(seed)

    def pause(self) -> None:
        time.sleep(self.random.uniform(0, self.jitter))

    def arq_status(self, job_id: str, queue: str) -> JobStatus:
        status: JobStatus = self.runner.run(Job(job_id, self.pool, _queue_name=queue).status())
        return status

    def arq_result(self, job_id: str, queue: str) -> Any:
        info = self.runner.run(Job(job_id, self.pool, _queue_name=queue).result_info())
        if info is None:
            fail(f"arq has no result for {job_id}")
        return info

    def redis_has(self, key: str) -> bool:
        async def exists() -> bool:
            return bool(await self.pool.exists(key))

        return self.runner.run(exists())

    def training_job(self, model: str, cancel: bool, timeout: float) -> JobSample:
        """Creates one job, follows it to its end and waits until the worker is free again."""
        training = self.client.training
        self.pause()
        load_1min = os.getloadavg()[0]
        sent_at = time.time()
        start = time.perf_counter()
        job = training.create("sft", model, DATASET, hyperparameters=HYPERPARAMETERS)
        create_rpc_ms = (time.perf_counter() - start) * 1000
        seen_running_at: float | None = None
        cancel_sent_at: float | None = None
        events: list[jobs_pb2.JobEvent] = []
        try:
            for event in training.watch(job.id, timeout=timeout):
                events.append(event)
                if seen_running_at is None and event.type == STATE_CHANGED:
                    if event.state == RUNNING:
                        seen_running_at = time.time()
                    if event.state == RUNNING and cancel:
                        cancel_sent_at = time.time()
                        with suppress(llmops.FailedPrecondition):  # it ended meanwhile
                            training.cancel(job.id)
        except llmops.DeadlineExceeded:
            fail(f"{job.id} did not end within {timeout:.0f} s")
        changes = {e.state: seconds(e.create_time) for e in events if e.type == STATE_CHANGED}
        if RUNNING not in changes or seen_running_at is None:
            fail(f"{job.id} never ran: events {[str(e).strip() for e in events]}")
        end = next(e for e in reversed(events) if e.type == STATE_CHANGED)
        if end.state not in TERMINAL:
            fail(f"the watch of {job.id} ended before the job did ({end.state})")
        arq_id = arq_job_id(job.id, job.attempt)
        wait_for(
            lambda: self.arq_status(arq_id, JOB_QUEUE) == JobStatus.complete,
            timeout,
            f"the worker to finish {arq_id}",
            interval=0.005,
        )
        worker_free_seen_at = time.time()
        info = self.arq_result(arq_id, JOB_QUEUE)
        steps = [e for e in events if e.type == jobs_pb2.JOB_EVENT_TYPE_METRICS]
        return JobSample(
            job_id=job.id,
            sent_at=sent_at,
            create_rpc_ms=create_rpc_ms,
            seen_running_at=seen_running_at,
            queued_event_at=changes[jobs_pb2.JOB_STATE_QUEUED],
            running_event_at=changes[RUNNING],
            arq_enqueued_at=info.enqueue_time.timestamp(),
            arq_started_at=info.start_time.timestamp(),
            arq_finished_at=info.finish_time.timestamp(),
            first_step_event_at=seconds(steps[0].create_time) if steps else None,
            cancel_sent_at=cancel_sent_at,
            terminal_event_at=seconds(end.create_time),
            terminal_state=jobs_pb2.JobState.Name(end.state).removeprefix("JOB_STATE_"),
            worker_free_seen_at=worker_free_seen_at,
            load_1min=load_1min,
            event_types=[
                jobs_pb2.JobEventType.Name(e.type).removeprefix("JOB_EVENT_TYPE_") for e in events
            ],
        )

    def baseline_job(self, timeout: float) -> BaselineSample:
        """One no-op arq job on the bare worker: enqueue_job -> the function starts."""
        self.pause()
        enqueue_called_at = time.time()
        job = self.runner.run(self.pool.enqueue_job("noop", _queue_name=BASELINE_QUEUE))
        if job is None:
            fail("arq refused the baseline job")
        started = self.runner.run(job.result(timeout=timeout, poll_delay=0.005))
        info = self.arq_result(job.job_id, BASELINE_QUEUE)
        return BaselineSample(
            enqueue_called_at=enqueue_called_at,
            arq_enqueued_at=info.enqueue_time.timestamp(),
            arq_started_at=info.start_time.timestamp(),
            function_started_at=float(started),
        )


# --- reporting ----------------------------------------------------------------------------------


@dataclass
class Row:
    """The distribution of one measure, in ms."""

    group: str
    measure: str
    n: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default, `inclusive`)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    position = fraction * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def row(group: str, measure: str, values: Sequence[float | None]) -> Row | None:
    data = sorted(v for v in values if v is not None)
    if not data:
        return None
    return Row(
        group=group,
        measure=measure,
        n=len(data),
        p50_ms=percentile(data, 0.50),
        p90_ms=percentile(data, 0.90),
        p99_ms=percentile(data, 0.99),
        max_ms=data[-1],
        mean_ms=statistics.fmean(data),
    )


def ms(later: float | None, earlier: float | None) -> float | None:
    return None if later is None or earlier is None else (later - earlier) * 1000


def summarize(jobs: list[JobSample], baseline: list[BaselineSample]) -> list[Row]:
    main = "CreateTrainingJob → RUNNING"
    parts = "where the platform's time goes"
    after = "after RUNNING (not start latency)"
    candidates = [
        row(main, "**client**: create sent → RUNNING seen on watch", [j.client_ms for j in jobs]),
        row(main, "**server**: QUEUED event → RUNNING event", [j.server_ms for j in jobs]),
        row(
            main,
            "**baseline** bare arq: enqueue_job → no-op starts",
            [b.latency_ms for b in baseline],
        ),
        row(parts, "CreateTrainingJob call (client round trip)", [j.create_rpc_ms for j in jobs]),
        row(parts, "create sent → QUEUED event", [ms(j.queued_event_at, j.sent_at) for j in jobs]),
        row(
            parts,
            "QUEUED event → arq enqueue (commit, enqueue_job)",
            [ms(j.arq_enqueued_at, j.queued_event_at) for j in jobs],
        ),
        row(
            parts,
            "arq enqueue → arq start (worker poll)",
            [ms(j.arq_started_at, j.arq_enqueued_at) for j in jobs],
        ),
        row(
            parts,
            "arq start → RUNNING event (job fetch, claim)",
            [ms(j.running_event_at, j.arq_started_at) for j in jobs],
        ),
        row(
            parts,
            "RUNNING event → seen on watch",
            [ms(j.seen_running_at, j.running_event_at) for j in jobs],
        ),
        row(
            parts,
            "baseline: arq enqueue → arq start (worker poll)",
            [ms(b.arq_started_at, b.arq_enqueued_at) for b in baseline],
        ),
        row(
            after,
            "RUNNING event → first step's METRICS event",
            [ms(j.first_step_event_at, j.running_event_at) for j in jobs],
        ),
        row(
            after,
            "cancel sent → terminal event",
            [ms(j.terminal_event_at, j.cancel_sent_at) for j in jobs],
        ),
        row(
            after,
            "terminal event → arq finished (worker free)",
            [ms(j.arq_finished_at, j.terminal_event_at) for j in jobs],
        ),
        row(
            after,
            "whole job: create sent → worker free seen",
            [ms(j.worker_free_seen_at, j.sent_at) for j in jobs],
        ),
    ]
    return [r for r in candidates if r is not None]


def table(rows: list[Row]) -> str:
    lines = [
        "| group | measure | n | p50 ms | p90 ms | p99 ms | max ms | mean ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.group} | {r.measure} | {r.n} | {r.p50_ms:,.1f} | {r.p90_ms:,.1f} "
            f"| {r.p99_ms:,.1f} | {r.max_ms:,.1f} | {r.mean_ms:,.1f} |"
        )
    return "\n".join(lines)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def code_state() -> dict[str, Any]:
    """The checkout the stack runs from: commit and uncommitted changes, as this run found it."""
    import llmops_services

    services = Path(llmops_services.__file__).resolve().parents[2]
    state: dict[str, Any] = {"root": str(services)}
    try:
        git = ["git", "-C", str(services)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        status = subprocess.run(
            [*git, "status", "--porcelain"], capture_output=True, text=True, timeout=10
        )
        if head.returncode == 0 and status.returncode == 0:
            state["commit"] = head.stdout.strip()
            state["uncommitted"] = [line[3:] for line in status.stdout.splitlines()]
    except (OSError, subprocess.SubprocessError):
        pass
    return state


def redis_version() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        return "not installed"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return next((p.removeprefix("v=") for p in out.stdout.split() if p.startswith("v=")), "?")


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="CreateTrainingJob → RUNNING latency on an idle worker, against bare arq."
    )
    parser.add_argument("--jobs", type=int, default=50, help="measured training jobs (50)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured jobs first (1)")
    parser.add_argument(
        "--baseline-per-job", type=int, default=4, help="no-op arq jobs before each job (4)"
    )
    parser.add_argument(
        "--no-cancel", action="store_true", help="let each job run its step instead of cancelling"
    )
    parser.add_argument(
        "--watch-poll",
        type=float,
        default=None,
        metavar="SECONDS",
        help="LLMOPS_WATCH_POLL_SECONDS of the stack (default: the platform's)",
    )
    parser.add_argument(
        "--jitter",
        type=float,
        default=None,
        metavar="SECONDS",
        help="most random pause before each sample (default: twice the worker's poll_delay)",
    )
    parser.add_argument("--seed", type=int, default=0, help="of the random pauses (0)")
    parser.add_argument("--model", default="", help="a local model dir (default: build a tiny one)")
    parser.add_argument("--json", metavar="OUT", default="", help="write samples and rows here")
    parser.add_argument("--target-ms", type=float, default=100.0, help="p50 target (100 ms)")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a client or server p50 misses the target"
    )
    parser.add_argument("--job-timeout", type=float, default=300.0, help="seconds per job (300)")
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    parser.add_argument("--arq-worker", metavar="REDIS_URL", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.warmup < 0 or args.baseline_per_job < 0:
        parser.error("--jobs must be at least 1, --warmup and --baseline-per-job at least 0")
    if args.watch_poll is not None and args.watch_poll <= 0:
        parser.error("--watch-poll must be positive")
    if args.jitter is not None and args.jitter < 0:
        parser.error("--jitter must not be negative")
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.arq_worker:
        run_baseline_worker(args.arq_worker)
        return 0
    if shutil.which("redis-server") is None:
        fail("redis-server is not installed (apt-get install redis-server)")
    # SIGTERM (and SIGINT, even where a shell started us ignoring it) end the run like Ctrl-C:
    # KeyboardInterrupt unwinds the context managers, which stop the stack.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    options = platform_worker_options()
    jitter = args.jitter if args.jitter is not None else 2 * float(options["poll_delay"])
    watch_poll = (
        args.watch_poll
        if args.watch_poll is not None
        else Settings.model_fields["watch_poll_seconds"].default
    )
    context: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "arq": arq.VERSION,
        "redis_server": redis_version(),
        "worker_arq_options": options,
        "watch_poll_seconds": watch_poll,
        "cancel_when_running": not args.no_cancel,
        "jitter_seconds": jitter,
        "seed": args.seed,
        "hyperparameters": HYPERPARAMETERS,
        "code": code_state(),
        "command": " ".join([".venv/bin/python", "bench/job_start_latency.py", *argv]),
    }
    jobs: list[JobSample] = []
    baseline: list[BaselineSample] = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llmops-bench-")))
        model_dir = args.model
        builder: subprocess.Popen[bytes] | None = None
        if not model_dir:  # built in its own process, beside the stack's start, keeps torch out
            model_dir = str(workdir / "tiny")
            builder = subprocess.Popen(
                [sys.executable, "-c", BUILD_TINY, model_dir],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stack.enter_context((workdir / "build-tiny.log").open("w")),
                start_new_session=True,
            )
            stack.callback(stop, builder)
        log("starting the stack (llmops up --workers 1) and the baseline arq worker")
        running = stack.enter_context(start_stack(workdir, args.watch_poll, args.startup_timeout))
        stack.enter_context(start_baseline_worker(workdir, running.redis_url))
        runner = stack.enter_context(asyncio.Runner())
        pool = runner.run(create_pool(RedisSettings.from_dsn(running.redis_url)))
        stack.callback(lambda: runner.run(pool.aclose()))
        client = stack.enter_context(llmops.Client(running.address, timeout=30))
        bench = Bench(client, runner, pool, jitter, args.seed)
        for queue in (JOB_QUEUE, BASELINE_QUEUE):
            wait_for(
                partial(bench.redis_has, queue + HEALTH_SUFFIX),
                args.startup_timeout,
                f"the worker of {queue} to poll Redis",
            )
        if builder is not None:
            log("building the tiny model")
            if builder.wait(timeout=600) != 0:
                fail(f"building the tiny model failed; see {workdir / 'build-tiny.log'}")
        client.models.create(MODEL_NAME, model_dir)
        log(f"stack at {running.address}, redis {running.redis_url}; model {MODEL_NAME}")
        cancel = not args.no_cancel
        for index in range(args.warmup):
            sample = bench.training_job(MODEL_NAME, cancel, args.job_timeout)
            for _ in range(args.baseline_per_job):
                bench.baseline_job(args.job_timeout)
            log(f"warm-up {index + 1}/{args.warmup}: {sample.client_ms:.0f} ms client-side")
        # Interleaved, so a slow minute of the machine hits the platform and the baseline alike.
        for index in range(args.jobs):
            for _ in range(args.baseline_per_job):
                baseline.append(bench.baseline_job(args.job_timeout))
            sample = bench.training_job(MODEL_NAME, cancel, args.job_timeout)
            jobs.append(sample)
            whole = sample.worker_free_seen_at - sample.sent_at
            log(
                f"[{index + 1}/{args.jobs}] {sample.job_id}: client {sample.client_ms:.1f} ms, "
                f"server {sample.server_ms:.1f} ms, {sample.terminal_state}, "
                f"worker free after {whole:.1f} s"
            )
        context["stack_log_lines"] = sum(1 for _ in running.log_path.open())

    rows = summarize(jobs, baseline)
    states = {
        s: sum(1 for j in jobs if j.terminal_state == s) for s in {j.terminal_state for j in jobs}
    }
    code = context["code"]
    changed = len(code.get("uncommitted", []))
    loads = [j.load_1min for j in jobs]
    print(
        f"CPU: {context['cpu']} ({context['cores']} cores), unpinned; 1-min load average at the "
        f"jobs' starts {min(loads):.2f}-{max(loads):.2f} (median {statistics.median(loads):.2f})"
    )
    if "commit" not in code:
        print(f"Code: {code['root']} (not a git checkout)")
    else:
        print(
            f"Code: {code['root']} at {code['commit']}"
            + (f" with {changed} uncommitted paths (see --json)" if changed else ", clean")
        )
    print(
        f"Python {context['python']}, grpcio {context['grpcio']}, arq {context['arq']}, "
        f"redis-server {context['redis_server']}; worker poll_delay {options['poll_delay']} s, "
        f"max_jobs {options['max_jobs']}; watch poll {watch_poll} s"
    )
    print(
        f"{len(jobs)} SFT jobs on {DATASET} ({json.dumps(HYPERPARAMETERS)}), each on an idle "
        f"worker, {'cancelled once RUNNING' if cancel else 'not cancelled'}; ends: {states}; "
        f"{len(baseline)} baseline no-op arq jobs interleaved; a random 0-{jitter * 1000:.0f} ms "
        "pause before each"
    )
    print()
    print(table(rows))
    print()
    failed = []
    bare = next((r for r in rows if r.measure.startswith("**baseline**")), None)
    for r in rows:
        side = r.measure.split("**")[1] if r.measure.startswith("**") else ""
        if side not in ("client", "server"):
            continue
        verdict = "meets" if r.p50_ms < args.target_ms else "MISSES"
        if r.p50_ms >= args.target_ms:
            failed.append(r)
        added = f"; {r.p50_ms - bare.p50_ms:+.1f} ms over bare arq's p50" if bare else ""
        target = f"{args.target_ms:.0f} ms target"
        print(f"Verdict {side}-side: p50 {r.p50_ms:.1f} ms, {verdict} the {target}{added}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "context": context,
                    "rows": [asdict(r) for r in rows],
                    "jobs": [asdict(j) for j in jobs],
                    "baseline": [asdict(b) for b in baseline],
                },
                indent=2,
                default=str,
            )
            + "\n"
        )
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
