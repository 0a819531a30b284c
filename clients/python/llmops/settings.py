"""Client settings from `LLMOPS_*` environment variables.

Plain dataclass rather than pydantic-settings: the client distribution stays gRPC + protobuf only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["DEFAULT_ADDRESS", "DEFAULT_TIMEOUT", "ClientSettings"]

DEFAULT_ADDRESS = "localhost:50051"
DEFAULT_TIMEOUT = 30.0

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def _parse_timeout(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name}={raw!r} must be a positive, finite number of seconds")
    return value


@dataclass(frozen=True)
class ClientSettings:
    """Where and how the SDK and CLI connect; explicit arguments override each field."""

    address: str = DEFAULT_ADDRESS
    """`host:port` of the gRPC endpoint (`LLMOPS_ADDRESS`)."""
    api_key: str | None = None
    """Sent as `authorization: Bearer <key>` (`LLMOPS_API_KEY`)."""
    tls: bool = False
    """Use TLS (`LLMOPS_TLS`); implied by `tls_ca_file`."""
    tls_ca_file: str | None = None
    """PEM file of the CA that signed the server's certificate (`LLMOPS_TLS_CA_FILE`)."""
    tls_cert_file: str | None = None
    """PEM certificate chain this client presents, for servers that require mutual TLS
    (`LLMOPS_TLS_CERT_FILE`, with `LLMOPS_TLS_KEY_FILE`); implies TLS."""
    tls_key_file: str | None = None
    """PEM private key of `tls_cert_file` (`LLMOPS_TLS_KEY_FILE`)."""
    tls_server_name: str | None = None
    """Name to check the server's certificate against instead of the address's host
    (`LLMOPS_TLS_SERVER_NAME`)."""
    timeout: float = DEFAULT_TIMEOUT
    """Default deadline of every call, in seconds (`LLMOPS_TIMEOUT`)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientSettings:
        """Reads the settings; raises ValueError naming the variable when one is malformed."""
        env = os.environ if environ is None else environ
        ca_file = env.get("LLMOPS_TLS_CA_FILE", "").strip() or None
        cert_file = env.get("LLMOPS_TLS_CERT_FILE", "").strip() or None
        key_file = env.get("LLMOPS_TLS_KEY_FILE", "").strip() or None
        if (cert_file is None) != (key_file is None):
            raise ValueError("LLMOPS_TLS_CERT_FILE and LLMOPS_TLS_KEY_FILE go together: set both")
        tls_raw = env.get("LLMOPS_TLS")
        tls = _parse_bool("LLMOPS_TLS", tls_raw) if tls_raw is not None else False
        timeout_raw = env.get("LLMOPS_TIMEOUT", "").strip()
        return cls(
            address=env.get("LLMOPS_ADDRESS", "").strip() or DEFAULT_ADDRESS,
            api_key=env.get("LLMOPS_API_KEY", "").strip() or None,
            tls=tls or ca_file is not None or cert_file is not None,
            tls_ca_file=ca_file,
            tls_cert_file=cert_file,
            tls_key_file=key_file,
            tls_server_name=env.get("LLMOPS_TLS_SERVER_NAME", "").strip() or None,
            timeout=_parse_timeout("LLMOPS_TIMEOUT", timeout_raw)
            if timeout_raw
            else DEFAULT_TIMEOUT,
        )
