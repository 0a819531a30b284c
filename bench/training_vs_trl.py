"""Benchmark: the platform's LoRA SFT job, end to end, against the same training in plain TRL.

One run compares, on the same tiny model (`llmops_workers.tiny.build_tiny_model`), the same rows
(config/datasets/demo-sft.train.jsonl, prompt/completion, registered by the stack as `demo-sft`)
and the same settings (max_steps, batch size, learning rate and schedule, max_length, LoRA r/alpha/
dropout on the same modules, completion-only loss, seed, and torch threads: `--threads` is
passed to `llmops worker --threads`, which its training child gives `torch.set_num_threads`, and
the plain script calls the same):

- `plain`: a fresh Python process (this file with `--plain-child`) that does by hand what a user
  of transformers + TRL + PEFT would: load tokenizer, rows and model, `SFTTrainer` with a
  `LoraConfig`, `train()` with checkpoints off, `save_pretrained` the adapter.
- `platform`: the same training as a job of the real stack: `llmops up --workers 0` (gRPC server,
  private Redis, SQLite and a local store in a temporary data dir) and one
  `python -m llmops worker --threads T`; the model is registered and the job created through the
  SDK (`Client.training.create("sft", ...)`) and waited for until it is terminal.
- `platform-packing`, `platform-padding-free`: the same job with `packing=true` or
  `padding_free=true`. Packing puts about six rows into each 256-token sequence, so a packed run
  is given the same number of epochs instead of the same steps (`steps * batch / rows`; override
  with `--packing-steps`): the same data, fewer but bigger steps. `plain-packing` and
  `plain-padding-free` (not run unless named in `--variants`) are the plain script in those modes.

Measured per run (medians over `--repeats`, variants interleaved in a rotating order):

- load→saved: from the start of loading the tokenizer (then rows and model) to the adapter on
  disk. In the platform this is the sum of the phases the engine reports with every job's
  result (`phase_setup_seconds` + `phase_train_seconds` + `phase_save_seconds`, read from the
  job's `metrics` through the SDK; `llmops_workers/engines/phases.py`). It covers the same steps
  as the plain script's interval (load, SFTTrainer set-up and dataset tokenization, train, save)
  plus what the engine adds inside them: the checkpoint the Trainer always writes at the last
  step (the API refuses `save_steps` 0, so the job asks for 1,000,000, which leaves only that
  one; its time is `phase_checkpoint_seconds`), its publication, and the events bridge.
- end-to-end: plain: from `Popen` of its fresh Python to the adapter on disk (interpreter start,
  imports, then load→saved). Platform: the job's RUNNING state-change event to its SUCCEEDED
  event (both stamped by the worker in the database): claim and spec resolution, spawning the
  training child (a fresh Python as well), its imports, load→saved, sending the result back and
  the child's exit (the worker joins the child first), registering the adapter and marking the
  job SUCCEEDED.
  Queue time (create → RUNNING) is not included; it is shown in the phase table.
- train: the Trainer's own `train_runtime` (the job's metric; in the platform it includes the
  final checkpoint).
- tokens/s: non-padding input tokens (`num_input_tokens_seen` with
  `include_num_input_tokens_seen="non_padding"`, as the engine sets it) divided by `train_runtime`,
  the same counters in both. (The engine's own `tokens_per_second` metric is the Trainer's
  `train_tokens_per_second` at the last logging step, before the final checkpoint; it is kept in
  the JSON as `reported_tokens_per_s`.)

    .venv/bin/python bench/training_vs_trl.py --quick                 # smoke run, about 3 minutes
    .venv/bin/python bench/training_vs_trl.py [--steps 150] [--repeats 3] [--threads 1] \
        [--variants plain,platform,platform-packing,platform-padding-free] [--json OUT]

Building the tiny model takes about 50 s with the default recipe; `--model-dir DIR` reuses one
(built there if missing). Runs one training at a time; on a shared machine other load changes
the numbers, so the load average before and after is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/NAME.py`
from bench._common import BenchError, fail, log

if TYPE_CHECKING:
    import llmops
    from llmops.v1 import training_service_pb2

REPO = Path(__file__).resolve().parents[1]
DATASET_FILE = REPO / "config" / "datasets" / "demo-sft.train.jsonl"
DATASET_NAME = "demo-sft"
MODEL_NAME = "bench-tiny"
# Every linear layer of the tiny Llama but the LM head: what PEFT's "all-linear" picks, named so
# that both sides train exactly the same modules whatever the platform's default becomes.
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
NO_PERIODIC_CHECKPOINTS = 1_000_000  # the API's largest save_steps (it refuses 0)
RESULT_PREFIX = "BENCH-RESULT "

Kind = Literal["plain", "platform"]


# ---- what runs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One way of running the training."""

    name: str
    kind: Kind
    description: str
    packing: bool = False
    padding_free: bool = False


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("plain", "plain", "plain TRL script, fresh process, no checkpoints"),
        Variant("platform", "platform", "SFT job through gRPC, Redis, worker and training child"),
        Variant("platform-packing", "platform", "as platform, packing=true", packing=True),
        Variant(
            "platform-padding-free", "platform", "as platform, padding_free=true", padding_free=True
        ),
        Variant("plain-packing", "plain", "as plain, packing=True", packing=True),
        Variant("plain-padding-free", "plain", "as plain, padding_free=True", padding_free=True),
    )
}
DEFAULT_VARIANTS = ("plain", "platform", "platform-packing", "platform-padding-free")


