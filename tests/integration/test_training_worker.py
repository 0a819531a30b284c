"""Training jobs end to end: a real server, a private Redis, real worker processes and a tiny
model. A job runs to a registered adapter; a running job is cancelled; a worker killed with
SIGKILL mid-job is replaced and the job resumes from its checkpoint to exactly one model."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import urllib.request
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import redis
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

import llmops
from llmops.v1 import jobs_pb2
from llmops.v1 import training_service_pb2 as pb
from tests.conftest import ServerThread
from tests.integration.test_tracing import Collector
from tests.integration.workers import FAST, TERMINAL, Workers, until


def test_sft_job_runs_to_a_registered_adapter(
    stack: ServerThread, workers: Workers, tiny_model: Path
) -> None:
    workers.start()
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        job = client.training.create(
            "sft",
            "tiny",
            "demo-sft",
            hyperparameters={**FAST, "max_steps": 6, "save_steps": 3},
            idempotency_key="first",
        )
        until(lambda: client.training.get(job.id).state in TERMINAL, 240, "the job to end")
        done = client.training.get(job.id)
        assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.error.message
        assert done.progress.step == 6 and done.progress.total_steps == 6
        assert "loss" in done.metrics
        model = client.models.get(done.result_model)
        assert model.kind == llmops.v1.registry_service_pb2.MODEL_KIND_ADAPTER
        assert model.origin.training_job == job.id and model.origin.method == "sft"
        assert model.origin.base_model == client.models.get("tiny").id
        assert model.origin.dataset_sha256 == client.datasets.get("demo-sft").sha256
        events = list(client.training.events(job.id))
        kinds = [e.type for e in events]
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert jobs_pb2.JOB_EVENT_TYPE_METRICS in kinds
        assert jobs_pb2.JOB_EVENT_TYPE_CHECKPOINT in kinds
        states = [e.state for e in events if e.type == jobs_pb2.JOB_EVENT_TYPE_STATE_CHANGED]
        assert states == [
            jobs_pb2.JOB_STATE_QUEUED,
            jobs_pb2.JOB_STATE_RUNNING,
            jobs_pb2.JOB_STATE_SUCCEEDED,
        ]
        assert [c.step for c in client.training.checkpoints(job.id)] == [3, 6]
        watched = list(client.training.watch(job.id, after_sequence=len(events) - 1))
        assert [e.sequence for e in watched] == [len(events)]


def test_a_running_job_is_cancelled_at_its_next_step(
    stack: ServerThread, workers: Workers, tiny_model: Path
) -> None:
    workers.start()
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        job = client.training.create(
            "sft", "tiny", "demo-sft", hyperparameters={**FAST, "max_steps": 5000}
        )
        until(lambda: client.training.get(job.id).progress.step >= 2, 240, "training steps")
        cancelling = client.training.cancel(job.id)
        assert cancelling.state in (jobs_pb2.JOB_STATE_CANCELLING, jobs_pb2.JOB_STATE_CANCELLED)
        until(lambda: client.training.get(job.id).state in TERMINAL, 120, "the cancel")
        ended = client.training.get(job.id)
        assert ended.state == jobs_pb2.JOB_STATE_CANCELLED and not ended.result_model
        assert ended.progress.step < 5000


def test_a_killed_worker_is_replaced_and_the_job_resumes(
    stack: ServerThread, workers: Workers, tiny_model: Path
) -> None:
    first = workers.start()
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        job = client.training.create(
            "sft", "tiny", "demo-sft", hyperparameters={**FAST, "max_steps": 40, "save_steps": 4}
        )
        until(lambda: len(client.training.checkpoints(job.id)) >= 1, 240, "a first checkpoint")
        server, child = _fork_server(first), _training_child(first)
        assert child is not None
        first.send_signal(signal.SIGKILL)
        first.wait()
        # no orphan keeps training: the fork server sees its worker gone, and the job's process
        # dies with the fork server (PR_SET_PDEATHSIG)
        until(lambda: not _running(server) and not _running(child), 60, "no orphan process")
        workers.start()
        until(lambda: client.training.get(job.id).state in TERMINAL, 300, "the resumed job")
        done = client.training.get(job.id)
        assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.error.message
        assert done.attempt == 2
        messages = [e.message for e in client.training.events(job.id)]
        assert any("resumes from step-" in m for m in messages), messages
        produced = [
            m for m in client.models.list(kind="adapter") if m.origin.training_job == job.id
        ]
        assert len(produced) == 1 and produced[0].origin.attempt == 2


def test_the_training_stub_types_are_the_contracts() -> None:
    assert pb.TRAINING_METHOD_SFT == 1


def _adverts(redis_url: str) -> list[dict[str, object]]:
    """What the live workers advertise in Redis."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = list(client.scan_iter("llmops:workers:*"))
        return [json.loads(str(client.get(key) or "{}")) for key in keys]
    finally:
        client.close()


