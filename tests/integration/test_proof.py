"""Proof that the platform customizes a model: the demo of the core loop (`scripts/demo.py`, what
`make demo` runs) with its `ci` profile, against a real server with `production` protected, a
private Redis and one worker process, with the real tiny models. It asserts on the
`summary.json` the demo writes: the base fails the gates and the SFT adapter passes them, the
base is refused `production` and the adapter gets it, DPO raises held-out preference accuracy,
QLoRA trains a 4-bit adapter that lowers the held-out loss, and the distilled student beats the
untrained one. The figures of a full run are in docs/demo.md; this test asserts the verdicts and
the direction, not the numbers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import llmops
from llmops.v1 import jobs_pb2, registry_service_pb2, training_service_pb2
from scripts import demo
from tests.conftest import ServerThread, make_settings
from tests.integration.test_gateway import start_gateway
from tests.integration.workers import Workers
from tests.stored import local_copy

# Building the tiny models and training them take minutes, not seconds.
pytestmark = pytest.mark.timeout(2400)


@pytest.fixture(scope="module")
def proof_rest(proof_stack: ServerThread, binary: Path) -> Iterator[str]:
    """The REST gateway in front of the proof's server, as `llmops up` starts it."""
    gateway = start_gateway(binary, proof_stack.address)
    yield gateway.url
    gateway.stop()


@pytest.fixture(scope="module")
def proof_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    data_dir = tmp_path_factory.mktemp("proof")
    settings = make_settings(data_dir, reconcile_seconds=1, protected_aliases=["production"])
    server = ServerThread(settings).start()
    pool = Workers(server)
    pool.start()
    yield server
    pool.stop()
    server.stop()


def _metric(summary: dict[str, Any], run: str, key: str) -> float:
    return float(summary["eval_runs"][run]["metrics"][key])


def test_the_demo_proves_the_core_loop(proof_stack: ServerThread, proof_rest: str) -> None:
    data_dir: Path = proof_stack.settings.data_dir
    argv = ["--address", proof_stack.address, "--rest-url", proof_rest]
    argv += ["--data-dir", str(data_dir), "--profile", "ci"]
    code = demo.main(argv, console=Console(width=160))
    summary = json.loads((data_dir / "summary.json").read_text())
    unmet = [c for c in summary["checks"] if not c["passed"]]
    assert code == 0 and summary["proof_holds"], (summary["error"], unmet)
    assert len(summary["checks"]) == 12 and not unmet
    runs, steps = summary["eval_runs"], summary["steps"]

    # the gates: the base fails every one, the SFT adapter (default hyperparameters) passes all
    assert steps["sft"]["hyperparameters"] == "defaults"
    assert not runs["eval-base"]["gate_passed"]
    assert not any(g["passed"] for g in runs["eval-base"]["gates"])
    assert runs["eval-sft"]["gate_passed"] and len(runs["eval-sft"]["gates"]) == 3

    # promotion: refused to the base with one GATE violation per gate, given to the adapter
    promotion = steps["promotion"]
    assert promotion["base_refused"]
    assert [v["type"] for v in promotion["violations"]] == ["GATE"] * 3
    with llmops.Client(proof_stack.address, timeout=30) as client:
        adapter = steps["sft"]["result_model"]
        assert client.models.get(f"{client.models.get(adapter).name}@production").id == adapter
        qlora = client.training.get(steps["qlora"]["job"]["job"])
        assert qlora.state == jobs_pb2.JOB_STATE_SUCCEEDED
        assert qlora.method == training_service_pb2.TRAINING_METHOD_QLORA

    # served through its alias, the adapter answers the held-out prompts as by its id, and
    # differently from the base; its answers come from the model, not from the demo
    serving = steps["serving"]
    assert serving["model"].endswith("@production")
    assert serving["adapter_answers"] != serving["base_answers"]
    # the same answers through REST (curl's request) and the OpenAI SDK, on the same adapter
    assert serving["rest_answers"] == serving["openai_answers"] == serving["adapter_answers"]
    with llmops.Client(proof_stack.address, timeout=30) as client:
        prompt = serving["prompts"][0]
        again = client.inference.generate(
            serving["model"],
            template_id=prompt["template"],
            text=prompt["text"],
            max_new_tokens=24,
            stop=["\n"],
        )
        assert again.text.strip() == serving["adapter_answers"][0]

    # the merge job registered a merged model whose lineage points at the adapter
    merge = steps["merge"]
    with llmops.Client(proof_stack.address, timeout=30) as client:
        merged = client.models.get(merge["merged_model"])
        assert merged.kind == registry_service_pb2.MODEL_KIND_MERGED
        assert merged.origin.parent_model == steps["sft"]["result_model"]
        assert merged.origin.merge_job == merge["job"]

    # DPO from the adapter raises its preference accuracy on held-out pairs
    key = "preference/preference_accuracy"
    assert _metric(summary, "pairs-dpo", key) > _metric(summary, "pairs-sft", key)

    # the QLoRA adapter lowers the held-out loss of the base
    assert _metric(summary, "eval-qlora", "all/loss") < _metric(summary, "eval-base", "all/loss")

    # the adapter teaches the smaller student
    for task in ("summarization", "classification", "extraction"):
        before = _metric(summary, "eval-student", f"{task}/loss")
        assert _metric(summary, "eval-distilled", f"{task}/loss") < before / 2, task
    for key in ("summarization/rougeL_f1", "classification/accuracy"):
        assert _metric(summary, "eval-distilled", key) > _metric(summary, "eval-student", key)

    # every eval run left its report in the store
    for label, run in runs.items():
        report = local_copy(data_dir, run["report_uri"])  # the store's, or a copy of it
        assert (report / "summary.json").is_file() and (report / "report.md").is_file(), label
    assert list(steps) == [
        "tiny models",
        "sft",
        "eval",
        "promotion",
        "serving",
        "merge",
        "dpo",
        "qlora",
        "distill",
    ]
    assert all(steps[name]["seconds"] > 0 for name in ("sft", "eval", "dpo", "qlora", "distill"))
