"""The evaluation engine: the scoring rules (table-driven), the checks of a spec, and whole runs on
a tiny random Llama whose numbers are recomputed here with plain transformers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from llmops_workers.evaluation import (
    EvalResult,
    EvalSpec,
    TaskMetric,
    check_eval_spec,
    run_eval,
)
from llmops_workers.evaluation.examples import Example, load_examples
from llmops_workers.evaluation.metrics import (
    GenerationRecord,
    PreferenceRecord,
    Record,
    aggregate,
    classification_correct,
    normalize,
    rouge_l_f1,
    score_answer,
    task_metric,
)
from tests.tiny_models import TinyModels, read_rows, write_rows

LABELS = ("sports", "technology", "food", "travel")
GENERATION_METRICS = {
    "classification": ["accuracy", "loss", "perplexity"],
    "extraction": ["exact_match", "loss", "perplexity"],
    "summarization": ["rougeL_f1", "loss", "perplexity"],
}


@dataclass
class Recorder:
    """EvalEvents that remember every call and cancel at the given poll (0: never)."""

    cancel_at_poll: int = 0
    starts: list[int] = field(default_factory=list)
    progress: list[tuple[int, int, dict[str, float]]] = field(default_factory=list)
    polls: int = 0

    def on_start(self, total: int) -> None:
        self.starts.append(total)

    def on_progress(self, done: int, total: int, metrics: dict[str, float]) -> None:
        self.progress.append((done, total, metrics))

    def should_stop(self) -> bool:
        self.polls += 1
        return self.polls == self.cancel_at_poll


@dataclass
class Run:
    spec: EvalSpec
    result: EvalResult
    events: Recorder

    def rows(self) -> list[dict[str, Any]]:
        assert self.result.examples_path is not None
        lines = self.result.examples_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines]

    def summary(self) -> dict[str, Any]:
        assert self.result.summary_path is not None
        summary: dict[str, Any] = json.loads(self.result.summary_path.read_text(encoding="utf-8"))
        return summary


def make_spec(models: TinyModels, eval_file: Path, out: Path, **changes: Any) -> EvalSpec:
    values: dict[str, Any] = {
        "model_dir": models.base,
        "adapter_dir": None,
        "eval_file": eval_file,
        "output_dir": out,
        "max_new_tokens": 12,
        "batch_size": 8,
    }
    values.update(changes)
    return EvalSpec(**values)


def evaluate(spec: EvalSpec, events: Recorder | None = None) -> Run:
    recorder = events or Recorder()
    return Run(spec, run_eval(spec, recorder), recorder)


def metric_names(metrics: list[TaskMetric]) -> dict[str, list[str]]:
    names: dict[str, list[str]] = {}
    for metric in metrics:
        names.setdefault(metric.task, []).append(metric.metric)
    return names


# ---- normalization and scores -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        (" Clara Turing", "clara turing"),
        (' "Clara Turing."\nThe lawyer starts on Friday.', "clara turing"),
        ("\n\n  Technology!  \n", "technology"),
        ("Clara \t Turing", "clara turing"),
        ("'travel'", "travel"),
        ("\u201cFood\u201d \u2014", "food"),
        ("(sports)", "sports"),
        ("U.S. Army.", "u.s. army"),
        ("", ""),
        ("...", ""),
    ],
)
def test_normalize(text: str, normalized: str) -> None:
    assert normalize(text) == normalized


@pytest.mark.parametrize(
    ("answer", "reference", "score"),
    [
        (" Clara Turing", " Clara Turing", 1.0),
        ("clara turing.", " Clara Turing", 1.0),
        (' "Clara Turing"\nText: In Berlin, the new lawyer', " Clara Turing", 1.0),
        ("\nClara Turing", " Clara Turing", 1.0),
        ("Dr. Clara Turing", " Clara Turing", 0.0),
        ("Clara", " Clara Turing", 0.0),
        ("Clara Turing Clara Turing", " Clara Turing", 0.0),
        ("Clara Turing, Berlin", " Clara Turing", 0.0),
        ("", " Clara Turing", 0.0),
    ],
)
def test_extraction_is_an_exact_match_of_the_first_line(
    answer: str, reference: str, score: float
) -> None:
    assert score_answer("extraction", answer, reference) == score


def test_unknown_tasks_are_scored_by_exact_match() -> None:
    assert task_metric("translation") == task_metric("default") == "exact_match"
    assert score_answer("translation", " Hola.\n", "hola") == 1.0
    assert score_answer("translation", "hola amigo", "hola") == 0.0


@pytest.mark.parametrize(
    ("answer", "label", "correct"),
    [
        (" technology", "technology", True),
        ("Technology.", " technology", True),
        ('"technology"', "technology", True),
        ("technology, since the text is about a browser", "technology", True),
        ("technology\nsports food travel", "technology", True),
        ("sports", "technology", False),
        ("the topic is technology", "technology", False),
        ("technologies", "technology", False),
        ("technology-related", "technology", False),
        ("technology or sports", "technology", False),
        ("technology. Or maybe food.", "technology", False),
        ("sports, technology, food or travel", "sports", False),
        ("sports, technology, food or travel", "technology", False),
        ("", "technology", False),
    ],
)
def test_classification_takes_the_first_word_and_no_other_label(
    answer: str, label: str, correct: bool
) -> None:
    assert classification_correct(answer, label, LABELS) is correct


def test_listing_every_label_never_scores() -> None:
    """The prompt lists the labels; a model that copies the list must be wrong for every label."""
    listing = " sports, technology, food or travel"
    assert not any(classification_correct(listing, label, LABELS) for label in LABELS)
    assert score_answer("classification", listing, " sports", LABELS) == 0.0


@pytest.mark.parametrize(
    ("answer", "label", "correct"),
    [
        ("air travel", "air travel", True),
        ("Air travel, mostly.", "air travel", True),
        ("air", "air travel", False),
        ("travel", "air travel", False),
        ("air travel", "travel", False),  # starts with a longer label
        ("travel", "travel", True),
        ("travel, not air travel", "travel", False),
    ],
)
def test_classification_labels_of_several_words(answer: str, label: str, correct: bool) -> None:
    assert classification_correct(answer, label, ["air travel", "travel", "food"]) is correct


def test_rouge_l_comes_from_rouge_score_with_stemming() -> None:
    reference = " Hugo Jensen opened a museum in Athens on Tuesday."
    answer = "On Tuesday Hugo Jensen opened a museum."
    # Longest common subsequence "hugo jensen open a museum": 5 of the answer's 7 tokens and of
    # the reference's 9, so F1 = 2 * (5/7) * (5/9) / (5/7 + 5/9) = 0.625.
    assert rouge_l_f1(answer, reference) == pytest.approx(0.625)
    assert score_answer("summarization", answer, reference) == pytest.approx(0.625)
    assert rouge_l_f1("The museums opened.", "the museum opens") == pytest.approx(1.0)  # stems
    assert rouge_l_f1("", reference) == 0.0


def _generation(task: str, index: int, score: float, nll: float, tokens: int) -> GenerationRecord:
    example = Example(index, task, "p", "r")
    return GenerationRecord(example, "p", "a", score, nll, tokens)


def _preference(index: int, chosen: float, rejected: float) -> PreferenceRecord:
    example = Example(index, "preference", "p", "", "c", "r")
    return PreferenceRecord(example, "p", chosen, rejected, 3, 4)


def test_aggregate_weights_loss_by_token_and_pools_all_tasks() -> None:
    records: list[Record] = [
        _generation("classification", 0, 1.0, nll=2.0, tokens=2),
        _generation("classification", 1, 0.0, nll=6.0, tokens=4),
        _generation("summarization", 2, 0.5, nll=3.0, tokens=3),
        _generation("translation", 3, 1.0, nll=1.0, tokens=1),
        _generation("extraction", 4, 0.0, nll=2.0, tokens=1),
        _preference(5, chosen=-2.0, rejected=-5.0),
        _preference(6, chosen=-4.0, rejected=-3.0),
        _preference(7, chosen=-3.0, rejected=-3.0),  # a tie is no preference
    ]
    metrics = aggregate(records)
    values = {(m.task, m.metric): m.value for m in metrics}
    counts = {(m.task, m.metric): m.count for m in metrics}
    expected = {
        ("classification", "accuracy"): (0.5, 2),
        ("classification", "loss"): (8 / 6, 2),  # token-weighted: (2 + 6) / (2 + 4)
        ("classification", "perplexity"): (math.exp(8 / 6), 2),
        ("summarization", "rougeL_f1"): (0.5, 1),
        ("translation", "exact_match"): (1.0, 1),
        ("preference", "preference_accuracy"): (1 / 3, 3),
        ("preference", "reward_margin"): ((3 - 1 + 0) / 3, 3),
        ("all", "loss"): (14 / 11, 5),
        ("all", "perplexity"): (math.exp(14 / 11), 5),
        ("all", "exact_match"): (0.5, 2),  # translation and extraction pooled
        ("all", "accuracy"): (0.5, 2),
    }
    for key, (value, count) in expected.items():
        assert values[key] == pytest.approx(value) and counts[key] == count, key
    assert metric_names(metrics) == {
        "classification": ["accuracy", "loss", "perplexity"],
        "extraction": ["exact_match", "loss", "perplexity"],
        "preference": ["preference_accuracy", "reward_margin"],
        "summarization": ["rougeL_f1", "loss", "perplexity"],
        "translation": ["exact_match", "loss", "perplexity"],
        "all": [
            "accuracy",
            "exact_match",
            "preference_accuracy",
            "rougeL_f1",
            "loss",
            "perplexity",
            "reward_margin",
        ],
    }
    assert list(metric_names(metrics))[-1] == "all"


def test_markdown_cells_keep_pipes_newlines_and_backticks_in_their_column(tmp_path: Path) -> None:
    from llmops_workers.evaluation.report import RunInfo, markdown

    example = Example(0, "extraction", "p", "a|b")
    records: list[Record] = [GenerationRecord(example, "p", "x\ny`z", 0.0, 1.0, 1)]
    spec = EvalSpec(tmp_path, None, tmp_path / "eval.jsonl", tmp_path / "out")
    info = RunInfo("cpu", "float32", load_seconds=0.5, eval_seconds=2.0)
    text = "".join(markdown(spec, records, aggregate(records), info))
    assert "| 0 | `a\\|b` | ``x⏎y`z`` | 0.000 |\n" in text
    assert "| extraction | exact_match | 0.0000 | 1 |\n" in text
    assert "0.50 examples/s" in text


# ---- rows and spec checks -----------------------------------------------------------------------


def test_rows_take_their_task_else_the_specs_else_default(tmp_path: Path) -> None:
    rows = [
        {"prompt": "a", "reference": "b", "task": "extraction"},
        {"prompt": "a", "reference": "b"},
        {"prompt": "a", "chosen": "b", "rejected": "c", "task": "summarization"},
    ]
    path = write_rows(tmp_path / "rows.jsonl", rows)
    spec = EvalSpec(tmp_path, None, path, tmp_path / "out")
    assert [e.task for e in load_examples(spec)] == ["extraction", "default", "preference"]
    named = replace(spec, task="classification")
    assert [e.task for e in load_examples(named)] == ["extraction", "classification", "preference"]
    assert load_examples(named)[2] == Example(2, "preference", "a", "", "b", "c")


def test_a_good_spec_has_no_problems(
    tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    spec = make_spec(tiny_models, engine_data / "eval.jsonl", tmp_path, template="Q: {text}")
    assert check_eval_spec(spec) == []


def test_check_eval_spec_finds_the_problems(
    tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    good = engine_data / "eval.jsonl"
    (tmp_path / "no-config").mkdir()
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    (tmp_path / "list.jsonl").write_text('["prompt", "reference"]\n')
    (tmp_path / "not-json.jsonl").write_text('{"prompt": "a", "reference": "b"}\n{oops\n')

    def rows(name: str, *content: dict[str, Any]) -> Path:
        return write_rows(tmp_path / name, list(content))

    many = rows("many.jsonl", *[{"prompt": "a"}] * 7)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model_dir": tmp_path / "missing"}, "is not a directory"),
        ({"model_dir": tmp_path / "no-config"}, "has no readable config.json"),
        ({"adapter_dir": tmp_path}, "is not a PEFT adapter"),
        ({"eval_file": tmp_path / "missing.jsonl"}, "missing.jsonl: does not exist"),
        ({"eval_file": tmp_path / "empty.jsonl"}, "has no rows"),
        ({"eval_file": tmp_path / "not-json.jsonl"}, "line 2: not JSON"),
        (
            {"eval_file": rows("sft.jsonl", {"prompt": "a", "completion": "b"})},
            'line 1: a row must be {"prompt", "reference"} or {"prompt", "chosen", "rejected"}',
        ),
        ({"eval_file": tmp_path / "list.jsonl"}, "line 1: a row must be a JSON object"),
        (
            {"eval_file": rows("half.jsonl", {"prompt": "a", "chosen": "b"})},
            'line 1: "rejected" is missing',
        ),
        (
            {"eval_file": rows("number.jsonl", {"prompt": "a", "reference": 3})},
            '"reference" must be a string',
        ),
        (
            {"eval_file": rows("blank.jsonl", {"prompt": " ", "reference": "b"})},
            '"prompt" is empty',
        ),
        (
            {"eval_file": rows("task.jsonl", {"prompt": "a", "reference": "b", "task": 1})},
            '"task" must be a non-empty string',
        ),
        (
            {"eval_file": rows("all.jsonl", {"prompt": "a", "reference": "b", "task": "all"})},
            'task "all" is reserved',
        ),
        ({"eval_file": many}, "2 more rows have problems"),
        ({"task": "preference"}, 'task "preference" is reserved'),
        ({"template": "no field"}, "template: template must contain {text}"),
        ({"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"threads": 0}, "threads must be at least 1"),
        ({"limit": -1}, "limit must be at least 0"),
        ({"temperature": -0.5}, "temperature must be 0 (greedy) or more"),
        ({"temperature": math.nan}, "temperature must be 0 (greedy) or more"),
        ({"top_p": 0.0}, "top_p must be in (0, 1]"),
        ({"output_dir": tmp_path / "a-file"}, "is a file"),
    ]
    spec = make_spec(tiny_models, good, tmp_path / "out")
    for changes, fragment in cases:
        problems = check_eval_spec(replace(spec, **changes))
        assert any(fragment in problem for problem in problems), (changes, problems)
    problems = check_eval_spec(make_spec(tiny_models, many, tmp_path / "out"))
    assert len(problems) == 6 and "many.jsonl: line 5: a row must be" in problems[4]


def test_run_eval_refuses_a_spec_with_problems(tiny_models: TinyModels, tmp_path: Path) -> None:
    spec = make_spec(tiny_models, tmp_path / "missing.jsonl", tmp_path / "out")
    with pytest.raises(ValueError, match=r"invalid eval spec: .*does not exist"):
        run_eval(spec, Recorder())
    assert not (tmp_path / "out").exists()


def test_importing_the_package_imports_neither_torch_nor_rouge_score() -> None:
    code = (
        "import sys, llmops_workers.evaluation; "
        "sys.exit(bool({'torch', 'rouge_score', 'nltk'} & set(sys.modules)))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ---- whole runs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_run(
    tiny_models: TinyModels, engine_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Run:
    """The whole eval file (12 generation rows, 4 pairs) in batches of 8."""
    out = tmp_path_factory.mktemp("eval") / "report"
    return evaluate(make_spec(tiny_models, engine_data / "eval.jsonl", out))


def test_a_run_writes_the_three_report_files_and_nothing_else(full_run: Run) -> None:
    result = full_run.result
    assert result.status == "completed" and result.examples == 16
    out = full_run.spec.output_dir
    assert sorted(p.name for p in out.iterdir()) == ["examples.jsonl", "report.md", "summary.json"]
    assert (result.summary_path, result.examples_path, result.markdown_path) == (
        out / "summary.json",
        out / "examples.jsonl",
        out / "report.md",
    )


def test_the_metrics_of_each_task(full_run: Run) -> None:
    names = metric_names(full_run.result.metrics)
    assert {task: names[task] for task in GENERATION_METRICS} == GENERATION_METRICS
    assert names["preference"] == ["preference_accuracy", "reward_margin"]
    counts = {(m.task, m.metric): m.count for m in full_run.result.metrics}
    assert counts["classification", "accuracy"] == 5
    assert counts["summarization", "loss"] == 4
    assert counts["extraction", "exact_match"] == 3
    assert counts["preference", "preference_accuracy"] == 4
    assert counts["all", "loss"] == 12
    for metric in full_run.result.metrics:
        assert math.isfinite(metric.value)
        if metric.metric in ("accuracy", "exact_match", "rougeL_f1", "preference_accuracy"):
            assert 0.0 <= metric.value <= 1.0


def test_the_summary(full_run: Run) -> None:
    summary = full_run.summary()
    assert summary["status"] == "completed" and summary["examples"] == 16
    assert summary["counts"] == {
        "classification": 5,
        "extraction": 3,
        "preference": 4,
        "summarization": 4,
    }
    assert summary["model_dir"] == str(full_run.spec.model_dir) and summary["adapter_dir"] is None
    assert summary["settings"]["batch_size"] == 8 and summary["settings"]["max_new_tokens"] == 12
    assert summary["device"] == "cpu" and summary["dtype"] == "float32"
    assert summary["classification_labels"] == ["food", "sports", "technology", "travel"]
    assert summary["metrics"] == [
        {"task": m.task, "metric": m.metric, "value": m.value, "count": m.count}
        for m in full_run.result.metrics
    ]
    assert summary["wall_seconds"] > 0 and summary["examples_per_second"] > 0


def test_the_examples_file(full_run: Run) -> None:
    rows = full_run.rows()
    assert [row["index"] for row in rows] == list(range(16))
    source = read_rows("demo-eval.test.jsonl", 12)
    for row, original in zip(rows[:12], source, strict=True):
        assert row["task"] == original["task"] and row["metric"] == task_metric(row["task"])
        assert row["prompt"] == original["prompt"] and row["reference"] == original["reference"]
        assert isinstance(row["prediction"], str) and row["reference_tokens"] > 0
        assert row["score"] == score_answer(
            row["task"], row["prediction"], row["reference"], LABELS
        )
    for row in rows[12:]:
        assert row["task"] == "preference" and row["metric"] == "preference_accuracy"
        assert row["margin"] == pytest.approx(row["chosen_logprob"] - row["rejected_logprob"])
        assert row["score"] == float(row["margin"] > 0)
    losses = {(m.task, m.metric): m.value for m in full_run.result.metrics}
    nll = sum(row["loss"] * row["reference_tokens"] for row in rows[:12])
    tokens = sum(row["reference_tokens"] for row in rows[:12])
    assert losses["all", "loss"] == pytest.approx(nll / tokens)
    assert losses["all", "perplexity"] == pytest.approx(math.exp(nll / tokens))


def test_the_markdown_report(full_run: Run) -> None:
    assert full_run.result.markdown_path is not None
    text = full_run.result.markdown_path.read_text(encoding="utf-8")
    assert text.startswith("# Evaluation report\n")
    for metric in full_run.result.metrics:
        assert f"| {metric.task} | {metric.metric} | {metric.value:.4f} | {metric.count} |" in text
    # A random model gets every classification wrong: the first three are listed.
    assert "\n### classification\n" in text and "| 0 | ` technology` |" in text
    assert "| 3 |" not in text.split("### classification")[1].split("###")[0]


def test_events_start_then_progress_after_each_batch(full_run: Run) -> None:
    events = full_run.events
    assert events.starts == [16] and events.polls == 2
    assert [(done, total) for done, total, _ in events.progress] == [(8, 16), (16, 16)]
    final = {f"{m.task}/{m.metric}": m.value for m in full_run.result.metrics}
    assert events.progress[-1][2] == final


def test_one_at_a_time_gives_what_batches_give(
    full_run: Run, tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    """Left padding with the mask's positions: greedy answers and scores do not depend on it."""
    single = evaluate(make_spec(tiny_models, engine_data / "eval.jsonl", tmp_path, batch_size=1))
    assert [done for done, _, _ in single.events.progress] == list(range(1, 17))
    batched_rows, single_rows = full_run.rows(), single.rows()
    assert len({len(row["prompt"]) for row in batched_rows}) > 1  # padding did happen
    for batched, alone in zip(batched_rows, single_rows, strict=True):
        assert batched.get("prediction") == alone.get("prediction")
        for key in ("loss", "chosen_logprob", "rejected_logprob"):
            if key in batched:
                assert batched[key] == pytest.approx(alone[key], rel=1e-5, abs=1e-5)


