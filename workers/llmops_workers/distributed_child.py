"""The job's process of a multi-GPU training run: checks this worker has the GPUs, launches the
run's processes (`engines.launch`), relays rank 0's events to the worker as they are appended,
and passes the worker's stop requests on through the stop file (`engines.handoff`).

The job's process stays the worker's one child per job, so the worker supervises a multi-GPU
job exactly as a single-process one: the same queue, the same stop flag, the same kill.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from llmops_workers.child import LaunchedError, die_with_parent
from llmops_workers.engines import checkpoints
from llmops_workers.engines.handoff import RunFiles, decode_result, write_stop
from llmops_workers.engines.launch import launch_command, launch_environment
from llmops_workers.engines.spec import EngineEvents, StopRequest, TrainingResult, TrainingSpec

__all__ = ["check_devices", "run_launched"]

log = logging.getLogger("llmops.worker")

_POLL_SECONDS = 0.1
_LOG_LINES = 20


def check_devices(spec: TrainingSpec) -> None:
    """Fails the job, without a retry, when this worker has fewer GPUs than it asks for: another
    attempt on the same worker would fail the same way."""
    if spec.processes_on_cpu:
        return
    import torch

    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found < spec.gpus:
        raise LaunchedError(
            "precondition",
            f"the job asks for {spec.gpus} GPUs and this worker has {found}; run it on a "
            f"worker with {spec.gpus} GPUs (see docs/deploy.md) or ask for fewer",
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run_launched(spec: TrainingSpec, events: EngineEvents) -> TrainingResult:
    """Runs `spec` on `spec.gpus` processes and returns rank 0's result; raises `LaunchedError`
    with the cause a rank reported, or `crash` when they ended without saying why."""
    check_devices(spec)
    checkpoints.checkpoints_root(spec.output_dir).mkdir(parents=True, exist_ok=True)
    files = RunFiles(Path(tempfile.mkdtemp(prefix=".launch-", dir=spec.output_dir)))
    try:
        files.prepare(spec)
        command = launch_command(spec, files.root, sys.executable, _free_port())
        log.info("launching %s", " ".join(command))
        with files.log.open("wb") as output:
            process = subprocess.Popen(
                command,
                env={**os.environ, **launch_environment(spec)},
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
            return _relay(process, files, events)
    finally:
        shutil.rmtree(files.root, ignore_errors=True)


def _relay(
    process: subprocess.Popen[bytes], files: RunFiles, events: EngineEvents
) -> TrainingResult:
    """Forwards events until the processes end; the stop file follows the worker's flag."""
    relay = _Relay(events)
    written: StopRequest = ""
    with files.events.open("r", encoding="utf-8") as reader:
        while True:
            wanted = events.should_stop()
            if wanted != written:
                write_stop(files.stop, wanted)
                written = wanted
            relay.feed(reader.read())
            try:
                code = process.wait(timeout=_POLL_SECONDS)
            except subprocess.TimeoutExpired:
                continue
            relay.feed(reader.read())
            break
    if relay.result is not None:
        return relay.result
    if relay.error is not None:
        raise relay.error
    raise LaunchedError(
        "crash", f"the training processes exited with {code}; last output:\n{_tail(files.log)}"
    )


class _Relay:
    """Turns appended event lines into the worker's messages; keeps the result or first error."""

    def __init__(self, events: EngineEvents) -> None:
        self.events = events
        self.partial = ""
        self.result: TrainingResult | None = None
        self.error: LaunchedError | None = None

    def feed(self, text: str) -> None:
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()  # a line still being written
        for line in lines:
            if line.strip():
                self._handle(json.loads(line))

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "started":
            self.events.on_start(int(event["total_steps"]))
        elif kind == "metrics":
            self.events.on_log(int(event["step"]), int(event["total_steps"]), event["metrics"])
        elif kind == "checkpoint":
            self.events.on_checkpoint(int(event["step"]), Path(event["path"]), event["metrics"])
        elif kind == "result":
            self.result = decode_result(event["result"])
        elif kind == "error" and self.error is None:
            self.error = LaunchedError(event["cause"], event["text"])


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return "(none)"
    return "\n".join(lines[-_LOG_LINES:]) or "(none)"
