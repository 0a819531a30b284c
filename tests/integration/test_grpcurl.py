"""The grpcurl commands of docs/api.md, run as written with the real grpcurl binary against a real
server: list, health, upload a dataset, create, get, watch and cancel a job, generate and
stream. Only the address changes (the server listens on a free port)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmops.v1 import registry_service_pb2_grpc
from tests.conftest import ServerThread, make_settings
from tests.integration.helpers import base_model

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "api.md"
PROJECT_GRPCURL = ROOT / ".bin" / "grpcurl"


def documented_script() -> str:
    """The bash block of docs/api.md's grpcurl section."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("\n## grpcurl\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```bash\n(.*?)\n```", section, re.DOTALL)
    assert match, "docs/api.md's grpcurl section has no bash block"
    return match.group(1)


@pytest.fixture(scope="module")
def grpcurl_dir() -> Path:
    """Where grpcurl is; a run without it fails (`make gateway-tools` installs it)."""
    if PROJECT_GRPCURL.exists():
        return PROJECT_GRPCURL.parent
    found = shutil.which("grpcurl")
    if found is None:
        pytest.fail(f"grpcurl is missing: `make gateway-tools` installs it into {PROJECT_GRPCURL}")
    return Path(found).parent


@pytest.fixture
def server(data_dir: Path, tiny_model: Path) -> Iterator[ServerThread]:
    """A server with the tiny model registered as llmops-tiny, and no worker."""
    settings = make_settings(data_dir, inference_threads=1, inference_device="cpu")
    running = ServerThread(settings).start()
    running.call(_register(running.address, tiny_model))
    yield running
    running.stop()


async def _register(address: str, model_dir: Path) -> None:
    import grpc

    async with grpc.aio.insecure_channel(address) as channel:
        registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
        await registry.CreateModel(base_model("llmops-tiny", model_dir))


def json_objects(text: str) -> list[dict[str, object]]:
    """The JSON objects grpcurl printed one after another (each pretty-printed)."""
    decoder = json.JSONDecoder()
    objects: list[dict[str, object]] = []
    index = 0
    while True:
        start = text.find("{", index)
        if start < 0:
            return objects
        value, index = decoder.raw_decode(text, start)
        objects.append(value)


def test_the_documented_grpcurl_commands_work_as_written(
    server: ServerThread, grpcurl_dir: Path, tmp_path: Path
) -> None:
    script = documented_script().replace("localhost:50051", server.address)
    env = {**os.environ, "PATH": f"{grpcurl_dir}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    out = done.stdout
    listed = out.split("{", 1)[0].split()
    assert {"llmops.v1.InferenceService", "llmops.v1.TrainingService"} <= set(listed)
    assert "grpc.health.v1.Health" in listed

    objects = json_objects(out)
    assert objects[0] == {"status": "SERVING"}
    dataset = objects[1]["dataset"]
    assert isinstance(dataset, dict) and dataset["name"] == "my-sft"
    assert dataset["row_count"] == "2"  # proto3 JSON: int64 as a string
    job = objects[2]  # GetTrainingJob (CreateTrainingJob's output went to the id extraction)
    assert job["state"] == "JOB_STATE_QUEUED" and str(job["id"]).startswith("ftjob-")
    states = [o.get("state") for o in objects if o.get("type") == "JOB_EVENT_TYPE_STATE_CHANGED"]
    assert states == ["JOB_STATE_QUEUED", "JOB_STATE_CANCELLED"]  # the watch, to the end
    generated = next(o for o in objects if "rendered_prompt" in o)
    assert "Hugo Jensen" in str(generated["rendered_prompt"]) and generated["text"]
    streamed = [o for o in objects if "text_delta" in o or o.get("finish_reason")]
    assert streamed[-1]["finish_reason"] in ("FINISH_REASON_LENGTH", "FINISH_REASON_STOP")
    assert streamed[-1]["usage"]
