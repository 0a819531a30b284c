"""schemathesis against the gateway's own `/openapi.json`: every operation of the REST API gets
generated requests (schema-valid and schema-violating ones) through the real gateway binary to a
real server, and none may answer a 5xx or a body that is not JSON (NDJSON for streams).

The document is loaded as served: it states the rules the gateway enforces (no unknown fields,
int64 as digit strings; scripts/tighten_openapi.py), so "schema-valid" requests are valid ones.
The server has the tiny model registered as the default model (`llmops-tiny`), and the Generate
operations get a third pass with a fixed prompt and generated `sampling`, so odd sampling values
reach the engine (`max_new_tokens` is capped by the service: above `inference_max_new_tokens`
is refused, below it the model's context bounds it). Training, merge and eval jobs created here
are only queued: no worker runs. Generated ids never name a real job, so the `:watch` streams
answer 404 at once.

The OpenAI-compatible routes get the same from their own OpenAPI 3.0 document
(`/openai/v1/openapi.json`, written by hand beside the handlers): their streams are server-sent
events, and chat and text completions get a pass with the served model and at most 8 new tokens,
so that the other generated fields reach the engine.

Requests are not shrunk (each operation's first failure is recorded with its curl command and
the answer, and the run goes on), the examples are derandomized (the same requests every run),
and no Hypothesis database is written. About 25 s on 2 busy cores for the REST routes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from llmops_services.gateway import GatewayProcess
from tests.conftest import ServerThread, make_settings

POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
# Generated GenerateRequests almost never pass validation (a prompt, or a template with text, or
# messages, but one of them): these passes send a fixed prompt with the generated `sampling`, so
# odd sampling values reach the engine.
GENERATION = {"POST /v1/generate", "POST /v1/generate:stream"}


def with_generated_sampling(case: Any) -> None:
    """Keeps the generated `sampling` of a Generate or StreamGenerate body, with a fixed prompt."""
    stream = case.operation.label.endswith(":stream")
    body = case.body.get("request") if stream else case.body
    sampling = body.get("sampling") if isinstance(body, dict) else None
    request = {"prompt": "The cat sat on the mat.", "sampling": sampling or {}}
    case.body = {"request": request} if stream else request


@pytest.fixture(scope="module")
def gateway_url(
    binary: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("openapi-fuzz") / "data"
    settings_ = make_settings(data_dir, inference_threads=1, inference_device="cpu")
    server = ServerThread(settings_).start()
    gateway = GatewayProcess(binary, server.address, "127.0.0.1:0", grace=2)
    try:
        gateway.start(timeout=30)
        model = {"name": "llmops-tiny", "kind": "MODEL_KIND_BASE", "uri": str(tiny_model)}
        made = httpx.post(f"{gateway.url}/v1/models", json={"model": model}, timeout=60)
        assert made.status_code == 200, made.text
        yield gateway.url
    finally:
        gateway.stop()
        server.stop()


def not_json(response: schemathesis.Response) -> str:
    """Why the body is not JSON (a stream: one JSON value per \\n-separated line; U+2028 and
    U+0085 may stand raw in JSON strings, so not `splitlines`; server-sent events: a JSON value
    or `[DONE]` after each `data: `), or '' when it is."""
    content_types = response.headers.get("content-type", [])
    events = bool(content_types) and content_types[0].startswith("text/event-stream")
    if not content_types or not (content_types[0].startswith("application/json") or events):
        return f"content-type {content_types!r}"
    lines = [line for line in response.content.decode().split("\n") if line.strip()]
    if not lines:
        return "empty body"
    for line in lines:
        if events:
            if not line.startswith("data: "):
                return f"not an event line: {line[:200]!r}"
            line = line.removeprefix("data: ")
            if line == "[DONE]":
                continue
        try:
            json.loads(line)
        except ValueError as error:
            return f"not JSON ({error}): {line[:200]!r}"
    return ""


@dataclass
class Fuzzed:
    """What a run over a document's operations found."""

    operations: int
    calls: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    unnegatable: list[str] = field(default_factory=list)
    answered: dict[str, set[int]] = field(default_factory=dict)

    def succeeded(self) -> set[str]:
        return {label for label, codes in self.answered.items() if any(c < 300 for c in codes)}


Fix = Callable[[Any], None]


