"""`llmops up` learns the REST gateway's URL from the one line the binary prints once it listens,
`http://` or, when the gateway serves TLS, `https://`."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from llmops_services.gateway import GatewayError, GatewayProcess


def fake_binary(tmp_path: Path, line: str) -> Path:
    """An executable that prints `line` as the gateway would, then waits for SIGTERM."""
    path = tmp_path / "llmops-gateway"
    path.write_text(f"#!/bin/sh\necho '{line}'\nexec sleep 60\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "https://127.0.0.1:8443", "https://[::]:8443"]
)
def test_start_returns_the_url_the_gateway_printed(tmp_path: Path, url: str) -> None:
    line = f"llmops-gateway listening on {url} (backend 127.0.0.1:50051)"
    gateway = GatewayProcess(fake_binary(tmp_path, line), "127.0.0.1:50051", "127.0.0.1:0", grace=1)
    try:
        assert gateway.start(timeout=10) == url
        assert gateway.url == url
    finally:
        gateway.stop()


def test_a_gateway_that_exits_before_listening_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "llmops-gateway"
    path.write_text("#!/bin/sh\necho 'llmops-gateway: -tls-cert needs -tls-key' >&2\nexit 2\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    gateway = GatewayProcess(path, "127.0.0.1:50051", "127.0.0.1:0", grace=1)
    try:
        with pytest.raises(GatewayError, match="exited with code 2 before listening"):
            gateway.start(timeout=10)
    finally:
        gateway.stop()
