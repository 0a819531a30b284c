"""Tests for the bundled demo data: reproducible, valid, an honest train/test split, and words
the tiny models' pretraining corpus shares."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from llmops_services.registry.dataset_rules import DatasetKind, DatasetLimits, validate_jsonl
from llmops_services.seed import SAMPLE_DATASETS
from llmops_workers import corpus, vocabulary
from llmops_workers.sample_data import (
    TASKS,
    build_datasets,
    extraction_name_split,
    load_templates,
    main,
    sample_data_dir,
    write_datasets,
)
from llmops_workers.vocabulary import (
    CLASSIFICATION_LABELS,
    FIRST_NAMES,
    LAST_NAMES,
    TOPIC_KEYWORDS,
)

FILES: dict[str, tuple[DatasetKind, int]] = {
    "demo-sft.train.jsonl": ("sft", 400),
    "demo-sft.validation.jsonl": ("sft", 50),
    "demo-eval.test.jsonl": ("eval", 100),
    "demo-preference.train.jsonl": ("preference", 300),
    "demo-preference.test.jsonl": ("preference", 50),
}
TRAIN = ("demo-sft.train.jsonl", "demo-preference.train.jsonl")
HELD_OUT = ("demo-sft.validation.jsonl", "demo-eval.test.jsonl", "demo-preference.test.jsonl")
# A demo summary: "<First Last> <action> in <City> on <Day>."
SUMMARY = re.compile(r"(\w+ \w+) (.+) in (\w+) on (\w+)\.")


@pytest.fixture(scope="module")
def committed() -> dict[str, list[dict[str, Any]]]:
    """The committed files under config/datasets, parsed."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name in FILES:
        text = (sample_data_dir() / name).read_text(encoding="utf-8")
        out[name] = [json.loads(line) for line in text.splitlines()]
    return out


def target(row: dict[str, Any]) -> str:
    for field in ("completion", "chosen", "reference"):
        if field in row:
            return str(row[field])
    raise AssertionError(f"row has no target: {row}")


def raw_text(row: dict[str, Any], templates: dict[str, str]) -> str:
    """Recover the raw text from a prompt, checking it is the task's rendered template."""
    template = templates[row["task"]]
    prefix, suffix = template.split("{text}")
    prompt: str = row["prompt"]
    assert prompt.startswith(prefix), prompt
    assert prompt.endswith(suffix), prompt
    text = prompt[len(prefix) : len(prompt) - len(suffix)]
    assert template.format(text=text) == prompt
    return text


def test_regenerating_gives_the_committed_bytes(tmp_path: Path) -> None:
    counts = write_datasets(tmp_path)
    assert set(counts) == set(FILES)
    committed_names = {p.name for p in sample_data_dir().glob("*.jsonl")}
    assert committed_names == set(FILES)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (sample_data_dir() / name).read_bytes(), name


def test_main_writes_files_and_reports_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for name, (_, per_task) in FILES.items():
        assert (tmp_path / name).is_file()
        assert f"{name}: {per_task * len(TASKS)} rows" in printed


def test_files_are_small_and_use_canonical_lines() -> None:
    for name in FILES:
        data = (sample_data_dir() / name).read_bytes()
        assert len(data) < 400 * 1024, name
        assert data.endswith(b"\n")
        for line in data.decode("utf-8").splitlines():
            row = json.loads(line)
            assert json.dumps(row, ensure_ascii=False, sort_keys=True) == line


@pytest.mark.parametrize("name", list(FILES))
def test_every_file_is_a_valid_dataset_of_its_kind(name: str) -> None:
    kind, per_task = FILES[name]
    with (sample_data_dir() / name).open("rb") as handle:
        stats = validate_jsonl(handle, kind, DatasetLimits())
    assert stats.row_count == per_task * len(TASKS)
    assert stats.task_counts == dict.fromkeys(sorted(TASKS), per_task)


