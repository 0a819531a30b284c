"""The REST gateway (the Go binary `llmops-gateway`, built from services/gateway) as a child of
`llmops up`, and how the CLI finds it."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

BINARY_NAME = "llmops-gateway"
# Where `make gateway` puts it: <repository>/.bin/llmops-gateway.
PROJECT_BINARY = Path(__file__).resolve().parents[2] / ".bin" / BINARY_NAME
MISSING = (
    f"the REST gateway binary ({BINARY_NAME}) was not found in .bin/ or on PATH: build it with "
    "`make gateway` (or set LLMOPS_GATEWAY_BINARY)"
)
# The one line the binary writes on stdout once it listens: http://, or https:// when it serves TLS
# (-tls-cert, or LLMOPS_GATEWAY_TLS_CERT_FILE in its environment).
_LISTENING = re.compile(r"listening on (https?://\S+)")


class GatewayError(RuntimeError):
    """The gateway could not be found or did not start."""


def find_binary(configured: str = "") -> Path:
    """The gateway binary: `configured` (LLMOPS_GATEWAY_BINARY), else the project's .bin/, else
    PATH; raises GatewayError saying how to build it when there is none."""
    if configured:
        path = Path(configured)
        if os.access(path, os.X_OK) and path.is_file():
            return path
        raise GatewayError(
            f"LLMOPS_GATEWAY_BINARY={configured} is not an executable file "
            "(`make gateway` builds .bin/llmops-gateway)"
        )
    if os.access(PROJECT_BINARY, os.X_OK):
        return PROJECT_BINARY
    found = shutil.which(BINARY_NAME)
    if found is None:
        raise GatewayError(MISSING)
    return Path(found)


class GatewayProcess:
    """The gateway running as a child process, proxying to one gRPC address."""

    def __init__(
        self,
        binary: Path,
        backend: str,
        listen: str,
        grace: float = 10.0,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        """`env` is the binary's environment (default: this process's), which configures what
        the flags leave out: TLS, and tracing (`LLMOPS_OTLP_ENDPOINT`, `LLMOPS_SERVICE_NAME`);
        `extra_args` are more flags (`-inference-backends`, ...)."""
        self.command = [str(binary), "-listen", listen, "-backend", backend]
        self.command += ["-shutdown-grace", f"{grace}s", *extra_args]
        self.grace = grace
        self.env = dict(env) if env is not None else None
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self, timeout: float = 30) -> str:
        """Starts the binary and returns its URL once it listens (its logs go to our stderr)."""
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, text=True, env=self.env
        )
        assert self.process.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(
            target=lambda out: lines.put(out.readline()), args=(self.process.stdout,), daemon=True
        )
        reader.start()
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise GatewayError(f"the gateway did not listen within {timeout:g} s") from None
        found = _LISTENING.search(line)
        if found is None:
            code = self.process.wait()
            raise GatewayError(f"the gateway exited with code {code} before listening")
        self.url = found.group(1)
        return self.url

    def stop(self) -> None:
        """SIGTERM (in-flight requests get the grace period), then SIGKILL."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.grace + 5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