def _probed(redis_url: str, count: int) -> bool:
    adverts = _adverts(redis_url)
    return len(adverts) == count and not any(a.get("probing") for a in adverts)


def _wait_done(client: llmops.Client, *job_ids: str) -> list[pb.TrainingJob]:
    until(lambda: all(client.training.get(j).state in TERMINAL for j in job_ids), 400, "the jobs")
    return [client.training.get(j).message for j in job_ids]


@pytest.mark.timeout(900)  # four jobs through one worker
def test_every_method_runs_through_a_worker_to_a_registered_adapter(
    stack: ServerThread, workers: Workers, tiny_model: Path, tiny_student: Path
) -> None:
    workers.start()
    short = {**FAST, "max_steps": 3, "save_steps": 3}
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        client.models.create("tiny-student", str(tiny_student))
        sft = client.training.create("sft", "tiny", "demo-sft", hyperparameters=short)
        qlora = client.training.create("qlora", "tiny", "demo-sft", hyperparameters=short)
        (sft_done,) = _wait_done(client, sft.id)
        assert sft_done.state == jobs_pb2.JOB_STATE_SUCCEEDED, sft_done.error.message
        dpo = client.training.create(
            "dpo",
            "tiny",
            "demo-preference",
            parent_model=sft_done.result_model,
            hyperparameters=short,
        )
        distill = client.training.create(
            "distill",
            "tiny-student",
            "demo-sft",
            teacher_model=sft_done.result_model,
            hyperparameters=short,
        )
        ended = _wait_done(client, qlora.id, dpo.id, distill.id)
        for job in ended:
            assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, (job.method, job.error.message)
            assert job.attempt == 1
        models = {job.method: client.models.get(job.result_model) for job in ended}
        assert models[pb.TRAINING_METHOD_QLORA].origin.method == "qlora"
        assert models[pb.TRAINING_METHOD_DPO].origin.parent_model == sft_done.result_model
        assert models[pb.TRAINING_METHOD_DISTILL].origin.teacher_model == sft_done.result_model
        assert (
            models[pb.TRAINING_METHOD_DISTILL].origin.base_model
            == client.models.get("tiny-student").id
        )
        dpo_metrics = [
            e.metrics for e in client.training.events(dpo.id) if e.metrics and "loss" in e.metrics
        ]
        assert dpo_metrics and {"rewards/accuracies", "rewards/margins"} <= set(dpo_metrics[-1])