def test_sample_datasets_point_at_bundled_files() -> None:
    assert [(d.name, d.kind, d.filename) for d in SAMPLE_DATASETS] == [
        ("demo-sft", "sft", "demo-sft.train.jsonl"),
        ("demo-preference", "preference", "demo-preference.train.jsonl"),
        ("demo-eval", "eval", "demo-eval.test.jsonl"),
        ("demo-preference-test", "preference", "demo-preference.test.jsonl"),
    ]
    for dataset in SAMPLE_DATASETS:
        name, kind, filename, description = dataset  # a plain tuple for the registry
        assert name.startswith("demo-")
        assert FILES[filename][0] == kind
        assert (sample_data_dir() / filename).is_file()
        assert description


def test_sample_data_dir_default_and_override(tmp_path: Path) -> None:
    assert sample_data_dir().parts[-2:] == ("config", "datasets")
    assert (sample_data_dir().parent / "prompt_templates.json").is_file()
    assert sample_data_dir(tmp_path) == tmp_path
    assert sample_data_dir(str(tmp_path)) == tmp_path


def test_prompts_are_the_rendered_templates(committed: dict[str, list[dict[str, Any]]]) -> None:
    templates = load_templates()
    for rows in committed.values():
        for row in rows:
            assert row["task"] in TASKS
            raw_text(row, templates)


def test_targets_are_short_and_start_with_one_space(
    committed: dict[str, list[dict[str, Any]]],
) -> None:
    for name, rows in committed.items():
        for row in rows:
            values = [target(row)] + ([row["rejected"]] if "rejected" in row else [])
            for value in values:
                assert value.startswith(" ") and not value.startswith("  "), (name, value)
                assert value == value.rstrip(), (name, value)
                assert "\n" not in value
                assert len(value) <= 80, (name, value)


def test_every_row_has_the_expected_keys(committed: dict[str, list[dict[str, Any]]]) -> None:
    keys = {
        "sft": {"prompt", "completion", "task"},
        "preference": {"prompt", "chosen", "rejected", "task"},
        "eval": {"prompt", "reference", "task"},
    }
    for name, rows in committed.items():
        assert all(set(row) == keys[FILES[name][0]] for row in rows), name


def test_train_and_held_out_prompts_are_disjoint(
    committed: dict[str, list[dict[str, Any]]],
) -> None:
    train = {row["prompt"] for name in TRAIN for row in committed[name]}
    for name in HELD_OUT:
        assert not train & {row["prompt"] for row in committed[name]}, name
    validation = {row["prompt"] for row in committed["demo-sft.validation.jsonl"]}
    test = {row["prompt"] for name in HELD_OUT[1:] for row in committed[name]}
    assert not validation & test
    # No prompt repeats anywhere, so no file leaks into another.
    all_prompts = [row["prompt"] for rows in committed.values() for row in rows]
    assert len(all_prompts) == len(set(all_prompts))


def extraction_names(rows: list[dict[str, Any]]) -> set[str]:
    return {target(row).strip() for row in rows if row["task"] == "extraction"}


def test_extraction_name_combinations_are_disjoint(
    committed: dict[str, list[dict[str, Any]]],
) -> None:
    train = set().union(*(extraction_names(committed[name]) for name in TRAIN))
    validation = extraction_names(committed["demo-sft.validation.jsonl"])
    test = set().union(*(extraction_names(committed[name]) for name in HELD_OUT[1:]))
    assert len(train) == 700 and len(validation) == 50 and len(test) == 150
    assert not train & validation and not train & test and not validation & test
    # Names in the summarization texts follow the same split.
    held_out_names = validation | test
    for name in TRAIN:
        for row in committed[name]:
            if row["task"] == "summarization":
                assert " ".join(target(row).split()[:2]) not in held_out_names


def test_every_first_and_last_name_is_seen_in_training(
    committed: dict[str, list[dict[str, Any]]],
) -> None:
    names = extraction_names(committed["demo-sft.train.jsonl"])
    assert {n.split()[0] for n in names} == set(FIRST_NAMES)
    assert {n.split()[1] for n in names} == set(LAST_NAMES)


