"""The `llmops` CLI's registry, datasets and models commands against a real server: what people
see in tables, what scripts read with `-o json`, the notes on empty lists, and one-line refusals
with exit status 1."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import llmops
from llmops.cli import _common
from llmops.cli import models as models_cli
from llmops.cli.main import app
from llmops_services.db.tables import JobRow
from llmops_services.runtime.auth import create_key
from tests.conftest import ServerThread
from tests.integration.helpers import (
    add_job,
    db_of,
    make_adapter_dir,
    make_base_model_dir,
    safetensors_bytes,
)

SFT_ROWS = b'{"prompt": "2+2=", "completion": " 4"}\n{"prompt": "3+3=", "completion": " 6"}\n'


class Run:
    """One CLI invocation's outcome."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = out
        self.err = err

    def ok(self) -> Run:
        assert self.code == 0, f"exit {self.code}: {self.err}"
        return self

    def json(self) -> Any:
        return json.loads(self.ok().out)

    def refused(self, code_name: str) -> str:
        """The one `error:` line of a refused command, checked to name `code_name`."""
        assert self.code == 1, f"exit {self.code}: {self.out}"
        assert self.out == ""
        assert self.err.startswith(f"error: {code_name}"), self.err
        assert len(self.err.strip().splitlines()) == 1 and "Traceback" not in self.err
        return self.err.strip()


def cli(
    server: ServerThread,
    *args: str,
    global_args: tuple[str, ...] = (),
    env: Mapping[str, str | None] | None = None,
) -> Run:
    """`llmops --address <server> [global_args] <args>`, with `env` set while it runs."""
    result = CliRunner().invoke(app, ["--address", server.address, *global_args, *args], env=env)
    return Run(result.exit_code, result.stdout, result.stderr)


def rows(table: str) -> list[dict[str, str]]:
    """A plain table (what the CLI prints when stdout is no terminal) as dicts by header.

    Headers are separated by two spaces or more (`EVAL RUN` is one); cells are cut at the
    headers' starts, so empty cells stay empty.
    """
    header, *lines = table.rstrip("\n").splitlines()
    columns = list(re.finditer(r"\S+(?: \S+)*", header))
    ends = [column.start() for column in columns[1:]] + [None]
    return [
        {
            column.group(): line[column.start() : end].strip()
            for column, end in zip(columns, ends, strict=True)
        }
        for line in lines
    ]