def test_qlora_is_refused_before_queueing_when_no_worker_can_load_bitsandbytes(
    stack: ServerThread, workers: Workers, tiny_model: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "site" / "bitsandbytes"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('libbitsandbytes_cpu.so not found')\n")
    workers.start(PYTHONPATH=str(broken.parent))
    until(lambda: _probed(workers.redis_url, 1), 120, "the worker's capability probe")
    (advert,) = _adverts(workers.redis_url)
    assert advert["four_bit"] is False and "qlora" not in advert["methods"]  # type: ignore[operator]
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        with pytest.raises(llmops.FailedPrecondition) as refused:
            client.training.create("qlora", "tiny", "demo-sft")
        assert "libbitsandbytes_cpu.so not found" in str(refused.value)
        assert "pip install 'bitsandbytes" in str(refused.value)
        assert refused.value.precondition_violations[0].subject == "method"
        assert list(client.training.list()) == []
        sft = client.training.create(
            "sft", "tiny", "demo-sft", hyperparameters={**FAST, "max_steps": 1}
        )
        assert sft.state == jobs_pb2.JOB_STATE_QUEUED


def test_an_input_error_fails_the_job_at_once_without_a_retry(
    stack: ServerThread, workers: Workers, tiny_model: Path, tmp_path: Path
) -> None:
    plain = tmp_path / "no-chat-template"
    shutil.copytree(tiny_model, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    chat = tmp_path / "chat.jsonl"
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    chat.write_text(json.dumps(row) + "\n")
    workers.start()
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("plain", str(plain))
        client.datasets.upload(chat, kind="sft", name="chat")
        job = client.training.create(
            "sft", "plain", "chat", hyperparameters={**FAST, "max_steps": 2}
        )
        (done,) = _wait_done(client, job.id)
        assert done.state == jobs_pb2.JOB_STATE_FAILED
        assert done.attempt == 1
        assert done.error.code == 3 and "no chat template" in done.error.message


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _fork_server(worker: subprocess.Popen[bytes]) -> int:
    """The pid of the worker's fork server (not multiprocessing's resource tracker)."""
    (server,) = [
        child
        for child in _children(worker.pid)
        if b"forkserver" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]
    return server


def _running(pid: int) -> bool:
    """Whether the process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _training_child(worker: subprocess.Popen[bytes]) -> int | None:
    """The pid of the worker's training process, which its fork server forked."""
    children = _children(_fork_server(worker))
    return children[0] if len(children) == 1 else None


def test_a_crashed_training_process_is_retried_and_resumes(
    stack: ServerThread, workers: Workers, tiny_model: Path
) -> None:
    worker = workers.start()
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        job = client.training.create(
            "sft", "tiny", "demo-sft", hyperparameters={**FAST, "max_steps": 12, "save_steps": 2}
        )
        until(lambda: len(client.training.checkpoints(job.id)) >= 1, 240, "a first checkpoint")
        child = _training_child(worker)
        assert child is not None
        # the fork server had imported torch before it forked the job's process
        assert b"libtorch_cpu" in Path(f"/proc/{_fork_server(worker)}/maps").read_bytes()
        os.kill(child, signal.SIGKILL)
        (done,) = _wait_done(client, job.id)
        assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.error.message
        assert done.attempt == 2 and worker.poll() is None  # the same worker ran attempt 2
        messages = [e.message for e in client.training.events(job.id)]
        killed = "attempt 1 failed (the job's process was killed by SIGKILL (-9))"
        assert any(killed in m for m in messages), messages
        assert any("attempt 2 resumes from step-" in m for m in messages)


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
        return text


def test_training_metrics_and_the_trace_reach_prometheus_and_otlp(
    stack: ServerThread, workers: Workers, tiny_model: Path
) -> None:
    collector = Collector()
    receiver = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, receiver)  # type: ignore[no-untyped-call]
    port = receiver.add_insecure_port("127.0.0.1:0")
    receiver.start()
    try:
        workers.start(LLMOPS_OTLP_ENDPOINT=f"http://127.0.0.1:{port}")
        trace_id = secrets.token_hex(16)
        caller = trace.SpanContext(
            int(trace_id, 16), int(secrets.token_hex(8), 16), True, trace.TraceFlags(1)
        )
        with llmops.Client(stack.address, timeout=30) as client:
            client.models.create("tiny", str(tiny_model))
            with trace.use_span(trace.NonRecordingSpan(caller)):  # the SDK passes it on
                job = client.training.create(
                    "sft", "tiny", "demo-sft", hyperparameters={**FAST, "max_steps": 2}
                )
            (done,) = _wait_done(client, job.id)
            assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.error.message
        assert stack.addresses is not None
        served = _scrape(stack.addresses.metrics)
        assert 'llmops_training_jobs{method="sft",state="SUCCEEDED"} 1.0' in served
        assert 'llmops_jobs{kind="training",state="QUEUED"} 0.0' in served
        (advert,) = _adverts(workers.redis_url)
        worker_metrics = _scrape(str(advert["metrics"]))
        assert 'llmops_training_job_duration_seconds_count{method="sft",state="SUCCEEDED"} 1.0' in (
            worker_metrics
        )
        tokens = re.search(r'llmops_training_tokens_total\{method="sft"\} (\S+)', worker_metrics)
        assert tokens is not None and float(tokens.group(1)) > 0
        workers.stop()  # the worker flushes its spans as it stops
        names = {name for trace, name in collector.spans if trace == trace_id}
        assert {"llmops.training.attempt", "llmops.job.train"} <= names
    finally:
        receiver.stop(None)
