"""The server commands are plugins: the SDK installed alone runs, and names what to install.

A real install: a throwaway environment with only `llmops-client` and its dependencies, from the
lock file and uv's cache (no network), whose `llmops` must show its help and answer each server
command with one line naming the package that provides it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _uv() -> list[str]:
    found = shutil.which("uv")
    if found:
        return [found]
    for python in ("python3", "python"):
        path = shutil.which(python)
        if (
            path
            and subprocess.run([path, "-m", "uv", "--version"], capture_output=True).returncode == 0
        ):
            return [path, "-m", "uv"]
    pytest.skip("uv is not installed")


@pytest.fixture(scope="module")
def sdk_alone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `llmops` of an environment holding the SDK and nothing of the platform."""
    venv = tmp_path_factory.mktemp("sdk-alone") / "venv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)}
    env.pop("VIRTUAL_ENV", None)
    command = [*_uv(), "sync", "--frozen", "--offline", "--quiet", "--no-default-groups"]
    command += ["--package", "llmops-client", "--project", str(REPO)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    python = venv / "bin" / "python"
    check = (
        "import importlib.util as u; print(u.find_spec('llmops_services'), u.find_spec('torch'))"
    )
    assert subprocess.run([python, "-c", check], capture_output=True, text=True).stdout == (
        "None None\n"
    )
    return venv / "bin" / "llmops"


def run(llmops: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120"}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run([llmops, *args], env=env, capture_output=True, text=True, timeout=60)


def test_help_works_without_the_server(sdk_alone: Path) -> None:
    done = run(sdk_alone, "--help")
    assert done.returncode == 0, done.stderr
    for group in ("registry", "datasets", "models", "train", "jobs", "eval"):
        assert group in done.stdout
    assert "Traceback" not in done.stderr
    assert "build-tiny" not in run(sdk_alone, "models", "--help").stdout


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["up"], "error: 'llmops up' is part of the server package: pip install llmops-platform"),
        (
            ["serve", "registry", "--grpc-port", "0"],
            "error: 'llmops serve' is part of the server package: pip install llmops-platform",
        ),
        (
            ["keys", "list"],
            "error: 'llmops keys' is part of the server package: pip install llmops-platform",
        ),
        (
            ["worker", "--threads", "2"],
            "error: 'llmops worker' is part of the workers package: pip install llmops-workers",
        ),
        (
            ["models", "build-tiny", "--no-register"],
            "error: 'llmops models build-tiny' is part of the workers package: "
            "pip install llmops-workers",
        ),
    ],
)
def test_a_server_command_says_what_to_install(sdk_alone: Path, args: list[str], line: str) -> None:
    done = run(sdk_alone, *args)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == line + "\n"


def test_an_unknown_command_is_still_a_usage_error(sdk_alone: Path) -> None:
    done = run(sdk_alone, "upp")
    assert done.returncode == 2
    assert "No such command" in done.stderr


def test_up_without_the_workers_package_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server alone (no llmops-workers) runs `up --workers 0`; `up` with workers says what
    is missing instead of starting workers that cannot run."""
    import importlib.util

    from typer.testing import CliRunner

    from llmops.cli.main import app

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "llmops_workers" else real(name, *args),
    )
    result = CliRunner().invoke(app, ["up", "--workers", "1"])
    assert result.exit_code == 1
    assert result.stderr == (
        "error: 'llmops up' starts workers from the workers package: pip install llmops-workers "
        "(or run the services alone with --workers 0)\n"
    )