@dataclass(frozen=True)
class TrainSettings:
    """The training both sides run; `max_steps` 0 means `num_train_epochs` decides."""

    max_steps: int
    num_train_epochs: float
    batch_size: int
    learning_rate: float
    max_length: int
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    warmup_ratio: float
    weight_decay: float
    logging_steps: int
    seed: int
    threads: int
    packing: bool = False
    padding_free: bool = False
    target_modules: tuple[str, ...] = TARGET_MODULES


@dataclass(frozen=True)
class PlainJob:
    """What the plain child is given (JSON on its command line)."""

    settings: TrainSettings
    model_dir: str
    data_file: str
    output_dir: str


def settings_for(base: TrainSettings, variant: Variant, packing_steps: int) -> TrainSettings:
    """The variant's settings: packing trains the same epochs (or `packing_steps` steps)."""
    settings = replace(base, packing=variant.packing, padding_free=variant.padding_free)
    if variant.packing:
        if packing_steps > 0:
            return replace(settings, max_steps=packing_steps)
        return replace(settings, max_steps=0)
    return settings


def platform_hyperparameters(settings: TrainSettings) -> dict[str, object]:
    """The job's hyperparameters: every value the plain script sets, given explicitly."""
    hp: dict[str, object] = {
        "per_device_train_batch_size": settings.batch_size,
        "gradient_accumulation_steps": 1,
        "learning_rate": settings.learning_rate,
        "max_length": settings.max_length,
        "lora_r": settings.lora_r,
        "lora_alpha": settings.lora_alpha,
        "lora_dropout": settings.lora_dropout,
        "target_modules": list(settings.target_modules),
        "warmup_ratio": settings.warmup_ratio,
        "weight_decay": settings.weight_decay,
        "lr_scheduler_type": "linear",
        "logging_steps": settings.logging_steps,
        "save_steps": NO_PERIODIC_CHECKPOINTS,
        "seed": settings.seed,
        "packing": settings.packing,
        "padding_free": settings.padding_free,
        "completion_only_loss": True,
    }
    if settings.max_steps > 0:
        hp["max_steps"] = settings.max_steps
    else:
        hp["num_train_epochs"] = settings.num_train_epochs
    return hp


# ---- results -------------------------------------------------------------------------------------