def fields(text: str) -> dict[str, str]:
    """`key: value` lines (as `print_fields` prints them) as a dict; other lines are skipped."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep and " " not in key:
            found[key] = value.strip()
    return found


def register(server: ServerThread, name: str, path: Path) -> dict[str, Any]:
    """`llmops models register NAME --path DIR -o json`."""
    model: dict[str, Any] = cli(
        server, "models", "register", name, "--path", str(path), "-o", "json"
    ).json()
    return model


# Models


def test_empty_lists_print_a_note_on_stderr_and_nothing_on_stdout(server: ServerThread) -> None:
    listed = cli(server, "models", "list").ok()
    assert (listed.out, listed.err) == ("", "no models\n")
    assert cli(server, "models", "list", "-o", "json").json() == []
    aliases = cli(server, "models", "aliases").ok()
    assert (aliases.out, aliases.err) == ("", "no aliases\n")
    history = cli(server, "models", "alias-history", "ghost", "production").ok()
    assert (history.out, history.err) == ("", "no history for ghost@production\n")


def test_register_list_and_show_models(
    server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_base_model_dir(tmp_path)
    monkeypatch.chdir(tmp_path)  # a relative --path reaches the server as an absolute one
    registered = cli(
        server, "models", "register", "tiny", "-p", path.name, "-d", "a tiny llama"
    ).ok()
    title, *_ = registered.out.splitlines()
    assert title.startswith("registered tiny (mdl-") and title.endswith(")")
    first_id = title.removeprefix("registered tiny (").removesuffix(")")
    shown = fields(registered.out)
    assert shown["id"] == first_id and shown["name"] == "tiny" and shown["version"] == "1"
    assert shown["kind"] == "base"  # the enum's short name, not MODEL_KIND_BASE
    assert shown["uri"] == str(path.resolve())
    assert shown["architecture"] == "LlamaForCausalLM"
    assert shown["description"] == "a tiny llama"

    second = register(server, "tiny", path)
    assert (second["name"], second["version"], second["kind"]) == ("tiny", 2, "MODEL_KIND_BASE")
    other = register(server, "other", make_base_model_dir(tmp_path, "other"))

    table = rows(cli(server, "models", "list").ok().out)
    assert [(r["ID"], r["NAME"], r["VERSION"], r["KIND"]) for r in table] == [
        (other["id"], "other", "1", "base"),
        (second["id"], "tiny", "2", "base"),
        (first_id, "tiny", "1", "base"),
    ]
    for row in table:
        assert row["SIZE"] == f"{len(safetensors_bytes())} B"
        assert row["CREATED"].endswith("Z") and row["ALIASES"] == ""

    by_name = cli(server, "models", "list", "--name", "tiny", "-o", "json").json()
    assert [m["id"] for m in by_name] == [second["id"], first_id]
    assert len(cli(server, "models", "list", "--kind", "base", "-o", "json").json()) == 3
    adapters = cli(server, "models", "list", "-k", "adapter").ok()
    assert (adapters.out, adapters.err) == ("", "no models\n")

    # By id, by name (the newest version), and as JSON.
    assert fields(cli(server, "models", "show", first_id).ok().out)["version"] == "1"
    assert fields(cli(server, "models", "show", "tiny").ok().out)["id"] == second["id"]
    shown_json = cli(server, "models", "show", "other", "-o", "json").json()
    assert shown_json["id"] == other["id"] and shown_json["tokenizer_sha256"]

    missing = cli(server, "models", "show", "tiny@production").refused("NOT_FOUND")
    assert "tiny@production" in missing
    refused = cli(server, "models", "register", "bad", "--path", str(tmp_path / "nothing"))
    assert "model.uri" in refused.refused("INVALID_ARGUMENT")


def test_alias_move_history_rollback_and_delete(server: ServerThread, tmp_path: Path) -> None:
    path = make_base_model_dir(tmp_path)
    v1 = register(server, "tiny", path)["id"]
    v2 = register(server, "tiny", path)["id"]

    moved = cli(server, "models", "alias", v1, "production", "--reason", "first release").ok()
    assert moved.out == f"tiny@production -> {v1}\n"
    moved = cli(server, "models", "alias", "tiny", "production", "-r", "v2 is better").ok()
    assert moved.out == f"tiny@production -> {v2}\n"
    staging = cli(server, "models", "alias", v1, "staging", "-o", "json").json()
    assert (staging["model_name"], staging["alias"], staging["model"]) == ("tiny", "staging", v1)

    shown = fields(cli(server, "models", "show", "tiny@production").ok().out)
    assert shown["id"] == v2 and shown["aliases"] == "production"
    table = rows(cli(server, "models", "list").ok().out)
    assert [(r["ID"], r["ALIASES"]) for r in table] == [(v2, "production"), (v1, "staging")]

    aliases = rows(cli(server, "models", "aliases", "tiny").ok().out)
    assert [(a["NAME"], a["ALIAS"], a["MODEL"], a["BY"]) for a in aliases] == [
        ("tiny", "production", v2, "anonymous"),
        ("tiny", "staging", v1, "anonymous"),
    ]
    assert all(a["UPDATED"].endswith("Z") for a in aliases)
    every = cli(server, "models", "aliases", "-o", "json").json()
    assert [a["alias"] for a in every] == ["production", "staging"]

    history = rows(cli(server, "models", "alias-history", "tiny", "production").ok().out)
    assert [
        (m["FROM"], m["TO"], m["ACTOR"], m["REASON"], m["EVAL RUN"], m["FORCED"]) for m in history
    ] == [
        (v1, v2, "anonymous", "v2 is better", "", ""),
        ("", v1, "anonymous", "first release", "", ""),
    ]

    back = cli(server, "models", "rollback", "tiny", "production", "-r", "v2 regressed").ok()
    assert back.out == f"tiny@production -> {v1}\n"
    assert fields(cli(server, "models", "show", "tiny@production").ok().out)["id"] == v1
    moves = cli(server, "models", "alias-history", "tiny", "production", "-o", "json").json()
    assert (moves[0]["from_model"], moves[0]["to_model"], moves[0]["reason"]) == (
        v2,
        v1,
        "v2 regressed",
    )
    forward = cli(server, "models", "rollback", "tiny", "production", "-o", "json").json()
    assert forward["model"] == v2

    # Deleting a model an alias points at is refused, naming the alias; unaliased, it goes.
    error = cli(server, "models", "delete", "tiny@production").refused("FAILED_PRECONDITION")
    assert "tiny@production" in error and v2 in error
    assert cli(server, "models", "unalias", "tiny", "production").ok().out == (
        "removed alias tiny@production\n"
    )
    assert "tiny@production" in cli(server, "models", "unalias", "tiny", "production").refused(
        "NOT_FOUND"
    )
    assert cli(server, "models", "delete", v2).ok().out == f"deleted model {v2}\n"
    cli(server, "models", "show", v2).refused("NOT_FOUND")
    assert [m["id"] for m in cli(server, "models", "list", "-o", "json").json()] == [v1]
    bad_alias = cli(server, "models", "alias", v1, "Not A Slug")
    assert "alias" in bad_alias.refused("INVALID_ARGUMENT")


def test_lineage_shows_ancestors_descendants_evals_and_aliases(
    server: ServerThread, tmp_path: Path
) -> None:
    base = register(server, "base", make_base_model_dir(tmp_path))
    with llmops.Client(server.address, timeout=10) as client:
        adapter = client.models.create(
            "ada", str(make_adapter_dir(tmp_path)), "adapter", base_model="base"
        )
    add_job(db_of(server), JobRow(id="eval-1", kind="eval", state="SUCCEEDED", model_id=adapter.id))
    cli(server, "models", "alias", adapter.id, "production").ok()

    of_base = cli(server, "models", "lineage", "base").ok()
    assert of_base.out.startswith(f"model base ({base['id']})\n")
    sections = of_base.out.split("\n\n")
    assert fields(sections[0])["name"] == "base"
    assert sections[1] == "ancestors:"  # empty: the note went to stderr
    assert sections[2].startswith("descendants:\n")
    assert [(r["ID"], r["KIND"], r["ALIASES"]) for r in rows(sections[2].split("\n", 1)[1])] == [
        (adapter.id, "adapter", "production")
    ]
    assert sections[3:] == ["eval runs:", "aliases:\n"]
    assert of_base.err == "no ancestors\nno eval runs\nno aliases\n"

    of_adapter = cli(server, "models", "lineage", "ada@production").ok()
    sections = of_adapter.out.split("\n\n")
    assert fields(sections[0])["origin.base_model"] == base["id"]
    assert [r["ID"] for r in rows(sections[1].split("\n", 1)[1])] == [base["id"]]
    assert sections[2] == "descendants:"
    assert sections[3] == "eval runs:\neval-1"
    alias_rows = rows(sections[4].split("\n", 1)[1])
    assert [(a["NAME"], a["ALIAS"], a["MODEL"]) for a in alias_rows] == [
        ("ada", "production", adapter.id)
    ]
    assert of_adapter.err == "no descendants\n"

    as_json = cli(server, "models", "lineage", adapter.id, "-o", "json").json()
    assert as_json["model"]["id"] == adapter.id
    assert [m["id"] for m in as_json["ancestors"]] == [base["id"]]
    assert as_json["eval_runs"] == ["eval-1"]

    # The base is built on: deleting it is refused, naming the dependent adapter.
    error = cli(server, "models", "delete", "base").refused("FAILED_PRECONDITION")
    assert f"models/{adapter.id}" in error


# Registry (prompt templates)


def test_templates_show_create_versions_and_refusals(server: ServerThread, tmp_path: Path) -> None:
    shown = cli(server, "registry", "show", "summarization", "--version", "1").ok()
    lines = shown.out.splitlines()
    # A multi-line template prints indented under its key.
    start = lines.index("template:")
    assert lines[start + 1 : start + 4] == [
        "  Summarize in one sentence.",
        "  Text: {text}",
        "  Summary:",
    ]
    assert fields(shown.out)["template_id"] == "summarization"

    created = cli(
        server, "registry", "create", "qa", "--template", "Q: {text} A:", "--task", "qa", "-d", "v1"
    ).ok()
    assert fields(created.out)["version"] == "1" and fields(created.out)["task"] == "qa"
    template_file = tmp_path / "qa.txt"
    template_file.write_text("Question: {text}\nAnswer:", "utf-8")
    second = cli(
        server, "registry", "create", "qa", "--template-file", str(template_file), "-o", "json"
    ).json()
    assert second["version"] == 2 and second["template"] == "Question: {text}\nAnswer:"

    versions = rows(cli(server, "registry", "versions", "qa").ok().out)
    assert [(v["VERSION"], v["DESCRIPTION"]) for v in versions] == [("2", ""), ("1", "v1")]
    assert versions[1]["TASK"] == "qa" and versions[0]["CREATED"].endswith("Z")
    as_json = cli(server, "registry", "versions", "qa", "-o", "json").json()
    assert [v["version"] for v in as_json] == [2, 1]
    first = cli(server, "registry", "show", "qa", "--version", "1", "-o", "json").json()
    assert first["template"] == "Q: {text} A:"

    listed = cli(server, "registry", "list", "-o", "json").json()
    assert [(t["template_id"], t["version"]) for t in listed] == [
        ("classification", 1),
        ("extraction", 1),
        ("qa", 2),
        ("summarization", 1),
    ]

    bad = cli(server, "registry", "create", "qa", "--template", "no placeholder")
    assert "prompt_template.template" in bad.refused("INVALID_ARGUMENT")
    neither = cli(server, "registry", "create", "qa")
    assert neither.refused("give the template text") == (
        "error: give the template text with --template or --template-file (one of them)"
    )
    both = cli(
        server, "registry", "create", "qa", "-t", "{text}", "--template-file", str(template_file)
    )
    both.refused("give the template text")
    assert "qa" in cli(server, "registry", "show", "qa", "--version", "9").refused("NOT_FOUND")
    assert "nope" in cli(server, "registry", "versions", "nope").refused("NOT_FOUND")


# Datasets


def test_datasets_show_list_by_kind_and_delete(server: ServerThread, tmp_path: Path) -> None:
    path = tmp_path / "math.jsonl"
    path.write_bytes(SFT_ROWS)
    uploaded = cli(server, "datasets", "upload", str(path), "--kind", "sft", "-n", "math").ok()
    assert uploaded.out.startswith("uploaded math\n")
    again = cli(server, "datasets", "upload", str(path), "--kind", "sft", "-n", "math").ok()
    assert again.out.startswith("uploaded math (identical dataset already existed)\n")

    shown = fields(cli(server, "datasets", "show", "math").ok().out)
    assert (shown["name"], shown["kind"], shown["row_count"]) == ("math", "sft", "2")
    assert shown["size_bytes"] == str(len(SFT_ROWS))
    by_id = cli(server, "datasets", "show", shown["id"], "-o", "json").json()
    assert by_id["name"] == "math" and by_id["sha256"] == shown["sha256"]

    evals = rows(cli(server, "datasets", "list", "--kind", "eval").ok().out)
    assert [(d["NAME"], d["KIND"]) for d in evals] == [("demo-eval", "eval")]
    size = int(cli(server, "datasets", "show", "demo-eval", "-o", "json").json()["size_bytes"])
    assert size > 1024 and evals[0]["SIZE"] == f"{size / 1024:.1f} KiB"
    assert int(evals[0]["ROWS"]) > 0 and evals[0]["CREATED"].endswith("Z")
    sft = cli(server, "datasets", "list", "-k", "sft", "-o", "json").json()
    assert [d["name"] for d in sft] == ["math", "demo-sft"]

    assert cli(server, "datasets", "delete", "math").ok().out == "deleted dataset math\n"
    assert "math" in cli(server, "datasets", "show", "math").refused("NOT_FOUND")
    cli(server, "datasets", "delete", "math").refused("NOT_FOUND")


# Connection options


def test_api_key_lets_a_reader_list_but_not_create(server: ServerThread) -> None:
    key = create_key(db_of(server), "reader")
    anonymous = cli(server, "registry", "list")
    anonymous.refused("UNAUTHENTICATED")
    as_reader = ("--api-key", key.secret, "--no-tls", "--timeout", "10")
    listed = cli(server, "registry", "list", global_args=as_reader).ok()
    assert listed.out.split() == ["classification", "extraction", "summarization"]
    refused = cli(server, "registry", "create", "qa", "-t", "Q: {text}", global_args=as_reader)
    assert "reader" in refused.refused("PERMISSION_DENIED")
    wrong = cli(server, "registry", "list", global_args=("--api-key", "llmops_wrong"))
    wrong.refused("UNAUTHENTICATED")


def test_a_command_group_on_its_own_reads_the_address_from_the_environment(
    server: ServerThread, tmp_path: Path
) -> None:
    register(server, "tiny", make_base_model_dir(tmp_path))
    result = CliRunner().invoke(
        models_cli.app, ["list", "-o", "json"], env={"LLMOPS_ADDRESS": server.address}
    )
    assert result.exit_code == 0, result.output
    assert [m["name"] for m in json.loads(result.stdout)] == ["tiny"]


def test_tables_on_a_terminal_are_drawn_by_rich(
    server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal tables are drawn by rich; user text in them is shown as typed, never read
    as rich markup (which dropped `[bold]` and crashed on `[/]`)."""
    model = register(server, "tiny", make_base_model_dir(tmp_path))
    reason = "hotfix [JIRA-42] [bold] not bold [/]"
    cli(server, "models", "alias", model["id"], "production", "--reason", reason).ok()
    monkeypatch.setattr(_common, "_is_tty", lambda: True)
    wide = {"COLUMNS": "250"}

    out = cli(server, "models", "list", env=wide).ok().out
    header, row = out.rstrip("\n").splitlines()
    assert header.split() == ["ID", "NAME", "VERSION", "KIND", "ALIASES", "SIZE", "CREATED", "URI"]
    assert row.split()[:5] == [model["id"], "tiny", "1", "base", "production"]
    assert row.split()[-1] == model["uri"]

    history = cli(server, "models", "alias-history", "tiny", "production", env=wide).ok().out
    header, row = history.rstrip("\n").splitlines()
    assert header.split() == ["WHEN", "FROM", "TO", "ACTOR", "REASON", "EVAL", "RUN", "FORCED"]
    assert f"{model['id']}  anonymous  {reason}" in row

    description = "ends a tag that was never opened [/]"
    cli(server, "registry", "create", "qa", "-t", "Q: {text}", "-d", description).ok()
    versions = cli(server, "registry", "versions", "qa", env=wide).ok().out
    assert versions.splitlines()[1].rstrip().endswith(description)

    empty = cli(server, "models", "aliases", "ghost").ok()
    assert (empty.out, empty.err) == ("", "no aliases\n")
