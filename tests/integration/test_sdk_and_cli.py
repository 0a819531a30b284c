"""The SDK (sync and async) and the CLI against a real server: typed errors with details,
API keys, `--output json`, exit statuses, one-line errors, and `llmops serve` as a process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest
from typer.testing import CliRunner

import llmops
from llmops.cli.main import app
from llmops.v1.registry_service_pb2 import ListPromptTemplatesRequest
from llmops.v1.registry_service_pb2_grpc import RegistryServiceStub
from llmops_services.cli import worker_threads
from llmops_services.runtime.auth import create_key
from tests.conftest import ServerThread

ROOT = Path(__file__).resolve().parents[2]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SFT_ROWS = b'{"prompt": "2+2=", "completion": " 4"}\n{"prompt": "3+3=", "completion": " 6"}\n'


def test_sync_client_round_trip(server: ServerThread, tmp_path: Path) -> None:
    with llmops.Client(server.address, timeout=10) as client:
        assert [t.template_id for t in client.templates.list()] == [
            "classification",
            "extraction",
            "summarization",
        ]
        path = tmp_path / "math.jsonl"
        path.write_bytes(SFT_ROWS)
        uploaded = client.datasets.upload(path, kind="sft", name="math", chunk_size=7)
        assert uploaded.dataset.row_count == 2 and not uploaded.already_existed
        again = client.datasets.upload(SFT_ROWS, kind="sft", name="math")
        assert again.already_existed and again.dataset.id == uploaded.dataset.id
        assert {d.name for d in client.datasets.list(kind="sft")} >= {"math", "demo-sft"}
        client.datasets.delete("math")
        with pytest.raises(llmops.NotFound) as missing:
            client.datasets.get("math")
        assert missing.value.resource_info is not None
        assert missing.value.resource_info.name == "math"
        assert missing.value.request_id


def test_sync_client_raises_typed_errors_with_field_violations(server: ServerThread) -> None:
    with llmops.Client(server.address, timeout=10) as client:
        with pytest.raises(llmops.InvalidArgument) as refused:
            client.datasets.upload(b'{"prompt": 1}\nnope\n', kind="sft", name="bad")
        fields = [v.field for v in refused.value.field_violations]
        assert "lines[1].prompt" in fields and "lines[2]" in fields
        assert "lines[1].prompt" in str(refused.value)
        with pytest.raises(llmops.InvalidArgument) as bad_template:
            client.templates.create("qa", "no placeholder here")
        assert bad_template.value.field_violations[0].field == "prompt_template.template"
        with pytest.raises(llmops.NotFound):
            client.eval.get("eval-000000000000")


async def test_async_client_round_trip(server: ServerThread) -> None:
    async with llmops.AsyncClient(server.address, timeout=10) as client:
        template = await client.templates.get("summarization")
        assert "{text}" in template.template
        created = await client.templates.create("qa", "Q: {text}\nA:", task="qa")
        assert created.version == 1
        assert [v.version async for v in client.templates.versions("qa")] == [1]
        with pytest.raises(llmops.NotFound):
            await client.models.get("nothing@production")


def test_client_with_api_key(server: ServerThread) -> None:
    assert server.process.platform is not None
    key = create_key(server.process.platform.db, "reader")
    with (
        llmops.Client(server.address, timeout=10) as anonymous,
        pytest.raises(llmops.Unauthenticated),
    ):
        anonymous.templates.get("extraction")
    with llmops.Client(server.address, api_key=key.secret, timeout=10) as reader:
        assert reader.templates.get("extraction").version == 1
        with pytest.raises(llmops.PermissionDenied):
            reader.templates.create("qa", "Q: {text}")


def _cli(address: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["--address", address, *args])
    return result.exit_code, result.stdout, result.stderr


def test_cli_lists_shows_and_refuses(server: ServerThread, tmp_path: Path) -> None:
    code, out, _ = _cli(server.address, "registry", "list")
    assert code == 0 and out.split() == ["classification", "extraction", "summarization"]

    code, out, _ = _cli(server.address, "datasets", "list", "--output", "json")
    assert code == 0
    assert {d["name"] for d in json.loads(out)} == {
        "demo-sft",
        "demo-preference",
        "demo-eval",
        "demo-preference-test",
    }

    good = tmp_path / "good.jsonl"
    good.write_bytes(SFT_ROWS)
    code, out, _ = _cli(
        server.address, "datasets", "upload", str(good), "--kind", "sft", "-o", "json"
    )
    assert code == 0 and json.loads(out)["dataset"]["row_count"] == 2

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"prompt": "x"}\n')
    code, out, err = _cli(server.address, "datasets", "upload", str(bad), "--kind", "sft")
    assert code == 1 and out == ""
    assert err.startswith("error: INVALID_ARGUMENT") and "lines[1].completion" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1

    code, _, err = _cli(server.address, "models", "show", "ghost")
    assert code == 1 and "NOT_FOUND" in err and "Traceback" not in err


def test_cli_reports_an_unreachable_server_in_one_line() -> None:
    code, _, err = _cli("127.0.0.1:1", "--timeout", "2", "registry", "list")
    assert code == 1 and err.startswith("error: UNAVAILABLE") and "Traceback" not in err


def test_cli_keys_create_and_list(data_dir: Path) -> None:
    runner = CliRunner()
    created = runner.invoke(
        app, ["keys", "create", "--role", "writer", "--data-dir", str(data_dir), "-o", "json"]
    )
    assert created.exit_code == 0, created.output
    key = json.loads(created.stdout)
    assert key["role"] == "writer" and key["key"].startswith("llmops_")
    listed = runner.invoke(app, ["keys", "list", "--data-dir", str(data_dir), "-o", "json"])
    assert [k["key_id"] for k in json.loads(listed.stdout)] == [key["id"]]
    refused = runner.invoke(app, ["keys", "create", "--role", "root", "--data-dir", str(data_dir)])
    assert refused.exit_code == 1 and "unknown role" in refused.stderr
    revoked = runner.invoke(app, ["keys", "revoke", key["id"], "--data-dir", str(data_dir)])
    assert revoked.exit_code == 0


def test_serve_process_logs_json_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`llmops serve` as its own process: one JSON log line per call, clean exit on SIGTERM."""
    env = {**os.environ, "LLMOPS_LOG_LEVEL": "INFO"}
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmops",
            "serve",
            "registry",
            "--grpc-port",
            "0",
            "--metrics-port",
            "-1",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    ) as process:
        stderr = _exercise(process)
    assert process.returncode == 0
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    calls = [entry for entry in lines if entry.get("msg") == "rpc"]
    by_method = {entry["method"].rsplit("/", 1)[1]: entry for entry in calls}
    assert by_method["GetPromptTemplate"]["code"] == "OK"
    assert by_method["GetModel"]["code"] == "NOT_FOUND"
    for entry in calls:
        assert {"ts", "level", "request_id", "duration_ms", "principal"} <= entry.keys()
    assert by_method["ListPromptTemplates"]["trace_id"] == TRACE_ID
    assert any(entry.get("msg") == "grpc server stopped" for entry in lines)


