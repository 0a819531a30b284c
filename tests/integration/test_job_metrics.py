"""The job gauges every alert on jobs reads (deploy/prometheus/alerts.yaml): jobs of every kind by
state and the age of the oldest queued one, scraped over HTTP from a running server. No worker
runs, so what is queued stays queued."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

import llmops
from llmops.v1 import jobs_pb2
from tests.conftest import ServerThread

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape(metrics_url: str) -> Samples:
    """Every sample the server exposes, keyed by name and labels."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _jobs(samples: Samples, kind: str, state: str) -> float:
    return samples[("llmops_jobs", frozenset({"kind": kind, "state": state}.items()))]


def _oldest(samples: Samples, kind: str) -> float:
    return samples[("llmops_jobs_queue_oldest_age_seconds", frozenset({"kind": kind}.items()))]


def test_jobs_of_every_kind_by_state_and_the_oldest_queued(
    stack: ServerThread, tiny_model: Path
) -> None:
    empty = _scrape(stack.metrics_url)
    for kind in ("training", "eval", "merge"):
        for state in ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"):
            assert _jobs(empty, kind, state) == 0
        assert _oldest(empty, kind) == 0
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        run = client.eval.create("tiny", "demo-eval", limit=2)
        assert run.state == jobs_pb2.JOB_STATE_QUEUED
        job = client.training.create("sft", "tiny", "demo-sft", hyperparameters={"max_steps": 1})
        client.training.cancel(job.id)
        assert client.training.get(job.id).state == jobs_pb2.JOB_STATE_CANCELLED

    served = _scrape(stack.metrics_url)
    assert _jobs(served, "eval", "QUEUED") == 1
    assert _jobs(served, "training", "CANCELLED") == 1
    assert _jobs(served, "training", "QUEUED") == 0
    assert _jobs(served, "merge", "QUEUED") == 0
    assert _oldest(served, "eval") > 0
    assert _oldest(served, "training") == 0  # its only job was cancelled
    assert _oldest(served, "merge") == 0
    # the by-method training gauges agree with the by-kind ones
    by_method = {
        (dict(labels)["method"], dict(labels)["state"]): value
        for (name, labels), value in served.items()
        if name == "llmops_training_jobs"
    }
    assert by_method[("sft", "CANCELLED")] == 1
    assert sum(v for (_, state), v in by_method.items() if state == "CANCELLED") == 1
    assert sum(by_method.values()) == 1
    assert len(by_method) == 4 * 7  # every method and state, 0 when none