def _independent_logprob(model: Any, tokenizer: Any, prompt: str, text: str) -> float:
    """log p(text + EOS | prompt) with one unpadded forward pass."""
    import torch

    prompt_ids = tokenizer(prompt)["input_ids"]
    ids = tokenizer(prompt + text + tokenizer.eos_token)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    logprobs = torch.log_softmax(logits[:-1], dim=-1)
    targets = torch.tensor(ids[1:])
    return float(logprobs.gather(-1, targets.unsqueeze(-1))[len(prompt_ids) - 1 :].sum())


def _load(model_dir: Path, adapter_dir: Path | None = None) -> tuple[Any, Any]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir))
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(adapter_dir))
    return model.eval(), AutoTokenizer.from_pretrained(str(model_dir))


def test_loss_is_the_cross_entropy_of_reference_tokens(
    full_run: Run, tiny_models: TinyModels
) -> None:
    model, tokenizer = _load(tiny_models.base)
    rows = full_run.rows()
    for row in rows[:12]:
        count = row["reference_tokens"]
        expected = -_independent_logprob(model, tokenizer, row["prompt"], row["reference"]) / count
        assert row["loss"] == pytest.approx(expected, rel=1e-5)
    for row in rows[12:]:
        chosen = _independent_logprob(model, tokenizer, row["prompt"], row["chosen"])
        assert row["chosen_logprob"] == pytest.approx(chosen, rel=1e-5)


