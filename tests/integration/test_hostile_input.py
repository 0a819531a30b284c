"""Hostile input at the REST and OpenAI doors, through the real gateway to a real server with the
tiny model: JSON nested a hundred thousand deep, bodies over the limit, bytes that are not UTF-8,
numbers out of every range, a prompt far past the model's context, names that climb out of the
store, and an upload whose rows are traps. Each is refused with a 4xx that says why; nothing
answers 5xx, nothing is written outside the data directory, and the server goes on serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmops_services.gateway import GatewayProcess
from tests.conftest import ServerThread, make_settings

BODY_LIMIT = 1 << 20


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, binary: Path) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("hostile") / "data"
    settings = make_settings(data_dir, inference_threads=1, inference_device="cpu")
    server = ServerThread(settings).start()
    gateway = GatewayProcess(binary, server.address, "127.0.0.1:0", grace=2)
    gateway.command += ["-max-body-bytes", str(BODY_LIMIT)]
    gateway.start()
    try:
        model = {"name": "llmops-tiny", "kind": "MODEL_KIND_BASE", "uri": str(tiny_model)}
        assert httpx.post(f"{gateway.url}/v1/models", json={"model": model}).status_code == 200
        yield gateway.url
    finally:
        gateway.stop()
        server.stop()


@pytest.fixture
def http(door: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=door, timeout=60) as client:
        yield client


def refused(answer: httpx.Response, status: int, says: str) -> None:
    assert answer.status_code == status, (answer.status_code, answer.text[:500])
    assert says.lower() in answer.text.lower(), answer.text[:500]


def test_json_bombs_and_bodies_over_the_limit(http: httpx.Client) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    for path in ("/v1/generate", "/openai/v1/chat/completions", "/openai/v1/completions"):
        answer = http.post(path, content=deep, headers={"content-type": "application/json"})
        assert 400 <= answer.status_code < 500, (path, answer.status_code, answer.text[:300])
    nested = {"prompt": "x", "sampling": json.loads("{" + '"a":{' * 50 + "}" * 51)}
    assert 400 <= http.post("/v1/generate", json=nested).status_code < 500
    huge = {"prompt": "x" * (BODY_LIMIT + 10)}
    refused(http.post("/v1/generate", json=huge), 413, "larger than")
    chat = {"model": "llmops-tiny", "messages": [{"role": "user", "content": "x" * BODY_LIMIT}]}
    assert http.post("/openai/v1/chat/completions", json=chat).status_code == 413


def test_bytes_that_are_not_utf8_and_numbers_out_of_range(http: httpx.Client) -> None:
    latin1 = b'{"prompt": "caf\xe9"}'
    answer = http.post("/v1/generate", content=latin1, headers={"content-type": "application/json"})
    assert 400 <= answer.status_code < 500, answer.text
    openai_latin1 = b'{"model": "llmops-tiny", "prompt": "caf\xe9"}'
    answer = http.post(
        "/openai/v1/completions",
        content=openai_latin1,
        headers={"content-type": "application/json"},
    )
    assert 400 <= answer.status_code < 500, answer.text
    for sampling in (
        {"max_new_tokens": -1},
        {"max_new_tokens": 2**31},
        {"temperature": 1e308},
        {"top_k": "9" * 30},
        {"seed": "99999999999999999999999"},
        {"n": -5},
    ):
        answer = http.post("/v1/generate", json={"prompt": "x", "sampling": sampling})
        assert answer.status_code == 400, (sampling, answer.text)
    for body in (
        {"model": "llmops-tiny", "prompt": "x", "max_tokens": -3},
        {"model": "llmops-tiny", "prompt": "x", "max_tokens": 10**30},
        {"model": "llmops-tiny", "prompt": "x", "temperature": "hot"},
        {"model": "llmops-tiny", "prompt": "x", "n": 10**9},
    ):
        answer = http.post("/openai/v1/completions", json=body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["type"] == "invalid_request_error", answer.text


def test_nul_characters_are_refused_naming_the_field(http: httpx.Client) -> None:
    """No request needs U+0000, and PostgreSQL cannot store it: refused before any lookup."""
    answer = http.post("/v1/generate", json={"model": "llmops-tiny\u0000", "prompt": "x"})
    refused(answer, 400, "must not contain NUL")
    (bad,) = [d for d in answer.json()["details"] if d["@type"].endswith("google.rpc.BadRequest")]
    assert [v["field"] for v in bad["field_violations"]] == ["model"], answer.text
    model = {"name": "tiny\u0000", "kind": "MODEL_KIND_BASE", "uri": "/tmp"}
    refused(http.post("/v1/models", json={"model": model}), 400, "model.name")
    chat = {"model": "llmops-tiny", "messages": [{"role": "user", "content": "a\u0000b"}]}
    answer = http.post("/openai/v1/chat/completions", json=chat)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "invalid_request_error", answer.text


def test_a_prompt_far_past_the_context_is_refused_naming_the_limit(http: httpx.Client) -> None:
    bomb = "hello " * 100_000  # 600 KB: under the body limit, far over 512 positions
    refused(http.post("/v1/generate", json={"prompt": bomb}), 400, "prompt")
    answer = http.post(
        "/openai/v1/chat/completions",
        json={"model": "llmops-tiny", "messages": [{"role": "user", "content": bomb}]},
    )
    assert answer.status_code == 400 and answer.json()["error"]["param"], answer.text


def test_names_and_uris_that_climb_out_are_refused(http: httpx.Client, door: str) -> None:
    for name in ("../escape", "/etc/passwd", "a/b", "..", "x\x00y", "name@alias"):
        model = {"name": name, "kind": "MODEL_KIND_BASE", "uri": "/tmp"}
        assert http.post("/v1/models", json={"model": model}).status_code == 400, name
    for uri in ("store://../../etc", "store:///etc/passwd", "store://a/../../../b"):
        model = {"name": "climber", "kind": "MODEL_KIND_BASE", "uri": uri}
        refused(http.post("/v1/models", json={"model": model}), 400, "model.uri")
    for ref in ("..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd"):
        assert http.get(f"/v1/models/{ref}").status_code in (400, 404)
        assert http.get(f"/v1/datasets/{ref}").status_code in (400, 404)


def test_an_upload_with_trap_rows_is_refused_row_by_row(http: httpx.Client) -> None:
    rows = [
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(),
        b"\xff\xfe not utf-8",
        b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"prompt": "' + b"p" * 2_000_000 + b'"}',
        b"[1, 2, 3]",
    ]
    files = {"file": ("trap.jsonl", b"\n".join(rows), "application/jsonl")}
    answer = http.post("/openai/v1/files", files=files, data={"purpose": "fine-tune"})
    assert answer.status_code in (400, 413), answer.text[:500]
    assert http.get("/healthz").status_code == 200
    listed = http.get("/openai/v1/files").json()
    assert all(f["filename"] != "trap.jsonl" for f in listed["data"])


def test_the_server_is_still_serving(http: httpx.Client) -> None:
    answer = http.post("/v1/generate", json={"prompt": "Hello", "sampling": {"max_new_tokens": 2}})
    assert answer.status_code == 200, answer.text
