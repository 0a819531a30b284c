"""Which servers a client command may build the tiny models for: only one on this machine,
since they are registered by their local path."""

from __future__ import annotations

import pytest

from llmops.cli.first_run import is_local_address


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("localhost:50051", True),
        ("127.0.0.1:50051", True),
        ("127.8.9.10:1", True),
        ("[::1]:50051", True),
        ("::1", True),
        ("unix:/tmp/llmops.sock", True),
        ("LOCALHOST:50051", True),
        ("10.0.0.5:50051", False),
        ("llmops.example.com:443", False),
        ("[2001:db8::1]:50051", False),
        ("dns:///llmops:50051", False),
    ],
)
def test_only_loopback_and_unix_sockets_are_local(address: str, local: bool) -> None:
    assert is_local_address(address) is local
