"""Client settings from the environment, and how arguments override them."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops._channel import ConnectionConfig
from llmops.settings import DEFAULT_ADDRESS, DEFAULT_TIMEOUT, ClientSettings

ENV_VARS = (
    "LLMOPS_ADDRESS",
    "LLMOPS_API_KEY",
    "LLMOPS_TLS",
    "LLMOPS_TLS_CA_FILE",
    "LLMOPS_TIMEOUT",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = ClientSettings.from_env()
    assert settings == ClientSettings()
    assert settings.address == DEFAULT_ADDRESS == "localhost:50051"
    assert settings.api_key is None
    assert settings.tls is False
    assert settings.tls_ca_file is None
    assert settings.timeout == DEFAULT_TIMEOUT == 30.0


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPS_ADDRESS", "llmops.example.com:443")
    monkeypatch.setenv("LLMOPS_API_KEY", "sk-123")
    monkeypatch.setenv("LLMOPS_TLS", "true")
    monkeypatch.setenv("LLMOPS_TIMEOUT", "2.5")
    assert ClientSettings.from_env() == ClientSettings(
        address="llmops.example.com:443", api_key="sk-123", tls=True, timeout=2.5
    )


def test_from_mapping() -> None:
    assert ClientSettings.from_env({"LLMOPS_ADDRESS": "h:1"}).address == "h:1"


def test_blank_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.setenv(name, "  ")
    assert ClientSettings.from_env() == ClientSettings()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("TRUE", True), ("yes", True), ("on", True), ("0", False), ("off", False)],
)
def test_tls_flag(monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool) -> None:
    monkeypatch.setenv("LLMOPS_TLS", raw)
    assert ClientSettings.from_env().tls is expected


def test_ca_file_implies_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPS_TLS_CA_FILE", "/etc/ca.pem")
    settings = ClientSettings.from_env()
    assert settings.tls is True
    assert settings.tls_ca_file == "/etc/ca.pem"


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("LLMOPS_TLS", "maybe", "LLMOPS_TLS='maybe' is not a boolean"),
        ("LLMOPS_TIMEOUT", "soon", "LLMOPS_TIMEOUT='soon' is not a number"),
        ("LLMOPS_TIMEOUT", "0", "must be a positive, finite number"),
        ("LLMOPS_TIMEOUT", "-3", "must be a positive, finite number"),
        ("LLMOPS_TIMEOUT", "inf", "must be a positive, finite number"),
        ("LLMOPS_TIMEOUT", "nan", "must be a positive, finite number"),
    ],
)
def test_malformed_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str, message: str
) -> None:
    monkeypatch.setenv(name, raw)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        ClientSettings.from_env()


def _resolve(settings: ClientSettings, **args: object) -> ConnectionConfig:
    base: dict[str, object] = {
        "address": None,
        "api_key": None,
        "tls": None,
        "root_certificates": None,
        "timeout": None,
        "options": None,
    }
    base.update(args)
    return ConnectionConfig.resolve(settings=settings, user_agent="test", **base)  # type: ignore[arg-type]


def test_arguments_override_settings() -> None:
    settings = ClientSettings(address="env:1", api_key="env-key", timeout=9.0)
    config = _resolve(settings)
    assert (config.address, config.api_key, config.timeout) == ("env:1", "env-key", 9.0)
    assert config.credentials is None
    config = _resolve(settings, address="arg:2", api_key="arg-key", timeout=1.5)
    assert (config.address, config.api_key, config.timeout) == ("arg:2", "arg-key", 1.5)


def test_tls_from_ca_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    config = _resolve(ClientSettings(tls=True, tls_ca_file=str(ca)))
    assert config.credentials is not None
    assert _resolve(ClientSettings(tls=True), tls=False).credentials is None
    assert _resolve(ClientSettings(), tls=True).credentials is not None


def test_channel_options_carry_the_retry_policy() -> None:
    import json

    options = dict(
        _resolve(ClientSettings(), options=[("grpc.max_send_message_length", 7)]).options
    )
    assert options["grpc.enable_retries"] == 1
    assert options["grpc.max_send_message_length"] == 7
    config = json.loads(options["grpc.service_config"])
    (method_config,) = config["methodConfig"]
    assert {n["service"] for n in method_config["name"]} == {
        "llmops.v1.RegistryService",
        "llmops.v1.TrainingService",
        "llmops.v1.EvalService",
        "llmops.v1.InferenceService",
    }
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]


def test_non_positive_timeout_argument() -> None:
    with pytest.raises(ValueError, match="timeout must be a positive"):
        _resolve(ClientSettings(), timeout=0)
