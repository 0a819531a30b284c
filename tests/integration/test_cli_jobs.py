"""`llmops train` and `llmops jobs` against a real server, a private Redis, a real worker and a
tiny model: `--wait` follows a job to its end and exits by how it ended, `--output json` prints
what scripts parse, and bad input is one `error:` line, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import llmops
from tests.conftest import ServerThread
from tests.integration.helpers import make_base_model_dir
from tests.integration.test_cli_commands import Run, cli, fields, rows
from tests.integration.workers import Workers

FAST_SETS = [
    "per_device_train_batch_size=4",
    "max_length=64",
    "logging_steps=1",
    "lora_r=4",
    "lora_alpha=8",
    "warmup_ratio=0",
]


def _sets(*extra: str) -> list[str]:
    return [arg for value in (*FAST_SETS, *extra) for arg in ("--set", value)]


def _one_error_line(run: Run, code: int = 1) -> str:
    """The single `error:` line of a failed command; nothing else on stderr, no traceback."""
    assert run.code == code, f"exit {run.code}: {run.out} {run.err}"
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.err
    assert "Traceback" not in run.err + run.out
    return lines[0]


def test_train_wait_and_the_jobs_and_models_commands(
    stack: ServerThread, workers: Workers, tiny_model: Path
) -> None:
    workers.start()
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
    train = cli(
        stack,
        "train",
        "sft",
        "--base-model",
        "tiny",
        "--dataset",
        "demo-sft",
        *_sets("max_steps=4", "save_steps=2", "target_modules=q_proj,v_proj", "seed=auto"),
        "--output-name",
        "tuned",
        "--wait",
        "--output",
        "json",
    )
    job = train.json()  # stdout is exactly one JSON document
    assert job["state"] == "JOB_STATE_SUCCEEDED" and job["result_model"]
    assert job["method"] == "TRAINING_METHOD_SFT" and job["output_name"] == "tuned"
    assert job["hyperparameters"]["target_modules"] == ["q_proj", "v_proj"]
    assert "seed" not in job["hyperparameters"]  # auto: left to the platform
    progress = train.err.splitlines()  # one line per event, on stderr
    assert progress[0].startswith("#1 state_changed queued")
    assert any(" metrics step 4 " in f"{line} " for line in progress)
    assert progress[-1].startswith(f"#{len(progress)} state_changed succeeded")
    job_id, result = job["id"], job["result_model"]

    listed = cli(stack, "jobs", "list", "--output", "json").json()
    assert [j["id"] for j in listed] == [job_id]
    assert cli(stack, "jobs", "list", "--state", "running", "-o", "json").json() == []
    assert cli(stack, "jobs", "list", "--method", "dpo", "-o", "json").json() == []
    table = rows(cli(stack, "jobs", "list").ok().out)
    assert table == [
        {
            **table[0],
            "ID": job_id,
            "METHOD": "sft",
            "STATE": "succeeded",
            "STEP": "4/4",
            "RESULT": result,
        }
    ]
    shown = cli(stack, "jobs", "show", job_id, "-o", "json").json()
    assert shown["id"] == job_id and shown["progress"]["step"] == 4
    assert fields(cli(stack, "jobs", "show", job_id).ok().out)["state"] == "succeeded"
    events = cli(stack, "jobs", "events", job_id, "-o", "json").json()
    assert [int(e["sequence"]) for e in events] == list(range(1, len(events) + 1))
    assert len(events) == len(progress)
    assert [r["SEQ"] for r in rows(cli(stack, "jobs", "events", job_id).ok().out)] == [
        str(n) for n in range(1, len(events) + 1)
    ]
    checkpoints = cli(stack, "jobs", "checkpoints", job_id, "-o", "json").json()
    assert [int(c["step"]) for c in checkpoints] == [2, 4]
    early = cli(
        stack, "jobs", "register-checkpoint", job_id, "2", "--output-name", "early", "-o", "json"
    ).json()
    assert early["name"] == "early" and early["origin"]["checkpoint_step"] == 2
    registered = rows(cli(stack, "jobs", "checkpoints", job_id).ok().out)
    assert [r["REGISTERED MODEL"] for r in registered] == [early["id"], ""]
    watched = cli(stack, "jobs", "watch", job_id).ok()
    assert watched.out.splitlines() == [*progress, f"{job_id} succeeded: result model {result}"]
    terminal = cli(stack, "jobs", "watch", job_id, env={"FORCE_COLOR": "1"}).ok().out
    assert "4/4" in terminal and "loss " in terminal  # a progress bar, on a terminal
    assert terminal.rstrip().endswith(f"{job_id} succeeded: result model {result}")
    lines = cli(stack, "jobs", "watch", job_id, "-o", "json").ok().out.splitlines()
    assert [int(json.loads(line)["sequence"]) for line in lines] == [
        int(e["sequence"]) for e in events
    ]

    lineage = cli(stack, "models", "lineage", result, "-o", "json").json()
    assert lineage["model"]["id"] == result
    assert [m["name"] for m in lineage["ancestors"]] == ["tiny"]
    cli(stack, "models", "alias", result, "staging", "--reason", "first tuned").ok()
    history = cli(stack, "models", "alias-history", "tuned", "staging", "-o", "json").json()
    assert [(m["alias"], m["to_model"], m["reason"]) for m in history] == [
        ("staging", result, "first tuned")
    ]
    every = cli(stack, "models", "alias-history", "tuned", "-o", "json").json()
    assert every == history
    assert rows(cli(stack, "models", "alias-history", "tuned").ok().out)[0]["ALIAS"] == "staging"

    queued = cli(
        stack,
        "train",
        "sft",
        "-b",
        "tiny",
        "-d",
        "demo-sft",
        *_sets("max_steps=5000"),
        "-o",
        "json",
    ).json()
    assert queued["state"] == "JOB_STATE_QUEUED"
    cancelled = cli(stack, "jobs", "cancel", queued["id"], "-o", "json").json()
    assert cancelled["state"] in ("JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED")
    ended = cli(stack, "jobs", "watch", queued["id"])
    line = _one_error_line(ended)
    assert line.startswith(f"error: {queued['id']} ended cancelled")
    again = cli(stack, "jobs", "cancel", queued["id"])
    assert again.refused("FAILED_PRECONDITION")


def test_a_failed_job_exits_1_with_its_error(
    stack: ServerThread, workers: Workers, tmp_path: Path
) -> None:
    workers.start(LLMOPS_JOB_MAX_ATTEMPTS="1")  # a crash is not retried: it fails at once
    broken = make_base_model_dir(tmp_path)  # well-formed on disk, but no model a worker can load
    cli(stack, "models", "register", "broken", "--path", str(broken)).ok()
    run = cli(
        stack, "train", "sft", "-b", "broken", "-d", "demo-sft", *_sets("max_steps=2"), "--wait"
    )
    assert run.code == 1, run.out
    last = _one_error_line(run)
    assert last.startswith("error: ftjob-") and " ended failed: " in last
    assert len(last.split(" ended failed: ", 1)[1]) > 10  # the worker's reason
    assert run.out.splitlines()[-1].split()[1:3] == ["state_changed", "failed"]


def test_bad_input_is_one_line_never_a_traceback(stack: ServerThread) -> None:
    unknown = cli(stack, "train", "sft", "-b", "tiny", "-d", "demo-sft", "--set", "lora_rank=8")
    line = _one_error_line(unknown, code=2)
    assert line.startswith("error: unknown hyperparameter 'lora_rank' (did you mean 'lora_r'?)")
    assert unknown.out == ""
    for bad in ("max_steps=many", "max_steps", "=3", "packing=maybe"):
        _one_error_line(cli(stack, "train", "sft", "-b", "t", "-d", "d", "--set", bad), code=2)

    missing = cli(stack, "train", "sft", "-b", "nope", "-d", "demo-sft", "--set", "max_steps=2")
    assert "nope" in missing.refused("NOT_FOUND")
    assert "ftjob-000000000000" in cli(stack, "jobs", "show", "ftjob-000000000000").refused(
        "NOT_FOUND"
    )
    assert cli(stack, "jobs", "events", "eval-000000000000").refused("NOT_FOUND")
    assert cli(stack, "jobs", "checkpoints", "ftjob-000000000000").refused("NOT_FOUND")
    wrong_state = _one_error_line(cli(stack, "jobs", "list", "--state", "done"))
    assert wrong_state.startswith("error: unknown job state 'done'; choose one of: queued")
    for rpc in ("pause", "resume"):
        assert cli(stack, "jobs", rpc, "ftjob-000000000000").refused("NOT_FOUND")
    assert cli(stack, "jobs", "register-checkpoint", "ftjob-000000000000", "3").refused("NOT_FOUND")
    _one_error_line(
        cli(stack, "train", "distill", "-b", "tiny", "-d", "demo-sft", "--teacher-model", "")
    )

    # Click's own usage errors: exit 2, and no traceback either.
    for args in (
        ["train", "distill", "-b", "tiny", "-d", "demo-sft"],  # distill needs a teacher
        ["train", "lora", "-b", "tiny", "-d", "demo-sft"],
        ["train", "sft", "-b", "tiny"],
        ["jobs", "register-checkpoint", "ftjob-000000000000", "0"],
    ):
        usage = cli(stack, *args)
        assert usage.code == 2 and "Traceback" not in usage.err + usage.out, args
    help_text = cli(stack, "train", "sft", "--help").ok().out
    assert "--teacher-model" not in help_text and "--set" in help_text
    assert "--teacher-model" in cli(stack, "train", "distill", "--help").ok().out


def test_pause_resume_and_cancel_a_queued_job(stack: ServerThread, tiny_model: Path) -> None:
    """No worker runs, so the job stays queued and every step is the server's answer at once."""
    with llmops.Client(stack.address, timeout=30) as client:
        client.models.create("tiny", str(tiny_model))
    job = cli(stack, "train", "sft", "-b", "tiny", "-d", "demo-sft", "-o", "json").json()
    job_id = job["id"]
    assert job["state"] == "JOB_STATE_QUEUED"
    assert cli(stack, "jobs", "pause", job_id).ok().out == f"{job_id}: paused\n"
    resumed = cli(stack, "jobs", "resume", job_id, "-o", "json").json()
    assert resumed["state"] == "JOB_STATE_QUEUED" and resumed["attempt"] == 2
    refused = cli(stack, "jobs", "resume", job_id).refused("FAILED_PRECONDITION")
    assert "only a paused job can be resumed" in refused
    assert cli(stack, "jobs", "cancel", job_id).ok().out == f"{job_id}: cancelled\n"
    cancelled = cli(stack, "jobs", "list", "--state", "cancelled", "-o", "json").json()
    assert [j["id"] for j in cancelled] == [job_id]
    ended = cli(stack, "jobs", "watch", job_id)
    assert _one_error_line(ended) == f"error: {job_id} ended cancelled: no result"
    states = [line.split()[2] for line in ended.out.splitlines()]
    assert states == ["queued", "paused", "queued", "cancelled"]
    assert cli(stack, "jobs", "checkpoints", job_id).ok().err == f"no checkpoints of {job_id}\n"
