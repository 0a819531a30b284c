"""The REST gateway (the real `llmops-gateway` binary, built by `make gateway`) in front of a real
server: CRUD through REST, errors as JSON `google.rpc.Status`, the header allowlist proved on
the server side, NDJSON streams flushed per message, readiness, generation, and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmops_services.gateway import GatewayProcess
from llmops_services.runtime.auth import create_key, revoke_key
from tests.conftest import ServerThread, make_settings
from tests.integration.helpers import db_of, make_base_model_dir
from tests.tiny_models import TinyModels

ROOT = Path(__file__).resolve().parents[2]


def start_gateway(binary: Path, backend: str) -> GatewayProcess:
    gateway = GatewayProcess(binary, backend, "127.0.0.1:0", grace=2)
    gateway.start(timeout=30)
    return gateway


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """One server for the module's tests (each uses names of its own)."""
    data_dir = tmp_path_factory.mktemp("gateway") / "data"
    settings = make_settings(data_dir, inference_threads=1, inference_device="cpu")
    running = ServerThread(settings).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def url(binary: Path, backend: ServerThread) -> Iterator[str]:
    gateway = start_gateway(binary, backend.address)
    yield gateway.url
    gateway.stop()


@pytest.fixture
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client


def curl(*args: str) -> tuple[int, str]:
    """Runs the real curl; returns the HTTP status and the body."""
    done = subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


def test_templates_and_models_through_rest(http: httpx.Client, url: str, tmp_path: Path) -> None:
    template = {
        "template_id": "rest-notes",
        "template": "Notes on: {text}",
        "task": "summarization",
    }
    status, body = curl(
        "-X", "POST", f"{url}/v1/promptTemplates",
        "-H", "content-type: application/json",
        "-d", json.dumps({"prompt_template": template}),
    )  # fmt: skip
    assert status == 200, body
    created = json.loads(body)
    assert (created["template_id"], created["version"]) == ("rest-notes", 1)  # proto names
    fetched = http.get("/v1/promptTemplates/rest-notes").json()
    assert fetched["template"] == "Notes on: {text}"
    listed = http.get("/v1/promptTemplates", params={"page_size": 100}).json()
    assert "rest-notes" in [t["template_id"] for t in listed["prompt_templates"]]

    uri = make_base_model_dir(tmp_path, "rest-base")
    model = {"name": "rest-base", "kind": "MODEL_KIND_BASE", "uri": str(uri)}
    made = http.post("/v1/models", json={"model": model})
    assert made.status_code == 200, made.text
    assert made.json()["id"].startswith("mdl-")
    got = http.get("/v1/models/rest-base").json()
    assert (got["id"], got["kind"]) == (made.json()["id"], "MODEL_KIND_BASE")


def test_errors_are_status_json_with_their_details(http: httpx.Client) -> None:
    missing = http.get("/v1/models/ghost", headers={"x-request-id": "rest-404"})
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    status = missing.json()
    assert status["code"] == 5 and "ghost" in status["message"]
    details = {d["@type"].rsplit(".", 1)[1]: d for d in status["details"]}
    assert details["ResourceInfo"]["resource_name"] == "ghost"
    assert details["RequestInfo"]["request_id"] == "rest-404"

    bad = http.post(
        "/v1/promptTemplates",
        json={"prompt_template": {"template_id": "Bad Id!", "template": "{text}"}},
    )
    assert bad.status_code == 400
    assert bad.json()["code"] == 3
    (request,) = [d for d in bad.json()["details"] if d["@type"].endswith("google.rpc.BadRequest")]
    assert [v["field"] for v in request["field_violations"]] == ["prompt_template.template_id"]

    assert http.delete("/v1/promptTemplates").status_code == 405
    unknown = http.post("/v1/promptTemplates", json={"prompt_template": {}, "no_such_field": 1})
    assert unknown.status_code == 400 and unknown.json()["code"] == 3


def test_openapi_document_lists_the_routes(http: httpx.Client) -> None:
    answer = http.get("/openapi.json")
    assert answer.status_code == 200
    document = answer.json()
    assert document["swagger"] == "2.0"
    assert {"/v1/generate", "/v1/promptTemplates", "/v1/trainingJobs/{id}:watch"} <= set(
        document["paths"]
    )
    assert document == json.loads((ROOT / "docs" / "openapi" / "llmops.swagger.json").read_text())


def test_request_ids_round_trip_and_only_allowed_headers_reach_the_server(
    http: httpx.Client, backend: ServerThread
) -> None:
    given = http.get("/v1/promptTemplates/summarization", headers={"x-request-id": "rest-rt-1"})
    assert given.status_code == 200 and given.headers["x-request-id"] == "rest-rt-1"
    made = http.get("/v1/promptTemplates/summarization").headers["x-request-id"]
    assert len(made) == 32
    # The server saw the gateway's id: it reports it in the error's RequestInfo.
    smuggled = {"x-request-id": "rest-rt-2", "grpc-metadata-x-request-id": "smuggled"}
    error = http.get("/v1/models/ghost", headers=smuggled).json()
    request_ids = [d["request_id"] for d in error["details"] if "request_id" in d]
    assert request_ids == ["rest-rt-2"]

    # With auth on, a key works in Authorization, and not when smuggled as Grpc-Metadata-*
    # (grpc-gateway's default would pass that on as `authorization`).
    key = create_key(db_of(backend), "reader", "gateway test")
    try:
        bearer = f"Bearer {key.secret}"
        path = "/v1/promptTemplates/summarization"
        assert http.get(path, headers={"authorization": bearer}).status_code == 200
        refused = http.get(path, headers={"grpc-metadata-authorization": bearer, "x-evil": "1"})
        assert refused.status_code == 401 and refused.json()["code"] == 16
    finally:
        revoke_key(db_of(backend), key.key_id)


