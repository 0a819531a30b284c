"""One trace end to end, as an OTLP receiver gets it from every process: a REST call through the
real gateway binary, the Training service, the queue, the worker's attempt and the Registry call
that registers the adapter (and an eval run's attempt likewise); and an OpenAI chat completion
through the gateway to the Inference service and its engine span."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from llmops_services.gateway import GatewayProcess
from llmops_services.jobs.private_redis import PrivateRedis, free_port
from tests.integration.test_tracing import Collector, ReceivedSpan, receiving, serving
from tests.integration.workers import FAST, Workers

GATEWAY = "llmops-gateway"
SERVICES = "llmops"
WORKER = "llmops-worker"


@dataclass
class Stack:
    collector: Collector
    otlp_endpoint: str
    redis_url: str
    data_dir: Path
    address: str  # the services' gRPC address
    url: str  # the gateway's
    metrics_url: str  # the gateway's Prometheus endpoint


@pytest.fixture(scope="module")
def traced(
    binary: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The services (one process), a Redis, a worker and the gateway, all exporting to one
    receiver, with the base model `tiny` registered."""
    root = tmp_path_factory.mktemp("traces")
    collector = Collector()
    redis = PrivateRedis(root / "redis").start()
    try:
        with (
            receiving(collector) as endpoint,
            serving(
                endpoint,
                root / "data",
                log=root / "serve.log",
                LLMOPS_REDIS_URL=redis.url,
                LLMOPS_SERVICE_NAME=SERVICES,
            ) as address,
        ):
            metrics = f"127.0.0.1:{free_port()}"
            env = {
                **os.environ,
                "LLMOPS_OTLP_ENDPOINT": endpoint,
                "LLMOPS_SERVICE_NAME": SERVICES,
                "LLMOPS_GATEWAY_METRICS_LISTEN": metrics,
            }
            gateway = GatewayProcess(binary, address, "127.0.0.1:0", grace=2, env=env)
            url = gateway.start(timeout=30)
            workers = Workers(redis_url=redis.url, data_dir=root / "data")
            try:
                workers.start(
                    LLMOPS_OTLP_ENDPOINT=endpoint,
                    LLMOPS_SERVICE_NAME=SERVICES,
                    LLMOPS_REGISTRY_ADDRESS=address,
                )
                model = {"name": "tiny", "kind": "MODEL_KIND_BASE", "uri": str(tiny_model)}
                registered = httpx.post(f"{url}/v1/models", json={"model": model}, timeout=30)
                assert registered.status_code == 200, registered.text
                yield Stack(
                    collector,
                    endpoint,
                    redis.url,
                    root / "data",
                    address,
                    url,
                    f"http://{metrics}/metrics",
                )
            finally:
                workers.stop()
                gateway.stop()
    finally:
        redis.stop()


def _traceparent() -> tuple[str, str, str]:
    """A caller's trace id, span id and the `traceparent` header naming them."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def _one(spans: list[ReceivedSpan], service: str, name: str) -> ReceivedSpan:
    (span,) = [s for s in spans if (s.service, s.name) == (service, name)]
    return span


def _assert_one_tree(spans: list[ReceivedSpan], root: ReceivedSpan, caller: str) -> None:
    """Every span's parent is in the trace, except the root's, which is the caller's span."""
    ids = {s.span_id for s in spans}
    assert root.parent_span_id == caller
    orphans = [s.name for s in spans if s is not root and s.parent_span_id not in ids]
    assert not orphans, orphans


def _ancestors(spans: list[ReceivedSpan], span: ReceivedSpan) -> list[ReceivedSpan]:
    by_id = {s.span_id: s for s in spans}
    chain = []
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        chain.append(span)
    return chain


def _assert_http_server_span(span: ReceivedSpan, method: str, path: str, status: int) -> None:
    assert span.kind == "SPAN_KIND_SERVER"
    assert span.name == f"{method} {path}"
    assert span.attributes["http.request.method"] == method
    assert span.attributes["url.path"] == path
    assert span.attributes["http.route"] == path
    assert span.attributes["http.response.status_code"] == status