@dataclass
class Run:
    """One training run of one variant."""

    variant: str
    repetition: int
    end_to_end_s: float
    load_to_saved_s: float | None
    train_s: float
    tokens: int
    tokens_per_s: float
    reported_tokens_per_s: float | None
    steps: int
    loss: float
    phases: dict[str, float] = field(default_factory=dict)
    job_id: str = ""


@dataclass
class Row:
    """The medians of one variant."""

    variant: str
    end_to_end_s: float
    load_to_saved_s: float | None
    train_s: float
    tokens_per_s: float
    end_to_end_ratio: float
    load_to_saved_ratio: float | None
    tokens_per_s_ratio: float
    steps: int
    tokens: int
    end_to_end_runs: list[float]
    phases: dict[str, float]


# The phases of a run, in order. The plain script times each of its own steps; a platform job
# has the phases its engine reports (load and set-up are one there) and, around them, what the
# worker does outside the engine.
QUEUE = "queue wait: create → RUNNING (not in end-to-end)"
OUTSIDE = "outside the engine: claim, inputs, fork, result, register"
PYTHON_START = "spawn, python start"
IMPORTS = "imports (torch, transformers, TRL, ...)"
LOAD = "load tokenizer, rows, model"
SET_UP = "SFTTrainer set-up (tokenizes rows)"
LOAD_AND_SET_UP = "load + set-up"
TRAIN = "train()"
CHECKPOINT = "  of which the final checkpoint (save + publish)"
SAVE = "save adapter"
EXIT = "process exit"
PHASES = (
    QUEUE,
    OUTSIDE,
    PYTHON_START,
    IMPORTS,
    LOAD,
    SET_UP,
    LOAD_AND_SET_UP,
    TRAIN,
    CHECKPOINT,
    SAVE,
    EXIT,
)


# ---- the plain TRL script (runs in its own process) ---------------------------------------------