def _child_commands(pid: int) -> list[list[bytes]]:
    """The command lines of the processes whose parent is `pid`.

    Read from every process's `stat` rather than `/proc/<pid>/task/<pid>/children`, which the
    kernel documents as reliable only while the children are stopped (a loaded machine showed
    it missing a running worker).
    """
    commands = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if parent == pid:
                commands.append((stat.parent / "cmdline").read_bytes().split(b"\0"))
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
    return commands


def test_up_starts_the_stack_and_a_worker_with_the_threads_asked_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    """`llmops up` as the demo runs it: services, a private Redis and one worker process that
    gets `--threads`; SIGTERM stops all of them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    command = [sys.executable, "-m", "llmops", "up", "--grpc-port", "0", "--metrics-port", "-1"]
    command += ["--http-port", "0", "--data-dir", str(tmp_path / "data"), "--threads", "2"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    ) as process:
        try:
            assert process.stdout is not None
            lines = [process.stdout.readline() for _ in range(4)]
            assert lines[0].startswith("gRPC") and lines[1].startswith("REST"), lines
            assert lines[2].startswith("redis"), lines
            assert lines[3] == "workers  1 (2 torch threads per job)\n", lines
            rest = lines[1].split()[1]
            assert httpx.get(f"{rest}/v1/promptTemplates/extraction", timeout=10).status_code == 200
            (worker,) = [c for c in _child_commands(process.pid) if b"worker" in c]
            assert worker[worker.index(b"--threads") + 1] == b"2"
            with llmops.Client(lines[0].split()[1], timeout=10) as client:
                assert client.templates.get("extraction").template_id == "extraction"
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("workers", "cores", "threads"), [(1, 2, 2), (2, 2, 1), (3, 2, 1), (2, 16, 8), (0, 4, 4)]
)
def test_up_splits_the_cores_between_its_workers(workers: int, cores: int, threads: int) -> None:
    assert worker_threads(workers, cores) == threads


def _exercise(process: subprocess.Popen[str]) -> str:
    """Calls the served process twice, stops it with SIGTERM and returns its stderr."""
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("gRPC"), first
        address = first.split()[1]
        with llmops.Client(address, timeout=10) as client:
            client.templates.get("extraction")
            with pytest.raises(llmops.NotFound):
                client.models.get("ghost")
        with grpc.insecure_channel(address) as channel:
            traceparent = f"00-{TRACE_ID}-{'1' * 16}-01"
            RegistryServiceStub(channel).ListPromptTemplates(
                ListPromptTemplatesRequest(), metadata=(("traceparent", traceparent),), timeout=10
            )
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        return stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