@pytest.mark.timeout(300)
def test_a_rest_training_job_is_one_trace_from_gateway_to_registry(traced: Stack) -> None:
    trace_id, caller, traceparent = _traceparent()
    create = {
        "method": "TRAINING_METHOD_SFT",
        "base_model": "tiny",
        "dataset": "demo-sft",
        "hyperparameters": {**FAST, "max_steps": 2},
    }
    with httpx.Client(base_url=traced.url, timeout=30) as http:
        created = http.post("/v1/trainingJobs", json=create, headers={"traceparent": traceparent})
        assert created.status_code == 200, created.text
        job_id = created.json()["id"]
        spans = traced.collector.wait_for_trace(
            trace_id,
            {
                (GATEWAY, "POST /v1/trainingJobs"),
                (GATEWAY, "llmops.v1.TrainingService/CreateTrainingJob"),
                (SERVICES, "/llmops.v1.TrainingService/CreateTrainingJob"),
                (WORKER, "llmops.training.attempt"),
                (WORKER, "llmops.job.register"),
                (SERVICES, "/llmops.v1.RegistryService/CreateModel"),
            },
            timeout=240,
        )
        assert http.get(f"/v1/trainingJobs/{job_id}").json()["state"] == "JOB_STATE_SUCCEEDED"

    server = _one(spans, GATEWAY, "POST /v1/trainingJobs")
    _assert_http_server_span(server, "POST", "/v1/trainingJobs", 200)
    client = _one(spans, GATEWAY, "llmops.v1.TrainingService/CreateTrainingJob")
    assert client.kind == "SPAN_KIND_CLIENT" and client.parent_span_id == server.span_id
    create_span = _one(spans, SERVICES, "/llmops.v1.TrainingService/CreateTrainingJob")
    assert create_span.kind == "SPAN_KIND_SERVER" and create_span.parent_span_id == client.span_id
    # The queue hop: the job row keeps the create call's traceparent; the attempt is its child.
    attempt = _one(spans, WORKER, "llmops.training.attempt")
    assert attempt.kind == "SPAN_KIND_CONSUMER" and attempt.parent_span_id == create_span.span_id
    assert attempt.attributes["llmops.job.id"] == job_id
    register = _one(spans, WORKER, "llmops.job.register")
    assert register.parent_span_id == attempt.span_id
    registered = _one(spans, SERVICES, "/llmops.v1.RegistryService/CreateModel")
    assert registered.parent_span_id == register.span_id
    assert [s.span_id for s in _ancestors(spans, registered)] == [
        register.span_id,
        attempt.span_id,
        create_span.span_id,
        client.span_id,
        server.span_id,
    ]
    _assert_one_tree(spans, server, caller)


@pytest.mark.timeout(120)
def test_an_openai_chat_completion_is_one_trace_from_gateway_to_engine(traced: Stack) -> None:
    trace_id, caller, traceparent = _traceparent()
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}
    answer = httpx.post(
        f"{traced.url}/openai/v1/chat/completions",
        json=body,
        headers={"traceparent": traceparent},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    spans = traced.collector.wait_for_trace(
        trace_id,
        {
            (GATEWAY, "POST /openai/v1/chat/completions"),
            (GATEWAY, "llmops.v1.InferenceService/Generate"),
            (SERVICES, "/llmops.v1.InferenceService/Generate"),
            (SERVICES, "chat tiny"),
        },
        timeout=60,
    )
    server = _one(spans, GATEWAY, "POST /openai/v1/chat/completions")
    _assert_http_server_span(server, "POST", "/openai/v1/chat/completions", 200)
    client = _one(spans, GATEWAY, "llmops.v1.InferenceService/Generate")
    assert client.kind == "SPAN_KIND_CLIENT" and client.parent_span_id == server.span_id
    generate = _one(spans, SERVICES, "/llmops.v1.InferenceService/Generate")
    assert generate.parent_span_id == client.span_id
    engine = _one(spans, SERVICES, "chat tiny")
    assert engine.parent_span_id == generate.span_id
    usage = answer.json()["usage"]
    assert engine.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    _assert_one_tree(spans, server, caller)
    # The request was measured before its span ended (and so before the receiver had it).
    scraped = httpx.get(traced.metrics_url, timeout=10).text
    assert (
        "llmops_gateway_http_request_duration_seconds_count"
        '{code="200",method="POST",route="/openai/v1/chat/completions"} 1'
    ) in scraped


@pytest.mark.timeout(300)
def test_an_eval_runs_attempt_continues_the_trace_of_the_call_that_created_it(
    traced: Stack,
) -> None:
    trace_id, caller, traceparent = _traceparent()
    create = {
        "model": "tiny",
        "dataset": "demo-eval",
        "limit": 4,
        "generation": {"max_new_tokens": 4, "batch_size": 4},
    }
    with httpx.Client(base_url=traced.url, timeout=30) as http:
        created = http.post("/v1/evalRuns", json=create, headers={"traceparent": traceparent})
        assert created.status_code == 200, created.text
    spans = traced.collector.wait_for_trace(
        trace_id,
        {
            (GATEWAY, "POST /v1/evalRuns"),
            (SERVICES, "/llmops.v1.EvalService/CreateEvalRun"),
            (WORKER, "llmops.eval.attempt"),
        },
        timeout=240,
    )
    create_span = _one(spans, SERVICES, "/llmops.v1.EvalService/CreateEvalRun")
    attempt = _one(spans, WORKER, "llmops.eval.attempt")
    assert attempt.parent_span_id == create_span.span_id
    assert attempt.attributes["llmops.job.id"] == created.json()["id"]
    _assert_one_tree(spans, _one(spans, GATEWAY, "POST /v1/evalRuns"), caller)