def plain_child(job_json: str) -> None:
    """Trains with transformers + TRL + PEFT directly; prints one result line of timestamps."""
    entered = time.time()
    raw = json.loads(job_json)
    settings = TrainSettings(
        **{**raw["settings"], "target_modules": tuple(raw["settings"]["target_modules"])}
    )
    job = PlainJob(settings, raw["model_dir"], raw["data_file"], raw["output_dir"])

    import datasets  # type: ignore[import-untyped]
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

    imported = time.time()
    torch.set_num_threads(settings.threads)
    datasets.disable_progress_bars()

    load_start = time.time()
    tokenizer = AutoTokenizer.from_pretrained(job.model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with open(job.data_file, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    train = datasets.Dataset.from_list(
        [{"prompt": str(r["prompt"]), "completion": str(r["completion"])} for r in rows]
    )
    model = AutoModelForCausalLM.from_pretrained(job.model_dir, dtype=torch.float32)
    loaded = time.time()

    # Padding-free batches without packing need max_length=None in TRL (as in the engine).
    max_length = None if settings.padding_free and not settings.packing else settings.max_length
    config = SFTConfig(
        output_dir=job.output_dir,
        learning_rate=settings.learning_rate,
        max_steps=settings.max_steps if settings.max_steps > 0 else -1,
        num_train_epochs=settings.num_train_epochs,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=1,
        warmup_steps=min(settings.warmup_ratio, 0.999),  # a fraction: a ratio in transformers 5
        weight_decay=settings.weight_decay,
        lr_scheduler_type="linear",
        logging_steps=settings.logging_steps,
        save_strategy="no",
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=False,  # TRL's defaults for GPUs; both off on the CPU, as the engine does
        activation_checkpointing=False,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        max_length=max_length,
        packing=settings.packing,
        padding_free=settings.padding_free,
        completion_only_loss=True,
    )
    lora = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=train,
        processing_class=tokenizer,
        peft_config=lora,
    )
    built = time.time()
    output = trainer.train()
    trained = time.time()
    trained_model: Any = trainer.model  # the PeftModel: save_pretrained writes the adapter
    trained_model.save_pretrained(str(Path(job.output_dir) / "adapter"))
    saved = time.time()

    reported = [h["train_tokens_per_second"] for h in trainer.state.log_history if "loss" in h]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    result = {
        "entered": entered,
        "imported": imported,
        "load_start": load_start,
        "loaded": loaded,
        "built": built,
        "trained": trained,
        "saved": saved,
        "train_runtime": float(output.metrics["train_runtime"]),
        "tokens": int(trainer.state.num_input_tokens_seen),
        "reported_tokens_per_s": float(reported[-1]) if reported else None,
        "steps": int(trainer.state.global_step),
        "loss": float(losses[-1]) if losses else float("nan"),
        "threads": torch.get_num_threads(),
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_plain(
    variant: Variant,
    settings: TrainSettings,
    model_dir: Path,
    workdir: Path,
    repetition: int,
    timeout: float,
) -> Run:
    """One plain run in a fresh Python process."""
    output_dir = workdir / f"plain-{variant.name}-{repetition}"
    job = PlainJob(settings, str(model_dir), str(DATASET_FILE), str(output_dir))
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--plain-child",
        json.dumps(asdict(job)),
    ]
    log_path = workdir / f"{output_dir.name}.log"
    with log_path.open("w") as stderr:
        started = time.time()
        try:
            out = subprocess.run(
                command,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            fail(f"{variant.name}: the plain script ran past {timeout:.0f} s (log: {log_path})")
        exited = time.time()
    lines = [line for line in out.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if out.returncode != 0 or not lines:
        tail = log_path.read_text()[-3000:]
        fail(f"{variant.name}: the plain script failed ({out.returncode}):\n{tail}")
    r: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX) :])
    if r["threads"] != settings.threads:
        fail(f"{variant.name}: ran with {r['threads']} torch threads, not {settings.threads}")
    train_s = float(r["train_runtime"])
    phases = {
        PYTHON_START: r["entered"] - started,
        IMPORTS: r["imported"] - r["entered"],
        LOAD: r["loaded"] - r["load_start"],
        SET_UP: r["built"] - r["loaded"],
        LOAD_AND_SET_UP: r["built"] - r["load_start"],
        TRAIN: r["trained"] - r["built"],
        SAVE: r["saved"] - r["trained"],
        EXIT: exited - r["saved"],
    }
    return Run(
        variant=variant.name,
        repetition=repetition,
        end_to_end_s=r["saved"] - started,
        load_to_saved_s=r["saved"] - r["load_start"],
        train_s=train_s,
        tokens=int(r["tokens"]),
        tokens_per_s=int(r["tokens"]) / train_s,
        reported_tokens_per_s=r["reported_tokens_per_s"],
        steps=int(r["steps"]),
        loss=float(r["loss"]),
        phases=phases,
    )


# ---- the platform stack --------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """This environment without LLMOPS_* settings, so the stack is private to the benchmark."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Stack:
    """A running `llmops up --workers 0` and one `llmops worker`."""

    address: str
    data_dir: Path
    logs: list[Path]


