"""API keys never leak: a whole flow through `llmops up` (services, a worker, the REST gateway)
with auth on and known keys (an admin key for the caller, a writer key the worker is given, and
a wrong key tried by an intruder), at the most verbose log level; then every log line of every
process, every job event and every Prometheus label of the services and the worker is searched
for each secret."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import httpx
import openai
import pytest

import llmops
from llmops.v1 import jobs_pb2
from tests.integration.workers import FAST, ROOT, TERMINAL, until

INTRUDER = "llmops_" + "x" * 43
LLMOPS = [sys.executable, "-m", "llmops"]


def make_key(data_dir: Path, role: str) -> str:
    made = subprocess.run(
        [*LLMOPS, "keys", "create", "--role", role, "--data-dir", str(data_dir), "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    secret: str = json.loads(made.stdout)["key"]
    return secret


@pytest.mark.timeout(420)
def test_no_secret_reaches_a_log_an_event_or_a_metric(tmp_path: Path, tiny_model: Path) -> None:
    data_dir = tmp_path / "data"
    admin = make_key(data_dir, "admin")
    worker_key = make_key(data_dir, "writer")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    env |= {"LLMOPS_LOG_LEVEL": "DEBUG", "LLMOPS_WORKER_API_KEY": worker_key}
    command = [sys.executable, "-m", "llmops", "up", "--grpc-port", "0", "--metrics-port", "0"]
    command += ["--http-port", "0", "--data-dir", str(data_dir)]
    out, err = tmp_path / "up.out", tmp_path / "up.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env, cwd=ROOT)
    events: list[str] = []
    metrics: list[str] = []
    try:
        stack_file = data_dir / "stack.json"
        until(lambda: "rest" in _read(stack_file), 120, "the stack with its gateway")
        stack = json.loads(stack_file.read_text())
        with llmops.Client(stack["grpc"], api_key=admin, timeout=60) as client:
            client.models.create("tiny", str(tiny_model))
            params = {**FAST, "max_steps": 4, "save_steps": 2}
            job = client.training.create("sft", "tiny", "demo-sft", hyperparameters=params)
            until(lambda: client.training.get(job.id).state in TERMINAL, 300, "the job")
            done = client.training.get(job.id)
            assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.error.message
            events += [e.message for e in client.training.events(job.id)]
            assert client.inference.generate(done.result_model, "Hello", max_new_tokens=4).text
        with (
            llmops.Client(stack["grpc"], api_key=INTRUDER, timeout=10) as intruder,
            pytest.raises(llmops.Unauthenticated),
        ):
            intruder.models.get("tiny")
        rest = stack["rest"]
        bearer = {"authorization": f"Bearer {admin}"}
        assert httpx.get(f"{rest}/v1/models/tiny", headers=bearer, timeout=30).status_code == 200
        wrong = {"authorization": f"Bearer {INTRUDER}"}
        assert httpx.get(f"{rest}/v1/models/tiny", headers=wrong, timeout=30).status_code == 401
        sdk = openai.OpenAI(base_url=f"{rest}/openai/v1", api_key=admin)
        answer = sdk.chat.completions.create(
            model=done.result_model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        assert answer.choices[0].message.content is not None
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{rest}/openai/v1", api_key=INTRUDER).models.list()
        metrics.append(_get(stack["metrics"]))
        started = [line for line in _json_lines(err) if line.get("msg") == "worker started"]
        assert started and started[0].get("metrics"), "the worker logs its metrics URL"
        metrics.append(_get(str(started[0]["metrics"])))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    logs = out.read_text() + err.read_text()
    assert len(logs.splitlines()) > 20, "the processes logged (DEBUG)"
    assert '"msg": "rpc"' in logs  # the services' access log is among them
    for name, secret in (("admin", admin), ("worker", worker_key), ("intruder", INTRUDER)):
        token = secret.removeprefix("llmops_")
        for where, text in (("logs", logs), ("events", "\n".join(events))):
            assert token not in text, f"the {name} key appears in the {where}"
        for text in metrics:
            assert token not in text, f"the {name} key appears in a metric"


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        text: str = answer.read().decode()
        return text


def _json_lines(path: Path) -> list[dict[str, object]]:
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines
