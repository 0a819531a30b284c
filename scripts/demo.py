"""The platform's core loop, end to end through the SDK, against a running stack.

`make demo` starts a stack (`llmops up`) and runs this script against it; the proof test runs
it against a test server. In order:

1. SFT (LoRA) of `llmops-tiny` on `demo-sft`, every hyperparameter at its default;
2. gated eval runs on `demo-eval`: the base model fails the gates, the SFT adapter passes them;
3. promotion: `production` is refused to the base (FAILED_PRECONDITION, one GATE violation per
   failing gate) and given to the adapter, which is then served through that alias: held-out
   prompts answered by the base and by `name@production` side by side (and, with `--rest-url`,
   the same answers through the REST gateway and the OpenAI SDK); the adapter is then
   merged into its base (a merge job) and the merged model gives the adapter's answers;
4. DPO from the SFT adapter on `demo-preference`, scored on the held-out pairs of
   `demo-preference-test` before (SFT adapter) and after (DPO adapter);
5. QLoRA (4-bit NF4 base) SFT of `llmops-tiny`, its adapter scored on `demo-eval`;
6. distillation of `llmops-tiny-student` from the SFT adapter, the student scored before and
   after.

It prints a summary table, writes `summary.json` into the data dir, and exits 1 when the proof
does not hold (a job fails, the base passes the gates, the adapter fails them, the base is
promoted, DPO does not raise preference accuracy, QLoRA or distillation does not improve the
model). Every figure comes from the runs it makes; nothing is reused from an earlier demo.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.table import Table

import llmops
from llmops.v1 import eval_service_pb2, jobs_pb2

ROOT = Path(__file__).resolve().parents[1]
BASE = "llmops-tiny"
STUDENT = "llmops-tiny-student"
EVAL_SET = "demo-eval"
PAIRS = "demo-preference-test"
PRODUCTION = "production"
TRAINING_TIMEOUT = 1800.0
EVAL_TIMEOUT = 900.0
POLL = 0.5
HELD_OUT = (
    # Rows of demo-eval (never trained on), one per task, as the template's {text}.
    ("extraction", "In Berlin, the new lawyer Clara Turing starts work on Friday.", "Clara Turing"),
    (
        "classification",
        "Our group chat was full of photos of the web browser and the mobile app.",
        "technology",
    ),
    (
        "summarization",
        "On Tuesday, Hugo Jensen opened a museum in Athens. Hugo did it after years of planning.",
        "Hugo Jensen opened a museum in Athens on Tuesday.",
    ),
)


@dataclass(frozen=True)
class Profile:
    """How much the demo runs. `full` is what `make demo` runs; `ci` is the same loop with a
    shorter QLoRA job and fewer eval rows, for the CI budget. SFT and DPO keep their default
    hyperparameters in both: SFT at 300 steps left classification below its gate, and DPO at 150
    steps lowered held-out preference accuracy (0.920 → 0.893) in a CI run."""

    name: str
    eval_limit: int
    """The first rows of demo-eval each generation eval scores (0: all 300; the tasks are
    interleaved, so any prefix has all three)."""
    qlora_steps: int
    dpo_steps: int
    distill_steps: int
    """0 leaves the method's default."""
    max_new_tokens: int = 24
    """Greedy answers of the demo tasks are a few words: 24 new tokens cover every reference."""
    batch_size: int = 32


PROFILES = {
    "full": Profile("full", eval_limit=0, qlora_steps=450, dpo_steps=0, distill_steps=0),
    "ci": Profile("ci", eval_limit=90, qlora_steps=100, dpo_steps=0, distill_steps=0),
}


class ProofFailed(Exception):
    """A job or run did not end as the demo needs; the message says which and why."""


class _Job(Protocol):
    """What the demo reads of a training job or an eval run (attributes only)."""

    @property
    def id(self) -> str: ...
    @property
    def state(self) -> jobs_pb2.JobState.ValueType: ...


@dataclass
class Line:
    """One row of the summary table."""

    step: str
    seconds: float | None
    metric: str
    before: str
    after: str
    verdict: str = ""


@dataclass
class Check:
    """One claim of the proof and whether this run bears it out."""

    name: str
    passed: bool
    detail: str