@contextmanager
def start_stack(workdir: Path, threads: int, startup_timeout: float) -> Iterator[Stack]:
    """Starts the services (private Redis, SQLite, local store) and one worker; stops both."""
    data_dir = workdir / "stack"
    data_dir.mkdir()
    env = clean_env() | {"PYTHONUNBUFFERED": "1"}
    up_log = workdir / "stack.log"
    worker_log = workdir / "worker.log"
    llmops_cli = [sys.executable, "-m", "llmops"]
    up_command = [*llmops_cli, "up", "--workers", "0", "--data-dir", str(data_dir)]
    up_command += ["--grpc-port", "0", "--metrics-port", "-1"]
    with up_log.open("w") as handle:
        up = subprocess.Popen(
            up_command,
            cwd=REPO,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    processes = [up]
    try:
        stack_file = data_dir / "stack.json"
        deadline = time.monotonic() + startup_timeout
        while not stack_file.is_file():
            if up.poll() is not None:
                fail(f"llmops up exited with {up.returncode}:\n{up_log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                fail(f"llmops up wrote no stack.json within {startup_timeout:.0f} s")
            time.sleep(0.2)
        time.sleep(0.2)  # written whole before the address is printed; let the write finish
        address = str(json.loads(stack_file.read_text())["grpc"])
        worker_command = [*llmops_cli, "worker", "--data-dir", str(data_dir)]
        worker_command += ["--threads", str(threads)]
        with worker_log.open("w") as handle:
            worker = subprocess.Popen(
                worker_command,
                cwd=REPO,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        processes.insert(0, worker)
        yield Stack(address, data_dir, [up_log, worker_log])
    finally:
        for process in processes:  # the worker first: it needs Redis to stop cleanly
            stop_process(process)


def log_tails(paths: Sequence[Path], chars: int = 3000) -> str:
    """The last lines of each log, for an error message (the work dir is removed on exit)."""
    parts = []
    for path in paths:
        text = path.read_text(errors="replace") if path.is_file() else "(missing)"
        parts.append(f"--- last lines of {path.name}:\n{text[-chars:]}")
    return "\n".join(parts)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepare_registry(client: llmops.Client, model_dir: Path) -> None:
    """Registers the tiny model; checks the seeded dataset is the file the plain script reads."""
    client.models.create(MODEL_NAME, str(model_dir), description="training_vs_trl benchmark")
    dataset = client.datasets.get(DATASET_NAME)
    if dataset.sha256 != file_sha256(DATASET_FILE):
        log(f"warning: {DATASET_NAME} in the stack differs from {DATASET_FILE} (sha256)")


def timestamp(ts: Any) -> float:
    """Seconds since the epoch of a protobuf Timestamp."""
    return float(ts.seconds) + float(ts.nanos) / 1e9


def engine_phases(metrics: Mapping[str, float]) -> dict[str, float]:
    """The phases the engine reports with the job's result (`phase_<name>_seconds`)."""
    names = {"setup": LOAD_AND_SET_UP, "train": TRAIN, "checkpoint": CHECKPOINT, "save": SAVE}
    return {
        phase: metrics[f"phase_{name}_seconds"]
        for name, phase in names.items()
        if f"phase_{name}_seconds" in metrics
    }


def platform_phases(
    created: float, running: float, succeeded: float, metrics: Mapping[str, float]
) -> dict[str, float]:
    """The job's time split into the engine's phases and what the worker did around them."""
    phases = {QUEUE: running - created, **engine_phases(metrics)}
    inside = [phases.get(name) for name in (LOAD_AND_SET_UP, TRAIN, SAVE)]
    if all(value is not None for value in inside):
        phases[OUTSIDE] = succeeded - running - sum(value or 0.0 for value in inside)
    return phases


def run_platform(
    client: llmops.Client,
    stack: Stack,
    variant: Variant,
    settings: TrainSettings,
    repetition: int,
    timeout: float,
    tag: str,
) -> Run:
    """One SFT job through the stack, from create to SUCCEEDED."""
    from llmops.v1 import jobs_pb2

    job = client.training.create(
        "sft",
        MODEL_NAME,
        DATASET_NAME,
        hyperparameters=platform_hyperparameters(settings),
        idempotency_key=f"{tag}-{variant.name}-{repetition}",
    )
    try:
        done: training_service_pb2.TrainingJob = client.training.wait(
            job.id, timeout=timeout, poll_interval=1.0
        )
    except TimeoutError:
        client.training.cancel(job.id)
        fail(f"{variant.name}: job {job.id} did not end within {timeout:.0f} s")
    if done.state != jobs_pb2.JOB_STATE_SUCCEEDED:
        fail(
            f"{variant.name}: job {job.id} ended {jobs_pb2.JobState.Name(done.state)}: "
            f"{done.error.message}\n{log_tails(stack.logs)}"
        )
    events = list(client.training.events(job.id))
    changes = {
        e.state: timestamp(e.create_time)
        for e in events
        if e.type == jobs_pb2.JOB_EVENT_TYPE_STATE_CHANGED
    }
    running = changes[jobs_pb2.JOB_STATE_RUNNING]
    succeeded = changes[jobs_pb2.JOB_STATE_SUCCEEDED]
    if done.attempt != 1:
        log(f"warning: {job.id} took {done.attempt} attempts; RUNNING is the first one")
    metrics = dict(done.metrics)
    train_s = float(metrics["train_runtime"])
    tokens = int(metrics["num_input_tokens_seen"])
    phases = platform_phases(timestamp(done.create_time), running, succeeded, metrics)
    load_to_saved = None
    if OUTSIDE in phases:
        load_to_saved = sum(phases[name] for name in (LOAD_AND_SET_UP, TRAIN, SAVE))
    return Run(
        variant=variant.name,
        repetition=repetition,
        end_to_end_s=succeeded - running,
        load_to_saved_s=load_to_saved,
        train_s=train_s,
        tokens=tokens,
        tokens_per_s=tokens / train_s,
        reported_tokens_per_s=metrics.get("tokens_per_second"),
        steps=int(done.progress.step),
        loss=float(metrics.get("loss", float("nan"))),
        phases=phases,
        job_id=job.id,
    )


# ---- the model -----------------------------------------------------------------------------------


def ensure_model(path: Path, pretrain_steps: int | None) -> None:
    """Builds the tiny base model at `path` unless one is there."""
    if (path / "config.json").is_file():
        log(f"reusing the tiny model in {path}")
        return
    from llmops_workers.tiny import build_tiny_model

    started = time.monotonic()
    info = build_tiny_model(path, pretrain_steps=pretrain_steps)
    log(
        f"built the tiny model in {time.monotonic() - started:.0f} s: {info.parameters:,} "
        f"parameters, {info.steps} pretraining steps, eval loss {info.eval_loss_after:.2f}"
    )


# ---- summary -------------------------------------------------------------------------------------


def median_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(runs: list[Run], names: Sequence[str]) -> list[Row]:
    rows: list[Row] = []
    base: Row | None = None
    for name in names:
        mine = [r for r in runs if r.variant == name]
        if not mine:
            continue
        phase_names = list(dict.fromkeys(p for r in mine for p in r.phases))
        row = Row(
            variant=name,
            end_to_end_s=statistics.median(r.end_to_end_s for r in mine),
            load_to_saved_s=median_or_none([r.load_to_saved_s for r in mine]),
            train_s=statistics.median(r.train_s for r in mine),
            tokens_per_s=statistics.median(r.tokens_per_s for r in mine),
            end_to_end_ratio=float("nan"),
            load_to_saved_ratio=None,
            tokens_per_s_ratio=float("nan"),
            steps=int(statistics.median(r.steps for r in mine)),
            tokens=int(statistics.median(r.tokens for r in mine)),
            end_to_end_runs=[round(r.end_to_end_s, 1) for r in mine],
            phases={
                p: statistics.median(r.phases[p] for r in mine if p in r.phases)
                for p in phase_names
            },
        )
        if name == "plain":
            base = row
        rows.append(row)
    if base is not None:
        for row in rows:
            row.end_to_end_ratio = row.end_to_end_s / base.end_to_end_s
            row.tokens_per_s_ratio = row.tokens_per_s / base.tokens_per_s
            if row.load_to_saved_s is not None and base.load_to_saved_s is not None:
                row.load_to_saved_ratio = row.load_to_saved_s / base.load_to_saved_s
    return rows


def fmt(value: float | None, pattern: str = "{:.1f}") -> str:
    return "n/a" if value is None or value != value else pattern.format(value)


def table(rows: list[Row]) -> str:
    lines = [
        "| variant | load→saved s | end-to-end s | train s | tokens/s | load→saved / plain "
        "| end-to-end / plain | tokens/s / plain | steps | tokens | end-to-end of each run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.variant} | {fmt(row.load_to_saved_s)} | {row.end_to_end_s:.1f} "
            f"| {row.train_s:.1f} | {row.tokens_per_s:,.0f} "
            f"| {fmt(row.load_to_saved_ratio, '{:.2f}')} | {fmt(row.end_to_end_ratio, '{:.2f}')} "
            f"| {fmt(row.tokens_per_s_ratio, '{:.2f}')} | {row.steps} | {row.tokens:,} "
            f"| {', '.join(f'{v:.1f}' for v in row.end_to_end_runs)} |"
        )
    return "\n".join(lines)


def verdicts(rows: list[Row], tolerance: float = 0.10) -> list[str]:
    """One line per variant against plain, flagging a gap beyond `tolerance`."""
    base = next((row for row in rows if row.variant == "plain"), None)
    if base is None:
        return []
    lines = []
    for row in rows:
        if row is base:
            continue
        slower = row.end_to_end_ratio > 1 + tolerance or row.tokens_per_s_ratio < 1 - tolerance
        lines.append(
            f"{row.variant}: end-to-end {row.end_to_end_ratio:.2f}x plain "
            f"({row.end_to_end_s - base.end_to_end_s:+.1f} s), load→saved "
            f"{fmt(row.load_to_saved_ratio, '{:.2f}x')}, tokens/s {row.tokens_per_s_ratio:.2f}x"
            + (f" — more than {tolerance:.0%} behind plain" if slower else "")
        )
    return lines


def phase_table(rows: list[Row]) -> str:
    """Median seconds of each phase, one column per variant."""
    present = {p for row in rows for p in row.phases}
    names = [p for p in PHASES if p in present]
    if not names:
        return ""
    lines = [
        "| phase (median s) | " + " | ".join(row.variant for row in rows) + " |",
        "|---|" + "---:|" * len(rows),
    ]
    for name in names:
        cells = [fmt(row.phases.get(name), "{:.2f}") for row in rows]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The plain script's exit comes after its adapter is on disk and is not in its "
        "end-to-end. A job's phases are those its engine reports (`phase_*_seconds` metrics); "
        "the rest of RUNNING → SUCCEEDED is outside the engine.",
    ]
    return "\n".join(lines)


# ---- main ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="LoRA SFT: the platform's job end to end vs a plain TRL script."
    )
    parser.add_argument("--steps", type=int, default=150, help="max_steps of each run (150)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant; medians (3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both sides (1)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--lora-dropout", type=float, default=0.0)
    parser.add_argument("--warmup-ratio", type=float, default=0.03)
    parser.add_argument("--logging-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--packing-steps",
        type=int,
        default=0,
        help="max_steps of packed runs; 0 (default): as many epochs as --steps unpacked",
    )
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated, from {', '.join(VARIANTS)} (plain is always included)",
    )
    parser.add_argument("--model-dir", default="", help="tiny model to reuse (built if missing)")
    parser.add_argument(
        "--pretrain-steps", type=int, default=None, help="tiny model pretraining (recipe's)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 steps, 1 repeat")
    parser.add_argument("--json", metavar="OUT", default="", help="write runs and medians here")
    parser.add_argument("--run-timeout", type=float, default=1200.0, help="seconds per run")
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 20, 1
        args.logging_steps = min(args.logging_steps, 5)
        if args.pretrain_steps is None:
            args.pretrain_steps = 5
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    args.names = ["plain", *(n for n in VARIANTS if n in names and n != "plain")]
    for option in ("steps", "repeats", "threads", "batch_size", "logging_steps"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    return args


def dataset_rows() -> int:
    with DATASET_FILE.open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["--plain-child"]:
        plain_child(argv[1])
        return 0
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    rows_in_data = dataset_rows()
    base = TrainSettings(
        max_steps=args.steps,
        num_train_epochs=args.steps * args.batch_size / rows_in_data,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_length=args.max_length,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        warmup_ratio=args.warmup_ratio,
        weight_decay=0.0,
        logging_steps=args.logging_steps,
        seed=args.seed,
        threads=args.threads,
    )
    import peft
    import torch
    import transformers
    import trl

    context: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "bench/training_vs_trl.py", *argv]),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "peft": peft.__version__,
        "settings": asdict(base),
        "dataset_rows": rows_in_data,
        "repeats": args.repeats,
        "git": git_state(),
    }
    runs: list[Run] = []
    variants = [VARIANTS[n] for n in args.names]
    started = time.monotonic()
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llmops-trl-")))
        model_dir = Path(args.model_dir) if args.model_dir else workdir / "tiny"
        ensure_model(model_dir, args.pretrain_steps)
        client: llmops.Client | None = None
        running: Stack | None = None
        if any(v.kind == "platform" for v in variants):
            import llmops

            running = stack.enter_context(start_stack(workdir, args.threads, args.startup_timeout))
            client = stack.enter_context(llmops.Client(running.address, timeout=60))
            prepare_registry(client, model_dir)
            log(f"stack at {running.address}, data in {running.data_dir}")
        tag = f"bench-{os.getpid()}-{int(time.time())}"
        for repetition in range(1, args.repeats + 1):
            shift = (repetition - 1) % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                settings = settings_for(base, variant, args.packing_steps)
                if variant.kind == "plain":
                    run = run_plain(
                        variant, settings, model_dir, workdir, repetition, args.run_timeout
                    )
                else:
                    assert client is not None and running is not None
                    run = run_platform(
                        client, running, variant, settings, repetition, args.run_timeout, tag
                    )
                runs.append(run)
                log(
                    f"[{repetition}/{args.repeats}] {run.variant}: end-to-end "
                    f"{run.end_to_end_s:.1f} s, load→saved {fmt(run.load_to_saved_s)} s, "
                    f"train {run.train_s:.1f} s, {run.tokens_per_s:,.0f} tokens/s, "
                    f"{run.steps} steps, loss {run.loss:.3f}"
                    + (f" ({run.job_id})" if run.job_id else "")
                )
    context["load_average_after"] = os.getloadavg()
    context["wall_s"] = round(time.monotonic() - started, 1)

    rows = summarize(runs, args.names)
    print(
        f"CPU: {context['cpu']} ({context['cores']} cores, shared; load average "
        f"{context['load_average_before'][0]:.2f} before, "
        f"{context['load_average_after'][0]:.2f} after)"
    )
    print(
        f"Python {context['python']}, torch {context['torch']}, transformers "
        f"{context['transformers']}, TRL {context['trl']}, PEFT {context['peft']}; "
        f"{args.threads} torch thread(s) each side; checkout {context['git']}"
    )
    packed = "same epochs" if args.packing_steps == 0 else f"{args.packing_steps} steps"
    print(
        f"{args.steps} steps (packed: {packed}) of batch {args.batch_size}, "
        f"lr {args.learning_rate:g}, "
        f"max_length {args.max_length}, LoRA r {args.lora_r} alpha {args.lora_alpha} dropout "
        f"{args.lora_dropout:g} on {', '.join(TARGET_MODULES)}, completion-only loss; "
        f"{args.repeats} run(s) per variant, medians; wall {context['wall_s']:.0f} s"
    )
    print()
    for name in args.names:
        print(f"- {name}: {VARIANTS[name].description}")
    print()
    print(table(rows))
    print()
    for line in verdicts(rows):
        print(f"- {line}")
    phases = phase_table(rows)
    if phases:
        print()
        print(phases)
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
    return 0


def git_state() -> str:
    """The checkout's commit, marked dirty when files differ from it (what was measured)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}{' (with uncommitted changes)' if dirty else ''}" if head else "unknown"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
