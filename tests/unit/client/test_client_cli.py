"""The CLI without a server: local template validation, help pages and the error line."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from llmops.cli import plugins
from llmops.cli._common import CliState, LlmopsGroup, PluginGroup
from llmops.cli.main import app
from llmops.errors import FieldViolation, InvalidArgument
from llmops.v1 import registry_service_pb2

REPO = Path(__file__).resolve().parents[3]
TEMPLATE_FILE = REPO / "config" / "prompt_templates.json"

runner = CliRunner()


def test_validate_the_bundled_file() -> None:
    result = runner.invoke(app, ["registry", "validate", "--file", str(TEMPLATE_FILE)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "OK: 3 templates\n"


def test_validate_defaults_to_config_in_the_working_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO)
    result = runner.invoke(app, ["registry", "validate"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "OK: 3 templates\n"


def test_validate_a_broken_file(tmp_path: Path) -> None:
    data = json.loads(TEMPLATE_FILE.read_text(encoding="utf-8"))
    data["templates"][0]["template"] = "Summarize {name}"
    data["templates"][2]["id"] = "Extraction"
    broken = tmp_path / "templates.json"
    broken.write_text(json.dumps(data), encoding="utf-8")

    result = runner.invoke(app, ["registry", "validate", "-f", str(broken)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines == [
        f"{broken}: templates[0] (summarization): unknown placeholder {{name}}; only {{text}} "
        "is allowed (write {{ and }} for literal braces)",
        f"{broken}: templates[0] (summarization): template must contain {{text}}",
        f"{broken}: templates[2] (Extraction): id 'Extraction' must be lowercase letters, "
        "digits, '-' and '_', starting with a letter or digit",
    ]
    assert "Traceback" not in result.output


def test_validate_a_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["registry", "validate", "--file", str(tmp_path / "none.json")])
    assert result.exit_code == 1
    assert "cannot read" in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ["registry", "datasets", "models", "--address", "--api-key", "--timeout"]),
        (["registry"], ["list", "show", "versions", "create", "validate"]),
        (["datasets"], ["upload", "list", "show", "delete"]),
        (
            ["models"],
            [
                "list",
                "show",
                "register",
                "delete",
                "alias",
                "unalias",
                "aliases",
                "alias-history",
                "rollback",
                "lineage",
            ],
        ),
        (["datasets", "upload"], ["--kind", "--name", "--description", "--output"]),
        (["models", "list"], ["--kind", "--name", "--output"]),
        (["registry", "show"], ["--version", "--output"]),
    ],
)
def test_help(args: list[str], expected: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for word in expected:
        assert word in result.stdout, word


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("llmops ")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_unreachable_server_is_one_error_line() -> None:
    address = f"127.0.0.1:{_closed_port()}"
    result = runner.invoke(app, ["--address", address, "--timeout", "5", "registry", "list"])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: UNAVAILABLE: ")
    assert f"is the server running at {address}?" in lines[0]


def test_address_from_the_environment() -> None:
    address = f"127.0.0.1:{_closed_port()}"
    result = runner.invoke(app, ["models", "list", "-o", "json"], env={"LLMOPS_ADDRESS": address})
    assert result.exit_code == 1
    assert address in result.stderr


def test_bad_settings_are_one_error_line() -> None:
    result = runner.invoke(app, ["datasets", "list"], env={"LLMOPS_TIMEOUT": "soon"})
    assert result.exit_code == 1
    assert result.stderr == "error: LLMOPS_TIMEOUT='soon' is not a number of seconds\n"


def test_local_argument_errors_are_usage_errors(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("{}\n", encoding="utf-8")
    result = runner.invoke(app, ["datasets", "upload", str(rows), "--kind", "chat"])
    assert result.exit_code == 2
    assert "chat" in result.stderr
    result = runner.invoke(
        app, ["datasets", "upload", str(tmp_path / "missing.jsonl"), "-k", "sft"]
    )
    assert result.exit_code == 2


# Commands over a fake client: what they print, without a server.


class FakeTemplates:
    def list(self) -> Iterator[registry_service_pb2.PromptTemplate]:
        for template_id in ("classification", "extraction", "summarization"):
            yield registry_service_pb2.PromptTemplate(
                template_id=template_id, version=1, template="{text}"
            )


class FakeDatasets:
    def __init__(self) -> None:
        self.uploads: list[tuple[Path, str, str, str]] = []

    def list(self, kind: str | None = None) -> Iterator[registry_service_pb2.Dataset]:
        yield registry_service_pb2.Dataset(
            id="ds-1", name="demo-sft", kind=registry_service_pb2.DATASET_KIND_SFT, row_count=9
        )

    def upload(
        self, path: Path, kind: str, name: str, description: str
    ) -> registry_service_pb2.UploadDatasetResponse:
        self.uploads.append((path, kind, name, description))
        raise InvalidArgument(
            "dataset upload refused (3 problems)",
            field_violations=[
                FieldViolation("line 2 prompt", "missing"),
                FieldViolation("line 3", "not JSON"),
                FieldViolation("line 7 completion", "must be a string"),
            ],
        )


class FakeModels:
    def __init__(self) -> None:
        self.created: list[tuple[str, str, str, str, bool]] = []

    def get(self, ref: str) -> registry_service_pb2.Model:
        return registry_service_pb2.Model(
            id="mdl-1", name=ref, version=2, kind=registry_service_pb2.MODEL_KIND_BASE
        )

    def create(
        self, name: str, uri: str, kind: str, description: str, *, trust_remote_code: bool
    ) -> registry_service_pb2.Model:
        self.created.append((name, uri, kind, description, trust_remote_code))
        return registry_service_pb2.Model(id="mdl-2", name=name, uri=uri)


@dataclass
class FakeClient:
    templates: FakeTemplates = field(default_factory=FakeTemplates)
    datasets: FakeDatasets = field(default_factory=FakeDatasets)
    models: FakeModels = field(default_factory=FakeModels)

    def close(self) -> None:
        pass


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    client = FakeClient()
    monkeypatch.setattr(CliState, "client", lambda self: client)
    return client


def test_registry_list_prints_only_the_ids(fake: FakeClient) -> None:
    result = runner.invoke(app, ["registry", "list"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "classification\nextraction\nsummarization\n"


def test_registry_list_as_json(fake: FakeClient) -> None:
    result = runner.invoke(app, ["registry", "list", "-o", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [t["template_id"] for t in data] == ["classification", "extraction", "summarization"]
    # Every field, unset ones with their zero value, so that scripts find each key.
    assert data[0] == {
        "template_id": "classification",
        "version": 1,
        "template": "{text}",
        "description": "",
        "task": "",
    }


def test_datasets_list_table_and_json(fake: FakeClient) -> None:
    result = runner.invoke(app, ["datasets", "list"])
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "KIND", "ROWS", "SIZE", "CREATED"]
    assert row.split()[:4] == ["ds-1", "demo-sft", "sft", "9"]
    result = runner.invoke(app, ["datasets", "list", "--output", "json"])
    [listed] = json.loads(result.stdout)
    # int64 counts as JSON numbers, and unset fields with their zero values
    assert listed["row_count"] == 9 and listed["size_bytes"] == 0
    assert {k: listed[k] for k in ("id", "name", "kind")} == {
        "id": "ds-1",
        "name": "demo-sft",
        "kind": "DATASET_KIND_SFT",
    }


def test_upload_refusal_is_one_line_with_every_violation(fake: FakeClient, tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("{}\n", encoding="utf-8")
    result = runner.invoke(app, ["datasets", "upload", str(rows), "--kind", "sft", "-n", "mine"])
    assert result.exit_code == 1
    assert fake.datasets.uploads == [(rows, "sft", "mine", "")]
    assert result.stderr == (
        "error: INVALID_ARGUMENT: dataset upload refused (3 problems): line 2 prompt: missing; "
        "line 3: not JSON; line 7 completion: must be a string\n"
    )
    assert result.stdout == ""


def test_models_show_json_keeps_proto_field_names(fake: FakeClient) -> None:
    result = runner.invoke(app, ["models", "show", "tiny", "-o", "json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert {k: shown[k] for k in ("id", "name", "version", "kind")} == {
        "id": "mdl-1",
        "name": "tiny",
        "version": 2,
        "kind": "MODEL_KIND_BASE",
    }
    assert shown["description"] == "" and shown["aliases"] == [] and shown["size_bytes"] == 0
    result = runner.invoke(app, ["models", "show", "tiny"])
    assert "kind:    base" in result.stdout


def test_models_register_sends_local_paths_absolute(
    fake: FakeClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my-model").mkdir()
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["models", "register", "mine", "--path", "my-model"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["models", "register", "hub", "--path", "s3://bucket/model"])
    assert result.exit_code == 0, result.output
    trusted = ["models", "register", "own", "--path", "my-model", "--trust-remote-code"]
    assert runner.invoke(app, trusted).exit_code == 0
    assert fake.models.created == [
        ("mine", str(tmp_path / "my-model"), "base", "", False),
        ("hub", "s3://bucket/model", "base", "", False),
        ("own", str(tmp_path / "my-model"), "base", "", True),
    ]


# Plugins: the server's and the workers' commands


def _bare_app() -> typer.Typer:
    """A root command like `llmops`'s, with a `models` group and no plugins loaded."""
    root = typer.Typer(cls=LlmopsGroup, pretty_exceptions_enable=False)
    group = typer.Typer(cls=PluginGroup)

    @root.callback()
    def main() -> None:
        """The root."""

    @group.command("list")
    def list_models() -> None:
        """Lists."""

    root.add_typer(group, name="models")
    return root