def test_name_split_partitions_all_combinations() -> None:
    pools = extraction_name_split()
    assert len(FIRST_NAMES) == len(LAST_NAMES) == 40
    assert [len(pools[s]) for s in ("train", "validation", "test")] == [1200, 200, 200]
    combined = [combo for pool in pools.values() for combo in pool]
    assert len(set(combined)) == 1600
    for pool in pools.values():
        assert {first for first, _ in pool} == set(FIRST_NAMES)
        assert {last for _, last in pool} == set(LAST_NAMES)


def test_all_four_labels_in_every_file(committed: dict[str, list[dict[str, Any]]]) -> None:
    assert set(CLASSIFICATION_LABELS) == {"sports", "technology", "food", "travel"}
    templates = load_templates()
    assert all(label in templates["classification"] for label in CLASSIFICATION_LABELS)
    for name, rows in committed.items():
        labels = [target(row).strip() for row in rows if row["task"] == "classification"]
        assert set(labels) == set(CLASSIFICATION_LABELS), name
        # Balanced: no label has more than one row above another.
        counts = [labels.count(label) for label in CLASSIFICATION_LABELS]
        assert max(counts) - min(counts) <= 1, name


def test_targets_follow_from_the_text(committed: dict[str, list[dict[str, Any]]]) -> None:
    """The answer is always recoverable from the text, so a model can learn it exactly."""
    templates = load_templates()
    keywords = TOPIC_KEYWORDS
    for rows in committed.values():
        for row in rows:
            text, answer = raw_text(row, templates), target(row).strip()
            if row["task"] == "extraction":
                assert text.count(answer) == 1
            elif row["task"] == "classification":
                topics = {t for t, words in keywords.items() if any(w in text for w in words)}
                assert topics == {answer}
            else:
                match = SUMMARY.fullmatch(answer)
                assert match, answer
                assert all(slot in text for slot in match.groups()), (answer, text)


def test_rejected_is_plausible_but_wrong(committed: dict[str, list[dict[str, Any]]]) -> None:
    templates = load_templates()
    for name in ("demo-preference.train.jsonl", "demo-preference.test.jsonl"):
        for row in committed[name]:
            chosen, rejected = row["chosen"].strip(), row["rejected"].strip()
            assert chosen != rejected
            text = raw_text(row, templates)
            if row["task"] == "extraction":
                assert rejected in text  # a distractor taken from the sentence
            elif row["task"] == "classification":
                assert rejected in CLASSIFICATION_LABELS
            else:
                good, bad = SUMMARY.fullmatch(chosen), SUMMARY.fullmatch(rejected)
                assert good and bad, (chosen, rejected)
                changed = [i for i in range(1, 5) if good.group(i) != bad.group(i)]
                assert len(changed) == 1, (chosen, rejected)  # exactly one wrong slot


def test_generation_is_deterministic() -> None:
    assert build_datasets() == build_datasets()


def test_the_corpus_talks_about_the_demo_words_and_more() -> None:
    """The pretraining corpus's lists start with the demo's (so its text, and with it the tiny
    models, stay as they were built) and add words of their own."""
    shared = [
        (corpus.FIRST_NAMES, vocabulary.FIRST_NAMES),
        (corpus.LAST_NAMES, vocabulary.LAST_NAMES),
        (corpus.CITIES, vocabulary.CITIES),
        (corpus.JOBS, vocabulary.JOBS),
        (corpus.PAST_ACTIONS, vocabulary.ACTIONS),
        (corpus.REASONS, vocabulary.REASONS),
    ]
    for words, demo in shared:
        assert words[: len(demo)] == demo and len(words) > len(demo)
    assert corpus.DAYS == vocabulary.DAYS
    assert corpus.TOPICS == vocabulary.TOPIC_KEYWORDS
    assert tuple(vocabulary.TOPIC_KEYWORDS) == CLASSIFICATION_LABELS
