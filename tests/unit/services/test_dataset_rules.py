"""Tests for the dataset validation rules that every upload goes through."""

from __future__ import annotations

import io
import json
from typing import Any, cast

import pytest

from llmops_services.registry.dataset_rules import (
    DATASET_KINDS,
    DatasetInvalid,
    DatasetKind,
    DatasetLimits,
    DatasetStats,
    RowProblem,
    validate_jsonl,
)

LIMITS = DatasetLimits()


def jl(*rows: Any) -> list[bytes]:
    """Encode rows as JSONL lines; bytes/str items are taken as raw lines."""
    out: list[bytes] = []
    for row in rows:
        if isinstance(row, bytes):
            out.append(row)
        elif isinstance(row, str):
            out.append(row.encode("utf-8"))
        else:
            out.append((json.dumps(row) + "\n").encode("utf-8"))
    return out


def problems(lines: list[bytes], kind: DatasetKind, limits: DatasetLimits = LIMITS) -> list[Any]:
    """Return the (line, field, reason) triples of a refused dataset."""
    with pytest.raises(DatasetInvalid) as info:
        validate_jsonl(lines, kind, limits)
    return [(p.line, p.field, p.reason) for p in info.value.problems]


SFT = {"prompt": "Say hi", "completion": " hi"}
CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hi"},
        {"role": "assistant", "content": "hi"},
    ]
}
PREF = {"prompt": "Say hi", "chosen": " hi", "rejected": " bye"}
EVAL = {"prompt": "Say hi", "reference": " hi"}
VALID: dict[DatasetKind, dict[str, Any]] = {"sft": SFT, "preference": PREF, "eval": EVAL}


# --- valid files and stats -------------------------------------------------------------------


@pytest.mark.parametrize("kind", DATASET_KINDS)
def test_each_kind_accepts_a_valid_row(kind: DatasetKind) -> None:
    stats = validate_jsonl(jl(VALID[kind]), kind, LIMITS)
    assert stats.row_count == 1


def test_chat_form_is_valid_sft() -> None:
    assert validate_jsonl(jl(CHAT), "sft", LIMITS).row_count == 1


def test_default_limits_are_used_when_omitted() -> None:
    assert validate_jsonl(jl(SFT), "sft").row_count == 1


def test_stats_values() -> None:
    lines = jl(
        {"prompt": "a" * 40, "completion": " bcd", "task": "extraction"},
        {"prompt": "x", "completion": "y", "task": "classification"},
        {"prompt": "p" * 8, "completion": "q" * 8, "task": "extraction"},
        {"prompt": "no task here", "completion": "ok"},
    )
    stats = validate_jsonl(lines, "sft", LIMITS)
    chars = 40 + 4 + 1 + 1 + 8 + 8 + 12 + 2
    assert stats == DatasetStats(
        row_count=4,
        size_bytes=sum(len(line) for line in lines),
        approx_tokens=chars // 4,
        task_counts={"classification": 1, "extraction": 2},
    )


def test_approx_tokens_is_at_least_one_per_text() -> None:
    stats = validate_jsonl(jl({"prompt": "a", "completion": "b"}), "sft", LIMITS)
    assert stats.approx_tokens == 2