@pytest.mark.parametrize(
    ("args", "package"),
    [
        (["up", "--workers", "2"], "server package: pip install llmops-platform"),
        (["keys", "create", "--role", "admin"], "server package: pip install llmops-platform"),
        (["worker", "--help"], "workers package: pip install llmops-workers"),
        (["models", "build-tiny"], "workers package: pip install llmops-workers"),
    ],
)
def test_a_missing_plugin_command_names_its_package(args: list[str], package: str) -> None:
    result = runner.invoke(_bare_app(), args)
    assert result.exit_code == 1
    command = " ".join(args[:2] if args[0] == "models" else args[:1])
    assert result.stderr == f"error: 'llmops {command}' is part of the {package}\n"


def test_plugins_register_commands_and_a_broken_one_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Entry:
        def __init__(self, name: str, register: Any, dist: str) -> None:
            self.name, self.value, self._register = name, f"{dist}.cli:register", register
            self.dist = SimpleNamespace(name=dist)

        def load(self) -> Any:
            if isinstance(self._register, Exception):
                raise self._register
            return self._register

    def add_worker(app: typer.Typer) -> None:
        plugins.group(app, "models").command("extra")(lambda: typer.echo("extra ran"))

    entries = [
        Entry("workers", add_worker, "llmops-workers"),
        Entry("server", ImportError("no module named llmops_services.cli"), "llmops-platform"),
    ]
    monkeypatch.setattr(plugins, "_failures", {})
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: entries)
    app = _bare_app()
    plugins.load_plugins(app)
    assert runner.invoke(app, ["models", "extra"]).stdout == "extra ran\n"
    result = runner.invoke(app, ["up"])
    assert result.exit_code == 1
    assert result.stderr == (
        "error: 'llmops up' failed to load: llmops-platform.cli:register: "
        "ImportError: no module named llmops_services.cli\n"
    )
    with pytest.raises(LookupError, match="no group 'nope'"):
        plugins.group(app, "nope")


def test_the_installed_plugins_add_the_server_commands() -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    for command in ("up", "serve", "worker", "keys"):
        assert command in result.stdout
    assert "build-tiny" in runner.invoke(app, ["models", "--help"]).stdout


def test_json_output_keeps_zero_values_and_prints_int64_as_numbers() -> None:
    from llmops.cli._common import to_json
    from llmops.v1 import eval_service_pb2

    run = eval_service_pb2.EvalRun(
        id="eval-1",
        metrics=[eval_service_pb2.TaskMetric(task="all", metric="exact_match", count=2)],
    )
    [metric] = to_json(run)["metrics"]
    # A score of 0.0 is printed, not dropped (proto3 leaves zero values out by default).
    assert metric == {"task": "all", "metric": "exact_match", "value": 0.0, "count": 2}