def test_generation_is_greedy_and_decodes_only_new_tokens(
    full_run: Run, tiny_models: TinyModels
) -> None:
    import torch

    model, tokenizer = _load(tiny_models.base)
    for row in full_run.rows()[:2]:
        ids = tokenizer(row["prompt"])["input_ids"]
        new: list[int] = []
        with torch.no_grad():
            for _ in range(12):  # max_new_tokens
                token = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
                if token == tokenizer.eos_token_id:
                    break
                new.append(token)
        assert row["prediction"] == tokenizer.decode(new, skip_special_tokens=True)


def test_preference_accuracy_on_pairs_with_a_known_answer(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    """Chosen is the model's own greedy answer in one pair and the rejected one in the other."""
    import torch

    model, tokenizer = _load(tiny_models.base)
    prompt = read_rows("demo-preference.test.jsonl", 1)[0]["prompt"]
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        greedy = model.generate(
            **ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    favourite = tokenizer.decode(greedy[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    other = " Anna Evans opened a bakery."
    expected = {
        text: _independent_logprob(model, tokenizer, prompt, text) for text in (favourite, other)
    }
    assert expected[favourite] > expected[other]
    pairs = [
        {"prompt": prompt, "chosen": favourite, "rejected": other},
        {"prompt": prompt, "chosen": other, "rejected": favourite},
    ]
    path = write_rows(tmp_path / "pairs.jsonl", pairs)
    run = evaluate(make_spec(tiny_models, path, tmp_path / "out"))
    rows = run.rows()
    assert [row["score"] for row in rows] == [1.0, 0.0]
    assert rows[0]["chosen_logprob"] == pytest.approx(expected[favourite], rel=1e-5)
    assert rows[0]["rejected_logprob"] == pytest.approx(expected[other], rel=1e-5)
    margin = expected[favourite] - expected[other]
    assert [(m.metric, m.value) for m in run.result.metrics if m.task == "preference"] == [
        ("preference_accuracy", 0.5),
        ("reward_margin", pytest.approx(0.0, abs=1e-4)),
    ]
    assert rows[1]["margin"] == pytest.approx(-margin, rel=1e-5)


def test_limit_and_template(tiny_models: TinyModels, engine_data: Path, tmp_path: Path) -> None:
    raw = [{"prompt": "Ada Lovelace lives in London.", "reference": " Ada Lovelace"}] * 5
    path = write_rows(tmp_path / "raw.jsonl", raw)
    template = "Extract the person's full name.\nText: {text}\nName:"
    spec = make_spec(
        tiny_models, path, tmp_path / "out", limit=3, template=template, task="extraction"
    )
    run = evaluate(spec)
    assert run.result.examples == 3 and run.events.starts == [3]
    rows = run.rows()
    assert [row["index"] for row in rows] == [0, 1, 2]
    assert {row["prompt"] for row in rows} == {template.format(text=raw[0]["prompt"])}
    assert {row["task"] for row in rows} == {"extraction"}
    assert run.summary()["settings"]["template"] == template


def test_classification_labels_come_from_the_whole_file_whatever_the_limit(
    tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    spec = make_spec(tiny_models, engine_data / "eval.jsonl", tmp_path, limit=2)
    run = evaluate(spec)
    assert [row["reference"] for row in run.rows()] == [" technology", " technology"]
    assert run.summary()["classification_labels"] == ["food", "sports", "technology", "travel"]


def test_cancel_stops_between_batches_and_writes_nothing(
    tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    spec = make_spec(tiny_models, engine_data / "eval.jsonl", tmp_path / "out", batch_size=4)
    run = evaluate(spec, Recorder(cancel_at_poll=3))
    result = run.result
    assert result.status == "cancelled" and result.examples == 8
    assert (result.summary_path, result.examples_path, result.markdown_path) == (None, None, None)
    assert [done for done, _, _ in run.events.progress] == [4, 8]
    done = {row["task"] for row in read_rows("demo-eval.test.jsonl", 8)}
    assert {m.task for m in result.metrics} == {*done, "all"}
    assert {m.count for m in result.metrics if m.task == "all" and m.metric == "loss"} == {8}
    assert not spec.output_dir.exists()


def test_an_adapter_is_applied(
    full_run: Run, tiny_models: TinyModels, engine_data: Path, tmp_path: Path
) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    from llmops_workers.engines.runtime import engine_runtime

    base, tokenizer = _load(tiny_models.base)
    torch.manual_seed(1)
    config = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
    with engine_runtime(1):  # PEFT trips a transformers deprecation warning
        get_peft_model(base, config).save_pretrained(str(tmp_path / "adapter"))
        adapted, _ = _load(tiny_models.base, tmp_path / "adapter")
    spec = make_spec(
        tiny_models,
        engine_data / "eval.jsonl",
        tmp_path / "out",
        adapter_dir=tmp_path / "adapter",
        limit=4,
    )
    run = evaluate(spec)
    assert run.summary()["adapter_dir"] == str(tmp_path / "adapter")
    rows = run.rows()
    for row, plain in zip(rows, full_run.rows(), strict=False):
        expected = -_independent_logprob(adapted, tokenizer, row["prompt"], row["reference"])
        assert row["loss"] == pytest.approx(expected / row["reference_tokens"], rel=1e-4)
        assert row["loss"] != pytest.approx(plain["loss"], rel=1e-3)


def test_sampling_is_seeded(tiny_models: TinyModels, engine_data: Path, tmp_path: Path) -> None:
    spec = make_spec(
        tiny_models, engine_data / "eval.jsonl", tmp_path, limit=4, temperature=1.0, top_p=0.9
    )
    first = [row["prediction"] for row in evaluate(spec).rows()]
    again = [row["prediction"] for row in evaluate(spec).rows()]
    greedy = [row["prediction"] for row in evaluate(replace(spec, temperature=0.0)).rows()]
    assert first == again and first != greedy
    other_seed = [row["prediction"] for row in evaluate(replace(spec, seed=1)).rows()]
    assert other_seed != first
