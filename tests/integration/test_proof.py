"""Proof that the platform customizes a model, with the real tiny models and default settings:
on the held-out demo-eval split the base fails the bundled gates and the SFT adapter passes
them, DPO from the adapter raises its preference accuracy on held-out pairs, and the distilled
student scores above the untrained one. Numbers of a full run are in
docs/evaluation.md; this test asserts the verdicts and the direction, not the numbers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import llmops
from llmops.v1 import eval_service_pb2 as pb
from llmops.v1 import jobs_pb2
from llmops_workers.tiny import ensure_tiny_models
from tests.conftest import ServerThread, make_settings
from tests.integration.test_training_worker import TERMINAL, Workers, until

# Building the tiny models and training with default settings take minutes, not seconds.
pytestmark = pytest.mark.timeout(2400)

# Greedy answers of the demo tasks are a few words: 24 new tokens cover every reference.
GENERATION = pb.GenerationConfig(max_new_tokens=24, batch_size=32)
PAIRS = "demo-preference-test"


@pytest.fixture(scope="module")
def proof_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    data_dir = tmp_path_factory.mktemp("proof")
    settings = make_settings(data_dir, reconcile_seconds=1, protected_aliases=["production"])
    server = ServerThread(settings).start()
    pool = Workers(server)
    pool.start()
    with llmops.Client(server.address, timeout=30) as client:
        for name, path in ensure_tiny_models(data_dir / "models").items():
            client.models.create(name, str(path))
    yield server
    pool.stop()
    server.stop()


def _scores(run: pb.EvalRun) -> dict[tuple[str, str], float]:
    return {(m.task, m.metric): m.value for m in run.metrics}


def _evaluate(
    client: llmops.Client, model: str, gate: bool = True, dataset: str = "demo-eval"
) -> pb.EvalRun:
    run = client.eval.create(model, dataset, gate=gate, generation=GENERATION)
    until(lambda: client.eval.get(run.id).state in TERMINAL, 600, f"the eval of {model}")
    done = client.eval.get(run.id)
    assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.error.message
    return done


def _train(client: llmops.Client, method: str, base: str, dataset: str, **kw: str) -> str:
    job = client.training.create(method, base, dataset, **kw)  # type: ignore[arg-type]
    until(lambda: client.training.get(job.id).state in TERMINAL, 900, f"the {method} job")
    done = client.training.get(job.id)
    assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.error.message
    return done.result_model


def test_the_base_fails_the_gates_the_sft_adapter_passes_and_distillation_helps(
    proof_stack: ServerThread,
) -> None:
    with llmops.Client(proof_stack.address, timeout=30) as client:
        base = _evaluate(client, "llmops-tiny")
        assert not base.gate_passed and not any(g.passed for g in base.gates)
        with pytest.raises(llmops.FailedPrecondition):
            client.models.set_alias("llmops-tiny", "production")
        adapter = _train(client, "sft", "llmops-tiny", "demo-sft")
        tuned = _evaluate(client, adapter)
        assert tuned.gate_passed, [g.description for g in tuned.gates]
        client.models.set_alias(adapter, "production", reason="passed the gates")
        assert client.models.get("llmops-tiny-sft@production").id == adapter

        # DPO from the adapter raises its preference accuracy on held-out pairs
        pairs_before = _scores(_evaluate(client, adapter, gate=False, dataset=PAIRS))
        preferred = _train(client, "dpo", "llmops-tiny", "demo-preference", parent_model=adapter)
        pairs_after = _scores(_evaluate(client, preferred, gate=False, dataset=PAIRS))
        key = ("preference", "preference_accuracy")
        assert pairs_after[key] > pairs_before[key], (pairs_before, pairs_after)

        # the adapter then teaches the smaller student
        teacher = adapter
        before = _scores(_evaluate(client, "llmops-tiny-student", gate=False))
        student = _train(
            client, "distill", "llmops-tiny-student", "demo-sft", teacher_model=teacher
        )
        after = _scores(_evaluate(client, student, gate=False))
        for task in ("summarization", "classification", "extraction"):
            assert after[(task, "loss")] < before[(task, "loss")] / 2, task
        assert after[("summarization", "rougeL_f1")] > before[("summarization", "rougeL_f1")]
        assert after[("classification", "accuracy")] > before[("classification", "accuracy")]