@dataclass
class Demo:
    """One run of the demo against one stack."""

    client: llmops.Client
    rest_url: str
    """The stack's REST gateway; empty: REST and the OpenAI SDK are not asked."""
    console: Console
    profile: Profile
    data_dir: Path
    run_id: str
    threads: int
    """Torch threads for building the tiny models (no job runs meanwhile, so all the cores)."""
    lines: list[Line] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)

    # --- plumbing --------------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.console.print(f"[dim]{datetime.now():%H:%M:%S}[/dim] {text}")

    def key(self, what: str) -> str:
        """An idempotency key unique to this run: a retried create returns the same job, a
        second demo makes new ones."""
        return f"demo-{self.run_id}-{what}"

    def check(self, name: str, passed: bool, detail: str) -> None:
        self.checks.append(Check(name, passed, detail))
        mark = "[green]holds[/green]" if passed else "[red]DOES NOT HOLD[/red]"
        self.say(f"check: {name}: {mark} ({detail})")

    def generation(self) -> eval_service_pb2.GenerationConfig:
        return eval_service_pb2.GenerationConfig(
            max_new_tokens=self.profile.max_new_tokens, batch_size=self.profile.batch_size
        )

    def _finished(self, what: str, job: _Job, started: float, error: str) -> None:
        state = jobs_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")
        self.say(f"{what}: {job.id} {state} after {time.monotonic() - started:.0f} s")
        if job.state != jobs_pb2.JOB_STATE_SUCCEEDED:
            raise ProofFailed(f"{what} ({job.id}) ended {state}: {error or 'no error given'}")

    # --- building blocks -------------------------------------------------------------------

    def train(
        self, label: str, method: str, base_model: str, dataset: str, **options: Any
    ) -> dict[str, Any]:
        """Runs one training job to its end; returns what the summary keeps of it."""
        started = time.monotonic()
        job = self.client.training.create(
            method, base_model, dataset, idempotency_key=self.key(label), **options
        )
        self.say(f"{label}: {method} job {job.id} of {base_model} on {dataset} queued")
        done = self.client.training.wait(job.id, timeout=TRAINING_TIMEOUT, poll_interval=POLL)
        self._finished(f"{label} job", done, started, done.error.message)
        losses = [
            float(event.metrics["loss"])
            for event in self.client.training.events(done.id)
            if event.type == jobs_pb2.JOB_EVENT_TYPE_METRICS and "loss" in event.metrics
        ]
        record = {
            "job": done.id,
            "method": method,
            "base_model": base_model,
            "dataset": dataset,
            "result_model": done.result_model,
            "steps": done.progress.step,
            "first_logged_loss": losses[0] if losses else None,
            "last_logged_loss": losses[-1] if losses else None,
            "metrics": {k: float(v) for k, v in done.metrics.items()},
            "hyperparameters": options.get("hyperparameters") or "defaults",
            "resolved": _resolved(done.resolved_hyperparameters),
            "seconds": round(time.monotonic() - started, 1),
        }
        if not done.result_model:
            raise ProofFailed(f"{label} job {done.id} succeeded without a model")
        return record

    def evaluate(
        self, label: str, model: str, dataset: str = EVAL_SET, *, gate: bool = False
    ) -> dict[str, Any]:
        """Runs one eval run to its end; returns its scores, gate verdicts and report."""
        started = time.monotonic()
        limit = self.profile.eval_limit if dataset == EVAL_SET else 0
        run = self.client.eval.create(
            model,
            dataset,
            gate=gate,
            limit=limit,
            generation=self.generation(),
            idempotency_key=self.key(label),
        )
        self.say(f"{label}: eval run {run.id} of {model} on {dataset} queued")
        done = self.client.eval.wait(run.id, timeout=EVAL_TIMEOUT, poll_interval=POLL)
        self._finished(f"{label} eval run", done, started, done.error.message)
        record: dict[str, Any] = {
            "run": done.id,
            "model": model,
            "dataset": dataset,
            "limit": limit,
            "gate": gate,
            "metrics": {f"{m.task}/{m.metric}": float(m.value) for m in done.metrics},
            "report_uri": done.report_uri,
            "report": self.report_path(done.report_uri),
            "seconds": round(time.monotonic() - started, 1),
        }
        if gate:
            record["gate_passed"] = bool(done.gate_passed)
            record["gates"] = [
                {
                    "task": g.task,
                    "metric": g.metric,
                    "value": float(g.value),
                    "passed": bool(g.passed),
                    "description": g.description,
                }
                for g in done.gates
            ]
        self.evals[label] = record
        return record

    def report_path(self, uri: str) -> str:
        """The local path of a report in the embedded default's store, else the URI."""
        prefix = "store://"
        if uri.startswith(prefix):
            local = self.data_dir / "store" / uri.removeprefix(prefix)
            if local.is_dir():
                return str(local)
        return uri

    def step(self, name: str, started: float, **record: Any) -> float:
        seconds = round(time.monotonic() - started, 1)
        self.steps[name] = {"seconds": seconds, **record}
        return seconds

    # --- the loop --------------------------------------------------------------------------

    def tiny_models(self) -> dict[str, str]:
        """Builds the tiny models once per data dir (kept, and locked against a concurrent
        build) and registers each unless that name already points at that directory."""
        from llmops_workers.tiny import describe, ensure_tiny_models

        started = time.monotonic()
        root = self.data_dir / "models"
        missing = [name for name in (BASE, STUDENT) if not (root / name).is_dir()]
        self.say(f"tiny models: {'building ' + ', '.join(missing) if missing else 'cached'}")
        ids: dict[str, str] = {}
        for name, path in ensure_tiny_models(root, threads=self.threads).items():
            existing = [m for m in self.client.models.list("base", name) if m.uri == str(path)]
            if existing:
                ids[name] = existing[0].id
            else:
                ids[name] = self.client.models.create(
                    name, str(path), description=describe(path)
                ).id
        seconds = self.step("tiny models", started, built=missing, models=ids, threads=self.threads)
        self.lines.append(
            Line("tiny models", seconds, "built" if missing else "cached", "", ", ".join(ids))
        )
        return ids

    def sft(self) -> str:
        started = time.monotonic()
        job = self.train("sft", "sft", BASE, "demo-sft")
        seconds = self.step("sft", started, **job)
        self.lines.append(
            Line(f"1 SFT (LoRA), {job['steps']} steps", seconds, "train loss (logged)", *_pair(job))
        )
        return str(job["result_model"])

    def gates(self, adapter: str) -> tuple[dict[str, Any], dict[str, Any]]:
        started = time.monotonic()
        base = self.evaluate("eval-base", BASE, gate=True)
        tuned = self.evaluate("eval-sft", adapter, gate=True)
        seconds = self.step("eval", started, base=base["run"], adapter=tuned["run"])
        tuned_gates = {(g["task"], g["metric"]): g for g in tuned["gates"]}
        for i, gate in enumerate(base["gates"]):
            after = tuned_gates.get((gate["task"], gate["metric"]), {})
            self.lines.append(
                Line(
                    "2 eval + gates" if i == 0 else "",
                    seconds if i == 0 else None,
                    f"{gate['task']} {gate['metric']}",
                    f"{gate['value']:.3f}",
                    f"{after.get('value', float('nan')):.3f}",
                    f"{_mark(gate['passed'])} → {_mark(bool(after.get('passed')))}",
                )
            )
        self.lines.append(
            Line(
                "",
                None,
                "all gates",
                "",
                "",
                f"{_verdict(base)} → {_verdict(tuned)}",
            )
        )
        for gate in base["gates"]:
            self.say(f"  base: {gate['description']}")
        for gate in tuned["gates"]:
            self.say(f"  adapter: {gate['description']}")
        self.check(
            "the base model fails the gates",
            not base["gate_passed"],
            f"{sum(not g['passed'] for g in base['gates'])} of {len(base['gates'])} gates failed",
        )
        self.check(
            "the SFT adapter passes the gates",
            tuned["gate_passed"],
            f"{sum(g['passed'] for g in tuned['gates'])} of {len(tuned['gates'])} gates passed",
        )
        return base, tuned

    def promote(self, adapter: str, adapter_run: str) -> None:
        started = time.monotonic()
        refused: list[dict[str, str]] = []
        try:
            self.client.models.set_alias(BASE, PRODUCTION, reason="demo: try the base")
            self.say(f"[red]{PRODUCTION} was given to the base model {BASE}[/red]")
        except llmops.FailedPrecondition as error:
            refused = [
                {"type": v.type, "subject": v.subject, "description": v.description}
                for v in error.precondition_violations
            ]
            self.say(f"{PRODUCTION} → {BASE} refused: {error.code.name}")
            for v in error.precondition_violations:
                self.say(f"  {v.type} {v.subject}: {v.description}")
        gate_violations = [v for v in refused if v["type"] == "GATE"]
        self.check(
            f"{PRODUCTION} is refused to the base model",
            bool(gate_violations),
            f"FAILED_PRECONDITION with {len(gate_violations)} GATE violations"
            if gate_violations
            else "the move was allowed",
        )
        alias = self.client.models.set_alias(
            adapter, PRODUCTION, reason=f"passed gated eval run {adapter_run}"
        )
        name = self.client.models.get(adapter).name
        now = self.client.models.get(f"{name}@{PRODUCTION}").id
        self.say(f"{PRODUCTION} → {name} ({adapter}) allowed")
        self.check(
            f"{PRODUCTION} is given to the SFT adapter",
            now == adapter,
            f"{name}@{PRODUCTION} is {now}",
        )
        seconds = self.step(
            "promotion",
            started,
            base_refused=bool(gate_violations),
            violations=refused,
            alias=f"{name}@{alias.alias}",
            adapter=adapter,
        )
        self.lines.append(
            Line(
                "3 promotion",
                seconds,
                f"{PRODUCTION} alias",
                f"base refused ({len(gate_violations)} GATE violations)"
                if gate_violations
                else "base ALLOWED",
                "adapter promoted",
                f"{'refused' if gate_violations else 'ALLOWED'} → allowed",
            )
        )

    def responses(self, model: str) -> list[Any]:
        """The model's greedy answers to the held-out prompts, through the Inference service."""
        return [
            self.client.inference.generate(
                model,
                template_id=template,
                text=text,
                max_new_tokens=self.profile.max_new_tokens,
                stop=["\n"],
            )
            for template, text, _ in HELD_OUT
        ]

    def answers(self, model: str) -> list[str]:
        return [response.text.strip() for response in self.responses(model)]

    def rest_answers(self, model: str, rendered: Sequence[str]) -> tuple[list[str], list[str]]:
        """The same answers through the REST gateway (`POST /v1/generate`, the body curl would
        send) and through the unmodified OpenAI SDK (`/openai/v1/completions` on the rendered
        prompts)."""
        import urllib.request

        import openai

        tokens = self.profile.max_new_tokens
        rest = []
        for template, text, _ in HELD_OUT:
            body = {
                "model": model,
                "template_id": template,
                "text": text,
                "sampling": {"max_new_tokens": tokens, "stop": ["\n"]},
            }
            request = urllib.request.Request(
                f"{self.rest_url}/v1/generate",
                data=json.dumps(body).encode(),
                headers={"content-type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                rest.append(json.load(response)["text"].strip())
        sdk = openai.OpenAI(base_url=f"{self.rest_url}/openai/v1", api_key="demo", timeout=60)
        completions = [
            sdk.completions.create(
                model=model, prompt=prompt, max_tokens=tokens, temperature=0, stop=["\n"]
            )
            for prompt in rendered
        ]
        return rest, [c.choices[0].text.strip() for c in completions]

    def serve(self, adapter: str) -> None:
        """Serves the promoted adapter through its alias, next to the base model."""
        started = time.monotonic()
        name = self.client.models.get(adapter).name
        served = f"{name}@{PRODUCTION}"
        base_answers = self.answers(BASE)
        alias_responses = self.responses(served)
        alias_answers = [response.text.strip() for response in alias_responses]
        id_answers = self.answers(adapter)
        table = Table(title=f"held-out prompts: {BASE} vs {served}")
        for column in ("template", "reference", BASE, served):
            table.add_column(column)
        for (template, _, reference), b, a in zip(
            HELD_OUT, base_answers, alias_answers, strict=True
        ):
            table.add_row(template, reference, b, a)
        self.console.print(table)
        right = [
            sum(a == ref for a, (_, _, ref) in zip(answers, HELD_OUT, strict=True))
            for answers in (base_answers, alias_answers)
        ]
        self.check(
            f"{served} serves the promoted adapter",
            alias_answers == id_answers,
            "same answers as its id" if alias_answers == id_answers else "answers differ",
        )
        self.check(
            "the adapter answers differently from the base",
            alias_answers != base_answers,
            f"exact answers: base {right[0]}/{len(HELD_OUT)}, adapter {right[1]}/{len(HELD_OUT)}",
        )
        rest: dict[str, list[str]] = {}
        if self.rest_url:
            rendered = [response.rendered_prompt for response in alias_responses]
            rest["rest_answers"], rest["openai_answers"] = self.rest_answers(served, rendered)
            same = rest["rest_answers"] == rest["openai_answers"] == alias_answers
            self.check(
                "REST (curl's request) and the OpenAI SDK give the gRPC answers",
                same,
                f"{self.rest_url}/v1/generate and /openai/v1/completions: "
                + ("the same answers" if same else "answers differ"),
            )
        seconds = self.step(
            "serving",
            started,
            model=served,
            **rest,
            prompts=[{"template": t, "text": x, "reference": r} for t, x, r in HELD_OUT],
            base_answers=base_answers,
            adapter_answers=alias_answers,
        )
        self.lines.append(
            Line(
                f"3b serving {served}",
                seconds,
                "held-out answers exact",
                f"base {right[0]}/{len(HELD_OUT)}",
                f"adapter {right[1]}/{len(HELD_OUT)}",
            )
        )

    def merge(self, adapter: str) -> None:
        """Merges the promoted adapter into its base and serves the merged model alone."""
        started = time.monotonic()
        job = self.client.models.merge(adapter, idempotency_key=self.key("merge"))
        self.say(f"merge: merge job {job.id} of {adapter} queued")
        job = job.wait(timeout=TRAINING_TIMEOUT, poll_interval=POLL)
        self._finished("merge job", job, started, job.error.message)
        merged = self.client.models.get(job.result_model)
        same = self.answers(merged.id) == self.steps["serving"]["adapter_answers"]
        self.check(
            "the merged model answers as the adapter",
            same,
            f"{merged.name} ({merged.id}): "
            + ("same greedy answers" if same else "different answers"),
        )
        seconds = self.step(
            "merge",
            started,
            job=job.id,
            merged_model=merged.id,
            parent=merged.origin.parent_model,
        )
        self.lines.append(
            Line(
                "3c merge into the base",
                seconds,
                "held-out answers",
                "adapter",
                "merged: " + ("same" if same else "DIFFERENT"),
            )
        )

    def dpo(self, adapter: str) -> None:
        started = time.monotonic()
        before = self.evaluate("pairs-sft", adapter, PAIRS)
        hp = {"max_steps": self.profile.dpo_steps} if self.profile.dpo_steps else None
        job = self.train(
            "dpo", "dpo", BASE, "demo-preference", parent_model=adapter, hyperparameters=hp
        )
        after = self.evaluate("pairs-dpo", str(job["result_model"]), PAIRS)
        key = "preference/preference_accuracy"
        b, a = before["metrics"][key], after["metrics"][key]
        seconds = self.step("dpo", started, job=job, before=before["run"], after=after["run"])
        self.lines.append(
            Line(
                f"4 DPO from the SFT adapter, {job['steps']} steps",
                seconds,
                "held-out pref. accuracy",
                f"{b:.3f}",
                f"{a:.3f}",
            )
        )
        self.check("DPO raises held-out preference accuracy", a > b, f"{b:.3f} → {a:.3f}")

    def qlora(self, base_run: Mapping[str, Any]) -> None:
        started = time.monotonic()
        job = self.train(
            "qlora",
            "qlora",
            BASE,
            "demo-sft",
            hyperparameters={"max_steps": self.profile.qlora_steps},
        )
        after = self.evaluate("eval-qlora", str(job["result_model"]), gate=True)
        seconds = self.step("qlora", started, job=job, eval=after["run"])
        key = "all/loss"
        b, a = base_run["metrics"][key], after["metrics"][key]
        self.lines.append(
            Line(
                f"5 QLoRA (4-bit NF4), {job['steps']} steps",
                seconds,
                "held-out loss (demo-eval)",
                f"{b:.3f}",
                f"{a:.3f}",
                f"{_verdict(base_run)} → {_verdict(after)}",
            )
        )
        match = "extraction/exact_match"
        self.lines.append(
            Line(
                "",
                None,
                "extraction exact_match",
                f"{base_run['metrics'][match]:.3f}",
                f"{after['metrics'][match]:.3f}",
            )
        )
        self.check("the QLoRA adapter lowers the held-out loss", a < b, f"{b:.3f} → {a:.3f}")

    def distill(self, teacher: str) -> None:
        started = time.monotonic()
        before = self.evaluate("eval-student", STUDENT)
        hp = {"max_steps": self.profile.distill_steps} if self.profile.distill_steps else None
        job = self.train(
            "distill", "distill", STUDENT, "demo-sft", teacher_model=teacher, hyperparameters=hp
        )
        after = self.evaluate("eval-distilled", str(job["result_model"]))
        seconds = self.step("distill", started, job=job, before=before["run"], after=after["run"])
        for i, key in enumerate(("classification/accuracy", "summarization/rougeL_f1")):
            b, a = before["metrics"][key], after["metrics"][key]
            self.lines.append(
                Line(
                    f"6 distillation, {job['steps']} steps" if i == 0 else "",
                    seconds if i == 0 else None,
                    f"student {key.replace('/', ' ')}",
                    f"{b:.3f}",
                    f"{a:.3f}",
                )
            )
            self.check(
                f"the distilled student beats the untrained one on {key}",
                a > b,
                f"{b:.3f} → {a:.3f}",
            )

    def run(self) -> None:
        self.tiny_models()
        adapter = self.sft()
        base, tuned = self.gates(adapter)
        self.promote(adapter, tuned["run"])
        self.serve(adapter)
        self.merge(adapter)
        self.dpo(adapter)
        self.qlora(base)
        self.distill(adapter)

    # --- output ----------------------------------------------------------------------------

    def table(self) -> Table:
        table = Table(title=f"llmops demo ({self.profile.name} profile, run {self.run_id})")
        for column, justify in (
            ("step", "left"),
            ("wall time", "right"),
            ("metric", "left"),
            ("before → after", "left"),
            ("gate verdict", "left"),
        ):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for line in self.lines:
            seconds = "" if line.seconds is None else f"{line.seconds:.0f} s"
            moved = " → ".join(part for part in (line.before, line.after) if part)
            table.add_row(line.step, seconds, line.metric, moved, line.verdict)
        return table


def _pair(job: Mapping[str, Any]) -> tuple[str, str]:
    first, last = job["first_logged_loss"], job["last_logged_loss"]
    return (
        f"{first:.3f}" if first is not None else "-",
        f"{last:.3f}" if last is not None else "-",
    )


def _resolved(hp: Any) -> dict[str, float | int]:
    """The main hyperparameters a job ran with (its defaults and auto values filled in)."""
    names = ("max_steps", "learning_rate", "per_device_train_batch_size", "lora_r", "beta")
    return {name: getattr(hp, name) for name in names if hp.HasField(name)}


def _mark(passed: bool) -> str:
    return "pass" if passed else "fail"


def _verdict(run: Mapping[str, Any]) -> str:
    """A gated run's verdict, with how many of its gates passed."""
    gates = run["gates"]
    passed = sum(bool(g["passed"]) for g in gates)
    return f"{_mark(run['gate_passed'])} ({passed}/{len(gates)})"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--address", help="the stack's gRPC address (default $LLMOPS_ADDRESS)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=ROOT / "artifacts" / "demo",
        help="the stack's data dir: tiny models, reports, summary.json (default artifacts/demo)",
    )
    parser.add_argument(
        "--rest-url", default="", help="the stack's REST gateway, to serve through it too"
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads for building the tiny models (default: every core)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, *, console: Console | None = None) -> int:
    """Runs the demo; 0 when the proof holds, 1 when it does not or a job fails."""
    args = parse_args(argv)
    out = console or Console(width=None if sys.stdout.isatty() else 132)
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    profile = PROFILES[args.profile]
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
    started = time.monotonic()
    error = ""
    with llmops.Client(args.address, timeout=60) as client:
        rest = args.rest_url.rstrip("/")
        demo = Demo(client, rest, out, profile, data_dir, run_id, max(1, args.threads))
        out.rule(f"llmops demo against {client.address} ({profile.name} profile)")
        try:
            demo.run()
        except (ProofFailed, llmops.LlmopsError, TimeoutError) as failed:
            error = f"{type(failed).__name__}: {failed}"
            out.print(f"[red]{error}[/red]")
    wall = round(time.monotonic() - started, 1)
    holds = not error and bool(demo.checks) and all(c.passed for c in demo.checks)
    summary = {
        "run_id": run_id,
        "profile": asdict(profile),
        "address": args.address or "",
        "data_dir": str(data_dir),
        "wall_seconds": wall,
        "proof_holds": holds,
        "error": error,
        "checks": [asdict(c) for c in demo.checks],
        "table": [asdict(line) for line in demo.lines],
        "steps": demo.steps,
        "eval_runs": demo.evals,
    }
    path = data_dir / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    out.print()
    out.print(demo.table())
    out.print(f"total wall time {wall:.0f} s")
    out.print("reports of the eval runs (summary.json, examples.jsonl, report.md):")
    for label, record in demo.evals.items():
        out.print(f"  {label:15} {record['run']}  {record['report']}")
    out.print(f"summary: {path}")
    unmet = [c.name for c in demo.checks if not c.passed]
    if holds:
        out.print("[bold green]the proof holds[/bold green]")
    else:
        out.print(f"[bold red]the proof does not hold[/bold red]: {'; '.join(unmet) or error}")
    return 0 if holds else 1


if __name__ == "__main__":
    sys.exit(main())