def test_a_watch_streams_ndjson_one_event_at_a_time(
    http: httpx.Client, url: str, tmp_path: Path
) -> None:
    uri = make_base_model_dir(tmp_path, "watch-base")
    model = {"name": "watch-base", "kind": "MODEL_KIND_BASE", "uri": str(uri)}
    assert http.post("/v1/models", json={"model": model}).status_code == 200
    create = {"method": "TRAINING_METHOD_SFT", "base_model": "watch-base", "dataset": "demo-sft"}
    job = http.post("/v1/trainingJobs", json=create).json()
    assert job["state"] == "JOB_STATE_QUEUED", job

    with subprocess.Popen(
        ["curl", "-sS", "-N", f"{url}/v1/trainingJobs/{job['id']}:watch"],
        stdout=subprocess.PIPE,
        text=True,
    ) as watch:
        try:
            assert watch.stdout is not None
            # The QUEUED event arrives while the job (and so the stream) is still open.
            first = json.loads(watch.stdout.readline())["result"]
            assert (first["sequence"], first["state"]) == ("1", "JOB_STATE_QUEUED")  # int64: str
            cancelled = http.post(f"/v1/trainingJobs/{job['id']}:cancel", json={})
            assert cancelled.json()["state"] == "JOB_STATE_CANCELLED"
            second = json.loads(watch.stdout.readline())["result"]
            assert second["state"] == "JOB_STATE_CANCELLED"
            assert watch.stdout.read() == ""  # the stream ends with the job
        finally:
            if watch.poll() is None:
                watch.kill()
    assert watch.wait(10) == 0

    status, body = curl(f"{url}/v1/trainingJobs/ftjob-000000000000:watch")
    assert status == 404 and json.loads(body)["error"]["code"] == 5


def test_generate_with_a_template_as_in_the_brief(
    http: httpx.Client, url: str, tiny_models: TinyModels
) -> None:
    model = {"name": "llmops-tiny", "kind": "MODEL_KIND_BASE", "uri": str(tiny_models.base)}
    registered = http.post("/v1/models", json={"model": model})
    assert registered.status_code == 200, registered.text
    body = {"prompt": "The cat sat on the mat.", "template_id": "summarization"}
    status, text = curl(
        "-X", "POST", f"{url}/v1/generate",
        "-H", "content-type: application/json",
        "-d", json.dumps(body),
    )  # fmt: skip
    assert status == 200, text
    answer = json.loads(text)
    assert answer["model"] == registered.json()["id"]  # the default model, llmops-tiny
    assert "The cat sat on the mat." in answer["rendered_prompt"]
    assert isinstance(answer["text"], str) and answer["usage"]["completion_tokens"] > 0

    limited = {**body, "sampling": {"max_new_tokens": 4}}
    with http.stream("POST", "/v1/generate:stream", json={"request": limited}) as stream:
        lines = [json.loads(line) for line in stream.iter_lines() if line]
    assert stream.status_code == 200
    assert all("result" in line for line in lines)
    assert lines[-1]["result"]["finish_reason"] == "FINISH_REASON_LENGTH"


def test_readyz_follows_the_backend(binary: Path, tmp_path: Path) -> None:
    server = ServerThread(make_settings(tmp_path / "data")).start()
    gateway = start_gateway(binary, server.address)
    try:
        with httpx.Client(base_url=gateway.url, timeout=10) as http:
            assert http.get("/readyz").status_code == 200
            server.stop()
            assert poll(lambda: http.get("/readyz").status_code, 503) == 503
            assert http.get("/readyz").json()["status"] != "SERVING"
            assert http.get("/healthz").status_code == 200  # the gateway itself is up
            assert http.get("/v1/promptTemplates").status_code == 503  # UNAVAILABLE
    finally:
        gateway.stop()
        server.stop()
    assert gateway.process is not None and gateway.process.returncode == 0


def poll(read: Any, want: object, timeout: float = 15) -> object:
    """Reads until it returns `want` or `timeout` seconds pass; returns the last value."""
    deadline = time.monotonic() + timeout
    value = read()
    while value != want and time.monotonic() < deadline:
        time.sleep(0.05)
        value = read()
    return value


def llmops(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "llmops", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


def test_llmops_gateway_runs_the_binary_and_stops_on_sigterm(backend: ServerThread) -> None:
    with llmops(
        "gateway", "--http-port", "0", "--host", "127.0.0.1", "--backend", backend.address
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("llmops-gateway listening on http://127.0.0.1:"), line
            address = line.split()[3]
            assert httpx.get(f"{address}/readyz", timeout=10).status_code == 200
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0, stderr
    assert '"msg":"gateway stopped"' in stderr


def test_llmops_gateway_without_the_binary_says_how_to_build_it(tmp_path: Path) -> None:
    missing = {"LLMOPS_GATEWAY_BINARY": str(tmp_path / "none")}
    with llmops("gateway", env=missing) as process:
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 1 and stdout == ""
    assert stderr.count("\n") == 1 and "is not an executable file" in stderr
    assert "make gateway" in stderr


def test_up_without_the_binary_still_serves_grpc(tmp_path: Path) -> None:
    env = {"LLMOPS_GATEWAY_BINARY": str(tmp_path / "none")}
    command = ["up", "--grpc-port", "0", "--http-port", "0", "--metrics-port", "-1"]
    command += ["--workers", "0", "--data-dir", str(tmp_path / "data")]
    with llmops(*command, env=env) as process:
        try:
            assert process.stdout is not None
            lines = [process.stdout.readline() for _ in range(2)]
            assert lines[0].startswith("gRPC"), lines
            assert lines[1].startswith("REST     not started: ") and "make gateway" in lines[1]
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0, stderr