def test_chat_and_preference_texts_count_towards_tokens() -> None:
    chat = validate_jsonl(jl(CHAT), "sft", LIMITS)
    assert chat.approx_tokens == max(len("Be brief.Say hihi") // 4, 3)
    pref = validate_jsonl(
        jl({"prompt": "p" * 20, "chosen": "c" * 20, "rejected": "r" * 20}), "preference"
    )
    assert pref.approx_tokens == 15


def test_task_counts_are_sorted_and_exclude_rows_without_task() -> None:
    lines = jl({**EVAL, "task": "b"}, {**EVAL, "task": "a"}, EVAL, {**EVAL, "task": "b"})
    stats = validate_jsonl(lines, "eval", LIMITS)
    assert list(stats.task_counts.items()) == [("a", 1), ("b", 2)]


def test_unknown_extra_fields_are_allowed() -> None:
    row = {**PREF, "source": "web", "score": 0.5, "meta": {"x": [1, 2]}}
    assert validate_jsonl(jl(row), "preference", LIMITS).row_count == 1
    chat = {
        "messages": [
            {"role": "user", "content": "q", "name": "u"},
            {"role": "assistant", "content": "a"},
        ]
    }
    assert validate_jsonl(jl(chat), "sft", LIMITS).row_count == 1


# --- line handling ---------------------------------------------------------------------------


def test_crlf_and_missing_final_newline() -> None:
    lines = [json.dumps(SFT).encode() + b"\r\n", json.dumps(SFT).encode()]
    assert validate_jsonl(lines, "sft", LIMITS).row_count == 2


def test_works_on_a_binary_file_object() -> None:
    data = b"".join(jl(SFT, SFT, SFT)).replace(b"\n", b"\r\n")
    stats = validate_jsonl(io.BytesIO(data), "sft", LIMITS)
    assert (stats.row_count, stats.size_bytes) == (3, len(data))


def test_blank_lines_are_skipped_but_counted() -> None:
    lines = [b"\n", b"   \t \r\n", *jl(SFT), b"\n", *jl({"prompt": "x"})]
    assert problems(lines, "sft") == [(5, "completion", "missing required field")]
    assert validate_jsonl([b"\n", *jl(SFT), b"  \n"], "sft", LIMITS).row_count == 1


def test_bom_on_first_line_is_accepted() -> None:
    lines = jl(SFT, SFT)
    lines[0] = b"\xef\xbb\xbf" + lines[0]
    assert validate_jsonl(lines, "sft", LIMITS).row_count == 2


def test_bom_alone_on_a_blank_first_line() -> None:
    assert validate_jsonl([b"\xef\xbb\xbf\n", *jl(SFT)], "sft", LIMITS).row_count == 1


def test_bom_on_a_later_line_is_a_problem() -> None:
    lines = jl(SFT, SFT)
    lines[1] = b"\xef\xbb\xbf" + lines[1]
    [(line, field, reason)] = problems(lines, "sft")
    assert (line, field) == (2, "")
    assert reason.startswith("invalid JSON:")


def test_non_utf8_names_the_byte_offset() -> None:
    assert problems([b'{"prompt": "caf\xe9", "completion": "x"}\n'], "sft") == [
        (1, "", "not valid UTF-8 (bad byte at offset 15)")
    ]


def test_non_utf8_offset_counts_a_stripped_bom() -> None:
    assert problems([b"\xef\xbb\xbf\xff{}\n"], "sft") == [
        (1, "", "not valid UTF-8 (bad byte at offset 3)")
    ]


def test_bad_json_includes_json_message() -> None:
    [(line, field, reason)] = problems([*jl(SFT), b'{"prompt": "x", \n'], "sft")
    assert (line, field) == (2, "")
    assert reason.startswith("invalid JSON: Expecting property name enclosed in double quotes")
    assert "column" in reason


def test_trailing_garbage_is_bad_json() -> None:
    [(_, _, reason)] = problems([b'{"prompt": "a", "completion": "b"} x\n'], "sft")
    assert reason.startswith("invalid JSON: Extra data")


def test_nan_is_not_json() -> None:
    assert problems([b'{"prompt": "a", "completion": "b", "w": NaN}\n'], "sft") == [
        (1, "", "invalid JSON: NaN is not valid JSON")
    ]


def test_deeply_nested_json_is_refused_not_crashing() -> None:
    deep = b'{"prompt": "a", "completion": "b", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    [(line, field, reason)] = problems([deep], "sft")
    assert (line, field) == (1, "")
    assert reason.startswith("invalid JSON")


@pytest.mark.parametrize(
    ("raw", "got"),
    [
        (b"[1, 2]", "array"),
        (b'"a string"', "string"),
        (b"42", "number"),
        (b"true", "boolean"),
        (b"null", "null"),
    ],
)
def test_non_object_lines(raw: bytes, got: str) -> None:
    assert problems([raw + b"\n"], "eval") == [(1, "", f"expected a JSON object, got {got}")]


def test_lone_surrogate_escape_is_refused() -> None:
    assert problems([b'{"prompt": "a\\ud800b", "reference": "x"}\n'], "eval") == [
        (1, "prompt", "contains an unpaired surrogate escape")
    ]


# --- schemas ---------------------------------------------------------------------------------


def test_sft_missing_fields() -> None:
    assert problems(jl({"prompt": "x"}, {"completion": "y"}, {"task": "t"}), "sft") == [
        (1, "completion", "missing required field"),
        (2, "prompt", "missing required field"),
        (3, "", "an sft row needs prompt and completion, or messages"),
    ]


def test_sft_wrong_types_and_empty_strings() -> None:
    lines = jl(
        {"prompt": 1, "completion": None},
        {"prompt": "", "completion": "   "},
        {"prompt": ["a"], "completion": {"a": 1}},
        {"prompt": True, "completion": 1.5},
    )
    assert problems(lines, "sft") == [
        (1, "prompt", "expected a string, got number"),
        (1, "completion", "expected a string, got null"),
        (2, "prompt", "must not be empty"),
        (2, "completion", "must not be empty"),
        (3, "prompt", "expected a string, got array"),
        (3, "completion", "expected a string, got object"),
        (4, "prompt", "expected a string, got boolean"),
        (4, "completion", "expected a string, got number"),
    ]


def test_sft_both_forms_in_one_row() -> None:
    assert problems(jl({**SFT, **CHAT}), "sft") == [
        (1, "messages", "use either prompt/completion or messages, not both")
    ]
    assert problems(jl({"prompt": "x", **CHAT}), "sft") == [
        (1, "messages", "use either prompt/completion or messages, not both")
    ]


def test_sft_messages_structure() -> None:
    def chat(*messages: Any) -> dict[str, Any]:
        return {"messages": list(messages)}

    user = {"role": "user", "content": "q"}
    bot = {"role": "assistant", "content": "a"}
    system = {"role": "system", "content": "s"}
    lines = jl(
        {"messages": "hi"},
        chat(),
        chat(system, bot),
        chat(user, bot, user),
        chat("text", bot),
        chat({"content": "q"}, bot),
        chat({"role": "bot", "content": "q"}, bot),
        chat({"role": 3, "content": "q"}, bot),
        chat({"role": "user"}, bot),
        chat(user, {"role": "assistant", "content": ""}),
        chat(user, {"role": "assistant", "content": 7}),
        chat(system, user),
    )
    assert problems(lines, "sft") == [
        (1, "messages", "expected an array, got string"),
        (2, "messages", "must not be empty"),
        (3, "messages", "needs at least one user message"),
        (4, "messages[2].role", "the last message must be from the assistant"),
        (5, "messages[0]", "expected an object, got string"),
        (6, "messages[0].role", "missing required field"),
        (7, "messages[0].role", "must be one of system, user, assistant, got 'bot'"),
        (8, "messages[0].role", "expected a string, got number"),
        (9, "messages[0].content", "missing required field"),
        (10, "messages[1].content", "must not be empty"),
        (11, "messages[1].content", "expected a string, got number"),
        (12, "messages[1].role", "the last message must be from the assistant"),
    ]


def test_sft_multi_turn_chat_is_valid() -> None:
    row = {
        "messages": [
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"},
            {"role": "assistant", "content": "a2"},
        ]
    }
    assert validate_jsonl(jl(row), "sft", LIMITS).row_count == 1


def test_long_role_values_are_shortened_in_the_reason() -> None:
    row = {"messages": [{"role": "x" * 500, "content": "q"}, {"role": "assistant", "content": "a"}]}
    [(_, _, reason)] = problems(jl(row), "sft")
    assert len(reason) < 120
    assert reason.endswith("...'")


def test_preference_rules() -> None:
    lines = jl(
        {"prompt": "p", "chosen": "a"},
        {"chosen": "a", "rejected": "b"},
        {"prompt": "p", "chosen": " same", "rejected": "same "},
        {"prompt": "p", "chosen": "", "rejected": 3},
        {"prompt": 1, "chosen": "a", "rejected": "b"},
    )
    assert problems(lines, "preference") == [
        (1, "rejected", "missing required field"),
        (2, "prompt", "missing required field"),
        (3, "rejected", "must differ from chosen"),
        (4, "chosen", "must not be empty"),
        (4, "rejected", "expected a string, got number"),
        (5, "prompt", "expected a string, got number"),
    ]


def test_preference_row_is_not_sft_and_vice_versa() -> None:
    assert problems(jl(PREF), "sft") == [(1, "completion", "missing required field")]
    assert problems(jl(SFT), "preference") == [
        (1, "chosen", "missing required field"),
        (1, "rejected", "missing required field"),
    ]


def test_eval_rules() -> None:
    lines = jl(
        {"prompt": "p"},
        {"reference": "r"},
        {"prompt": "p", "reference": ""},
        {"prompt": "p", "reference": ["r"]},
    )
    assert problems(lines, "eval") == [
        (1, "reference", "missing required field"),
        (2, "prompt", "missing required field"),
        (3, "reference", "must not be empty"),
        (4, "reference", "expected a string, got array"),
    ]


@pytest.mark.parametrize("kind", DATASET_KINDS)
def test_task_must_be_a_non_empty_string(kind: DatasetKind) -> None:
    lines = jl(
        {**VALID[kind], "task": 1}, {**VALID[kind], "task": ""}, {**VALID[kind], "task": None}
    )
    assert problems(lines, kind) == [
        (1, "task", "expected a string, got number"),
        (2, "task", "must not be empty"),
        (3, "task", "expected a string, got null"),
    ]


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown dataset kind"):
        validate_jsonl(jl(SFT), cast(Any, "dpo"), LIMITS)


# --- limits ----------------------------------------------------------------------------------


def test_empty_file_has_no_rows() -> None:
    assert problems([], "sft") == [(0, "", "dataset has no rows")]
    assert problems([b"\n", b"  \r\n"], "eval") == [(0, "", "dataset has no rows")]


def test_default_limits() -> None:
    limits = DatasetLimits()
    assert (limits.max_bytes, limits.max_rows) == (268_435_456, 1_000_000)
    assert (limits.max_line_bytes, limits.max_problems) == (1_048_576, 20)


def test_file_larger_than_max_bytes() -> None:
    lines = jl(SFT, SFT, SFT)
    limits = DatasetLimits(max_bytes=len(lines[0]) * 2)
    assert problems(lines, "sft", limits) == [
        (0, "", f"file is larger than {limits.max_bytes} bytes")
    ]
    assert validate_jsonl(lines[:2], "sft", limits).row_count == 2


def test_file_size_problem_is_listed_first() -> None:
    lines = jl({"prompt": "x"}, SFT, SFT)
    limits = DatasetLimits(max_bytes=len(lines[0]) + len(lines[1]))
    assert problems(lines, "sft", limits) == [
        (0, "", f"file is larger than {limits.max_bytes} bytes"),
        (1, "completion", "missing required field"),
    ]


def test_too_many_rows_reports_the_first_extra_line() -> None:
    lines = [*jl(SFT, SFT), b"\n", *jl(SFT, SFT)]
    assert problems(lines, "sft", DatasetLimits(max_rows=2)) == [
        (4, "", "dataset has more than 2 rows")
    ]
    assert validate_jsonl(lines[:3], "sft", DatasetLimits(max_rows=2)).row_count == 2


def test_line_too_long() -> None:
    long_row = {"prompt": "x" * 200, "completion": "y"}
    lines = jl(SFT, long_row, SFT)
    limits = DatasetLimits(max_line_bytes=100)
    assert problems(lines, "sft", limits) == [(2, "", "line is longer than 100 bytes")]


def test_line_length_excludes_the_line_ending() -> None:
    [line] = jl(SFT)
    content = line.rstrip(b"\n")
    limits = DatasetLimits(max_line_bytes=len(content))
    assert validate_jsonl([content + b"\r\n"], "sft", limits).row_count == 1


def test_problems_are_truncated_at_max_problems() -> None:
    lines = jl(*([{"prompt": "x"}] * 30))
    with pytest.raises(DatasetInvalid) as info:
        validate_jsonl(lines, "sft", DatasetLimits(max_problems=5))
    exc = info.value
    assert exc.truncated is True
    assert [p.line for p in exc.problems] == [1, 2, 3, 4, 5]
    assert str(exc) == "more than 5 problems in dataset (showing the first 5)"


def test_exactly_max_problems_is_not_truncated() -> None:
    lines = jl(*([{"prompt": "x"}] * 5), SFT)
    with pytest.raises(DatasetInvalid) as info:
        validate_jsonl(lines, "sft", DatasetLimits(max_problems=5))
    assert info.value.truncated is False
    assert len(info.value.problems) == 5
    assert str(info.value) == "5 problems in dataset"


def test_truncation_within_one_row() -> None:
    lines = jl({"prompt": 1, "completion": 2}, {"prompt": 3, "completion": 4})
    with pytest.raises(DatasetInvalid) as info:
        validate_jsonl(lines, "sft", DatasetLimits(max_problems=3))
    assert info.value.truncated is True
    assert [(p.line, p.field) for p in info.value.problems] == [
        (1, "prompt"),
        (1, "completion"),
        (2, "prompt"),
    ]


def test_message_counts_problems() -> None:
    with pytest.raises(DatasetInvalid, match=r"^1 problem in dataset$"):
        validate_jsonl(jl({"prompt": "x"}), "sft", LIMITS)
    with pytest.raises(DatasetInvalid, match=r"^3 problems in dataset$") as info:
        validate_jsonl(jl({"prompt": "x"}, {"prompt": "x"}, {"prompt": "x"}), "sft", LIMITS)
    assert info.value.truncated is False


def test_row_problem_str() -> None:
    assert str(RowProblem(3, "prompt", "missing required field")) == (
        "line 3, prompt: missing required field"
    )
    assert str(RowProblem(2, "", "invalid JSON")) == "line 2: invalid JSON"
    assert str(RowProblem(0, "", "dataset has no rows")) == "file: dataset has no rows"


def test_large_file_validates_quickly() -> None:
    import time

    row = {
        "prompt": "Extract the name.\nText: On Monday Ada Lovelace spoke.\nName:",
        "completion": " Ada",
    }
    line = (json.dumps(row) + "\n").encode()
    data = line * (20_000_000 // len(line))
    start = time.perf_counter()
    stats = validate_jsonl(io.BytesIO(data), "sft", LIMITS)
    assert stats.size_bytes == len(data)
    assert time.perf_counter() - start < 10