def fuzz_document(
    document: dict[str, Any],
    base_url: str,
    passes: Callable[[str], list[tuple[Any, int, Fix | None]]],
) -> Fuzzed:
    """Every operation of `document`, each in the passes `passes(label)` gives (generation mode,
    examples, a fix applied to each case or None), against `base_url`."""
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    found = Fuzzed(len(operations))
    session = requests.Session()

    def fuzz(
        operation: Any, mode: schemathesis.GenerationMode, examples: int, fix: Fix | None
    ) -> None:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=examples,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            if fix is not None:
                fix(case)
            response = case.call(base_url=base_url, session=session, timeout=60)
            found.calls += 1
            found.answered.setdefault(case.operation.label, set()).add(response.status_code)
            problem = ""
            try:
                case.validate_response(response, checks=[not_a_server_error])
            except Exception as error:  # schemathesis' check failures
                problem = f"{type(error).__name__}: {error}"
            problem = problem or not_json(response)
            if problem and case.operation.label not in found.failures:
                found.failures[case.operation.label] = (
                    f"{problem}\n  request: {case.as_curl_command()}\n"
                    f"  response: {response.status_code} {response.content[:500]!r}"
                )

        try:
            run()
        except Unsatisfiable:
            # Nothing to make invalid (every input a free string): the positive pass covers it.
            assert mode is NEGATIVE, operation.label
            found.unnegatable.append(operation.label)

    for operation in operations:
        for mode, examples, fix in passes(operation.label):
            fuzz(operation, mode, examples, fix)
    return found


def rest_passes(label: str) -> list[tuple[Any, int, Fix | None]]:
    extra = [(POSITIVE, 10, with_generated_sampling)] if label in GENERATION else []
    return [(POSITIVE, 10, None), (NEGATIVE, 5, None), *extra]


def test_no_operation_answers_a_server_error_or_a_body_that_is_not_json(gateway_url: str) -> None:
    served = httpx.get(f"{gateway_url}/openapi.json", timeout=30)
    assert served.status_code == 200
    found = fuzz_document(served.json(), gateway_url, rest_passes)
    assert found.operations >= 40, found.operations
    assert not found.failures, "\n\n".join(f"{k}: {v}" for k, v in found.failures.items())
    # Only operations whose inputs are all free strings (ids in the path) have no invalid form.
    assert len(found.unnegatable) < found.operations // 2, found.unnegatable
    assert found.calls >= found.operations * 8
    # Not only refusals: valid requests got through to the services (generation included).
    assert len(found.succeeded()) >= 10, found.answered
    assert found.succeeded() >= GENERATION, {label: found.answered[label] for label in GENERATION}


OPENAI_GENERATION = {"POST /chat/completions", "POST /completions"}


def with_the_served_model(case: Any) -> None:
    """A generated chat or completion body with the served model and at most 8 new tokens each
    (generated `n` and `max_tokens` could otherwise ask the tiny model for thousands), so that
    the other generated fields reach the engine."""
    if not isinstance(case.body, dict):
        return
    case.body["model"] = "llmops-tiny"
    for name in ("max_tokens", "max_completion_tokens"):
        if isinstance(case.body.get(name), int):
            case.body[name] = max(1, min(case.body[name], 8))
    if "max_completion_tokens" not in case.body:
        case.body.setdefault("max_tokens", 8)


def openai_passes(label: str) -> list[tuple[Any, int, Fix | None]]:
    extra = [(POSITIVE, 15, with_the_served_model)] if label in OPENAI_GENERATION else []
    return [(POSITIVE, 8, None), (NEGATIVE, 5, None), *extra]


def test_no_openai_operation_answers_a_server_error_or_a_body_that_is_not_json(
    gateway_url: str,
) -> None:
    """The same over the OpenAI-compatible routes, from their own document
    (`/openai/v1/openapi.json`): streams are server-sent events, errors OpenAI's JSON shape."""
    served = httpx.get(f"{gateway_url}/openai/v1/openapi.json", timeout=30)
    assert served.status_code == 200 and served.json()["openapi"].startswith("3.")
    found = fuzz_document(served.json(), f"{gateway_url}/openai/v1", openai_passes)
    assert found.operations == 15, found.operations
    assert not found.failures, "\n\n".join(f"{k}: {v}" for k, v in found.failures.items())
    assert found.succeeded() >= OPENAI_GENERATION | {"GET /models"}, found.answered


def test_a_huge_max_new_tokens_is_refused_not_run(gateway_url: str) -> None:
    body = {"prompt": "Hello", "sampling": {"max_new_tokens": 2**31 - 1}}
    answer = httpx.post(f"{gateway_url}/v1/generate", json=body, timeout=30)
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == 3
