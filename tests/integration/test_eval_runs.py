"""Eval runs end to end: a real server, a private Redis, a real worker process and a tiny model.
A run measures every task of demo-eval, writes its report to the store and is judged by the
gates; the Eval service checks requests before anything is queued."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import llmops
from llmops.v1 import eval_service_pb2 as pb
from llmops.v1 import jobs_pb2
from tests.conftest import ServerThread, make_settings
from tests.integration.test_cli_commands import cli, rows
from tests.integration.workers import ROOT, TERMINAL, Workers, until
from tests.stored import local_copy

GENERATION = pb.GenerationConfig(max_new_tokens=8, batch_size=8)


@pytest.fixture
def stack(data_dir: Path) -> Iterator[ServerThread]:
    gates = data_dir / "eval_gates.yaml"
    gates.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "config" / "eval_gates.yaml", gates)
    settings = make_settings(
        data_dir,
        job_lease_seconds=8,
        reconcile_seconds=0.5,
        eval_gates_file=gates,
        protected_aliases=["production"],
    )
    running = ServerThread(settings).start()
    yield running
    running.stop()


def _store_path(stack: ServerThread, uri: str) -> Path:
    return local_copy(stack.settings.data_dir, uri)


def _wait(client: llmops.Client, run_id: str) -> pb.EvalRun:
    until(lambda: client.eval.get(run_id).state in TERMINAL, 300, "the eval run")
    return client.eval.get(run_id).message


@pytest.mark.timeout(900)  # five eval runs through one worker
def test_an_eval_run_measures_every_task_reports_and_is_judged_by_the_gates(
    stack: ServerThread, workers: Workers, tiny_model: Path
) -> None:
    workers.start()
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        run = client.eval.create("tiny", "demo-eval", gate=True, limit=12, generation=GENERATION)
        assert run.state == jobs_pb2.JOB_STATE_QUEUED and run.gate
        done = _wait(client, run.id)
        assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.error.message
        assert done.progress.step == done.progress.total_steps == 12
        measured = {(m.task, m.metric): m for m in done.metrics}
        assert {
            ("summarization", "rougeL_f1"),
            ("classification", "accuracy"),
            ("extraction", "exact_match"),
            ("all", "loss"),
        } <= set(measured)
        assert sum(m.count for (t, n), m in measured.items() if n == "loss" and t != "all") == 12
        scores = [m.value for (_, n), m in measured.items() if n not in ("loss", "perplexity")]
        assert all(0.0 <= value <= 1.0 for value in scores)
        gates = {(g.task, g.metric): g for g in done.gates}
        assert set(gates) == {
            ("extraction", "exact_match"),
            ("classification", "accuracy"),
            ("summarization", "rougeL_f1"),
        }
        assert not done.gate_passed  # a barely pretrained base fails the gates
        for key, gate in gates.items():
            assert gate.value == pytest.approx(measured[key].value)
            assert gate.passed == (gate.value >= gate.threshold)
        report = _store_path(stack, done.report_uri)
        summary = json.loads((report / "summary.json").read_text())
        assert summary["examples"] == 12
        rows = (report / "examples.jsonl").read_text().splitlines()
        assert len(rows) == 12 and {"prediction", "reference", "score"} <= set(json.loads(rows[0]))
        assert "| task |" in (report / "report.md").read_text()

        _promotion_follows_the_gates(client, stack, run.id)

        preference = client.eval.create("tiny", "demo-preference", limit=6)
        pref = _wait(client, preference.id)
        assert pref.state == jobs_pb2.JOB_STATE_SUCCEEDED, pref.error.message
        assert ("preference", "preference_accuracy") in {(m.task, m.metric) for m in pref.metrics}
        assert not pref.gates  # not a gated run

        again = client.eval.create("tiny", "demo-eval", limit=12, generation=GENERATION)
        second = _wait(client, again.id)
        compared = client.eval.compare(run.id, second.id)
        rows_by_key = {(r.task, r.metric): r for r in compared.rows}
        greedy = rows_by_key[("extraction", "exact_match")]
        assert greedy.delta == 0.0 and greedy.first == greedy.second  # greedy is deterministic
        assert [r.id for r in client.eval.list(model="tiny")] == [again.id, preference.id, run.id]
    _the_cli_reports_runs_and_fails_on_a_gate(stack, run.id, again.id)


def _the_cli_reports_runs_and_fails_on_a_gate(stack: ServerThread, first: str, second: str) -> None:
    gated = cli(stack, "eval", "run", "-m", "tiny", "-d", "demo-eval", "--gate", "--wait")
    assert gated.code == 1 and "failed the gates: extraction/exact_match" in gated.err
    assert "GATE" in gated.out and "FAIL" in gated.out and "report: store://evals/" in gated.out
    assert len(gated.err.strip().splitlines()) == 1 and "Traceback" not in gated.err
    compared = cli(stack, "eval", "compare", first, second, "--output", "json").json()
    compared_keys = {(r["task"], r["metric"]) for r in compared["rows"]}
    assert ("extraction", "exact_match") in compared_keys
    shown = cli(stack, "eval", "show", first, "--output", "json").json()
    assert shown["id"] == first and shown["gate"] is True
    listed = rows(cli(stack, "eval", "list", "--model", "tiny").ok().out)
    assert len(listed) == 4 and listed[1]["ID"] == second and listed[-1]["ID"] == first
    assert listed[-1]["GATES"] == "FAILED" and listed[1]["GATES"] == "-"
    refused = cli(stack, "eval", "run", "-m", "tiny", "-d", "demo-sft")
    assert refused.refused("INVALID_ARGUMENT") and "dataset" in refused.err


def test_eval_requests_are_checked_before_anything_is_queued(
    stack: ServerThread, tiny_model: Path, tmp_path: Path
) -> None:
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
        with pytest.raises(llmops.InvalidArgument) as wrong_kind:
            client.eval.create("tiny", "demo-sft")
        assert wrong_kind.value.field_violations[0].field == "dataset"
        with pytest.raises(llmops.InvalidArgument) as bad_generation:
            client.eval.create(
                "tiny",
                "demo-eval",
                generation=pb.GenerationConfig(max_new_tokens=100_000, top_p=2, batch_size=5000),
            )
        fields = {v.field for v in bad_generation.value.field_violations}
        assert fields == {
            "generation.max_new_tokens",
            "generation.top_p",
            "generation.batch_size",
        }
        with pytest.raises(llmops.InvalidArgument) as bad_task:
            client.eval.create("tiny", "demo-eval", task="translation")
        assert bad_task.value.field_violations[0].field == "task"
        with pytest.raises(llmops.NotFound):
            client.eval.create("nope", "demo-eval")
        with pytest.raises(llmops.NotFound):
            client.eval.create("tiny", "nope")
        first = client.eval.create("tiny", "demo-eval", idempotency_key="k1")
        assert client.eval.create("tiny", "demo-eval", idempotency_key="k1").id == first.id
        cancelled = client.eval.cancel(first.id)
        assert cancelled.state == jobs_pb2.JOB_STATE_CANCELLED
        with pytest.raises(llmops.FailedPrecondition):
            client.eval.cancel(first.id)
        with pytest.raises(llmops.NotFound):
            client.training.get(first.id)  # an eval run is not a training job
        assert [e.state for e in client.eval.events(first.id)][-1] == jobs_pb2.JOB_STATE_CANCELLED
        assert list(client.eval.list()) == [client.eval.get(first.id)]


def test_a_broken_gates_file_refuses_gated_runs(data_dir: Path, tiny_model: Path) -> None:
    gates = data_dir / "gates.yaml"
    gates.parent.mkdir(parents=True, exist_ok=True)
    gates.write_text("gates:\n  - {task: extraction, metric: exact_match}\n")
    server = ServerThread(make_settings(data_dir, eval_gates_file=gates)).start()
    try:
        with llmops.Client(server.address, timeout=30) as client:
            client.models.create("tiny", str(tiny_model))
            with pytest.raises(llmops.FailedPrecondition) as refused:
                client.eval.create("tiny", "demo-eval", gate=True)
            assert "gates[0] needs `min` or `no_worse_than`" in str(refused.value)
            assert client.eval.create("tiny", "demo-eval").state == jobs_pb2.JOB_STATE_QUEUED
    finally:
        server.stop()


def _promotion_follows_the_gates(client: llmops.Client, stack: ServerThread, run_id: str) -> None:
    """`production` is refused while the gated run fails, forced by an admin, and allowed by the
    same run once the gates file (read when judged) asks for less."""
    with pytest.raises(llmops.FailedPrecondition) as refused:
        client.models.set_alias("tiny", "production")
    assert "fails the gates for 'production'" in str(refused.value)
    assert {v.type for v in refused.value.precondition_violations} == {"GATE"}
    assert "extraction/exact_match" in str(refused.value)
    client.models.set_alias("tiny", "staging")  # not protected
    forced = client.models.set_alias("tiny", "production", force=True, reason="hotfix")
    assert forced.alias == "production"
    (move,) = [m for m in client.models.alias_history("tiny", "production")]
    assert move.forced and move.reason == "hotfix" and not move.eval_run
    client.models.delete_alias("tiny", "production")
    assert stack.settings.eval_gates_file is not None
    strict = stack.settings.eval_gates_file.read_text()
    stack.settings.eval_gates_file.write_text(
        "gates:\n  - {task: extraction, metric: exact_match, min: 0.0}\n"
    )
    assert client.eval.get(run_id).gate_passed
    client.models.set_alias("tiny", "production", reason="passed the gates")
    latest = next(iter(client.models.alias_history("tiny", "production")))
    assert latest.eval_run == run_id and not latest.forced
    first = latest.to_model
    # an admin moves production to a second version; once the gates are strict again, rolling
    # back to the first version needs the same passing gated run as moving it there did
    second = client.models.create("tiny", client.models.get(first).uri)
    client.models.set_alias(second.id, "production", force=True, reason="v2 hotfix")
    stack.settings.eval_gates_file.write_text(strict)
    assert not client.eval.get(run_id).gate_passed
    with pytest.raises(llmops.FailedPrecondition) as gated:
        client.models.rollback("tiny", "production", reason="v2 regressed")
    assert {v.type for v in gated.value.precondition_violations} == {"GATE"}
    assert client.models.get("tiny@production").id == second.id  # nothing moved
    back = client.models.rollback("tiny", "production", reason="v2 regressed", force=True)
    assert back.model == first
    moves = list(client.models.alias_history("tiny", "production"))
    assert [(m.from_model, m.to_model, m.forced) for m in moves[:2]] == [
        (second.id, first, True),
        (first, second.id, True),
    ]
    client.models.delete_alias("tiny", "production")
    client.models.delete(second.id)
