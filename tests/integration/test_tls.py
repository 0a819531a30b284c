"""TLS on the gRPC hops: a real server with certificates made here (`tests/certs.py`), the SDK
and the CLI as clients, and a real worker whose Registry calls cross the same TLS (mutual TLS:
its own client certificate). Plaintext clients, clients that do not trust the server's CA, and
under mutual TLS clients with no certificate or one from another CA are refused."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import llmops
from llmops.settings import ClientSettings
from llmops.v1 import jobs_pb2
from llmops_services.gateway import GatewayProcess
from llmops_services.runtime.server import exposure_warnings, is_loopback
from llmops_services.settings import Settings
from tests.certs import Authority, KeyPair
from tests.conftest import ServerThread, make_settings
from tests.integration.helpers import make_base_model_dir
from tests.integration.test_cli_commands import cli
from tests.integration.workers import Workers
from tests.tiny_models import TinyModels


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def server_pair(ca: Authority) -> KeyPair:
    return ca.issue("llmops-services", server=True)


@pytest.fixture(scope="module")
def client_pair(ca: Authority) -> KeyPair:
    return ca.issue("llmops-worker", server=False)


def tls_settings(data_dir: Path, server_pair: KeyPair, client_ca: Path | None = None) -> Settings:
    return make_settings(
        data_dir,
        server_tls_cert_file=server_pair.cert,
        server_tls_key_file=server_pair.key,
        server_tls_client_ca_file=client_ca,
        job_lease_seconds=8,
        reconcile_seconds=0.5,
    )


@pytest.fixture
def tls_server(data_dir: Path, server_pair: KeyPair) -> Iterator[ServerThread]:
    running = ServerThread(tls_settings(data_dir, server_pair)).start()
    yield running
    running.stop()


@pytest.fixture
def mtls_server(data_dir: Path, ca: Authority, server_pair: KeyPair) -> Iterator[ServerThread]:
    running = ServerThread(tls_settings(data_dir, server_pair, client_ca=ca.cert_path)).start()
    yield running
    running.stop()


def refused(address: str, settings: ClientSettings) -> bool:
    """Whether a call over these client settings fails before reaching a service."""
    with llmops.Client(address, settings=settings, timeout=5) as client:
        try:
            list(client.models.list())
        except llmops.Unavailable:
            return True
    return False


def test_a_tls_server_serves_clients_that_trust_its_ca_and_refuses_the_rest(
    tls_server: ServerThread, ca: Authority, tmp_path: Path
) -> None:
    address = tls_server.address
    trusted = ClientSettings(tls_ca_file=str(ca.cert_path), tls=True)
    with llmops.Client(address, settings=trusted, timeout=10) as client:
        model = client.models.create("tiny", str(make_base_model_dir(tmp_path)))
        assert client.models.get("tiny").id == model.id

    assert refused(address, ClientSettings())  # plaintext to a TLS port
    other = Authority.create(tmp_path / "other", name="another-ca")
    assert refused(address, ClientSettings(tls=True, tls_ca_file=str(other.cert_path)))

    # the CLI, configured by the environment as users configure it
    env = {"LLMOPS_TLS_CA_FILE": str(ca.cert_path)}
    shown = cli(tls_server, "models", "show", "tiny", "--output", "json", env=env)
    assert shown.ok().json()["id"] == model.id
    plain = cli(tls_server, "models", "show", "tiny", env={"LLMOPS_TLS_CA_FILE": None})
    assert plain.code != 0
    assert "unavailable" in plain.err.lower(), plain.err


def test_mutual_tls_needs_a_client_certificate_from_the_ca(
    mtls_server: ServerThread, ca: Authority, client_pair: KeyPair, tmp_path: Path
) -> None:
    address = mtls_server.address
    ca_file = str(ca.cert_path)
    with_cert = ClientSettings(
        tls=True,
        tls_ca_file=ca_file,
        tls_cert_file=str(client_pair.cert),
        tls_key_file=str(client_pair.key),
    )
    with llmops.Client(address, settings=with_cert, timeout=10) as client:
        assert list(client.models.list()) == []

    assert refused(address, ClientSettings(tls=True, tls_ca_file=ca_file))  # no certificate
    stranger = Authority.create(tmp_path / "stranger", name="stranger-ca").issue(
        "stranger", server=False
    )
    foreign = ClientSettings(
        tls=True,
        tls_ca_file=ca_file,
        tls_cert_file=str(stranger.cert),
        tls_key_file=str(stranger.key),
    )
    assert refused(address, foreign)


@pytest.mark.timeout(300)
def test_a_worker_reaches_the_registry_over_mutual_tls(
    data_dir: Path,
    ca: Authority,
    server_pair: KeyPair,
    client_pair: KeyPair,
    tiny_models: TinyModels,
    adapter_dir: Path,
) -> None:
    """A merge job: the worker resolves the adapter and registers the merged model through the
    Registry, with its own client certificate (without one its calls are refused, as the test
    above shows for any client)."""
    server = ServerThread(tls_settings(data_dir, server_pair, client_ca=ca.cert_path)).start()
    workers = Workers(server)
    client_env = {
        "LLMOPS_TLS_CA_FILE": str(ca.cert_path),
        "LLMOPS_TLS_CERT_FILE": str(client_pair.cert),
        "LLMOPS_TLS_KEY_FILE": str(client_pair.key),
    }
    settings = ClientSettings(
        tls=True,
        tls_ca_file=client_env["LLMOPS_TLS_CA_FILE"],
        tls_cert_file=client_env["LLMOPS_TLS_CERT_FILE"],
        tls_key_file=client_env["LLMOPS_TLS_KEY_FILE"],
    )
    try:
        with llmops.Client(server.address, settings=settings, timeout=60) as client:
            base = client.models.create("tiny", str(tiny_models.base))
            client.models.create("helper", str(adapter_dir), "adapter", base_model=base.id)
            workers.start(**client_env)
            job = client.models.merge("helper")
            done = job.wait(timeout=240, poll_interval=0.5)
            assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.error.message
            merged = client.models.get(done.result_model)
            assert merged.origin.merge_job == job.id
    finally:
        workers.stop()
        server.stop()


def test_the_server_settings_refuse_half_a_tls_configuration(
    tmp_path: Path, server_pair: KeyPair, ca: Authority
) -> None:
    with pytest.raises(ValueError, match="LLMOPS_SERVER_TLS_KEY_FILE"):
        make_settings(tmp_path, server_tls_cert_file=server_pair.cert)
    with pytest.raises(ValueError, match="needs the server's own certificate"):
        make_settings(tmp_path, server_tls_client_ca_file=ca.cert_path)
    with pytest.raises(ValueError, match="LLMOPS_TLS_KEY_FILE"):
        ClientSettings.from_env({"LLMOPS_TLS_CERT_FILE": str(server_pair.cert)})


def test_a_server_on_another_interface_warns_of_plaintext_and_open_access(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("10.1.2.3")
    assert exposure_warnings("127.0.0.1", tls=False, auth=False) == []
    assert exposure_warnings("0.0.0.0", tls=True, auth=True) == []
    both = exposure_warnings("0.0.0.0", tls=False, auth=False)
    assert len(both) == 2 and "without TLS" in both[0] and "no API key" in both[1]

    with caplog.at_level(logging.WARNING, logger="llmops.server"):
        server = ServerThread(make_settings(data_dir, grpc_host="0.0.0.0")).start()
        server.stop()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("without TLS" in message for message in warned), warned
    assert any("no API key" in message for message in warned), warned


def test_a_missing_certificate_file_fails_the_start_naming_its_setting(
    data_dir: Path, server_pair: KeyPair, tmp_path: Path
) -> None:
    settings = make_settings(
        data_dir, server_tls_cert_file=tmp_path / "absent.pem", server_tls_key_file=server_pair.key
    )
    server = ServerThread(settings)
    with pytest.raises(OSError, match="LLMOPS_SERVER_TLS_CERT_FILE"):
        server.start()
    server.stop()


def test_the_gateway_serves_https_and_reaches_services_over_mutual_tls(
    mtls_server: ServerThread,
    ca: Authority,
    client_pair: KeyPair,
    binary: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both of the gateway's hops encrypted, configured by the environment as `llmops up`
    passes it on: HTTPS to its clients, mutual TLS to the services."""
    https_pair = ca.issue("llmops-gateway", server=True)
    monkeypatch.setenv("LLMOPS_GATEWAY_TLS_CERT_FILE", str(https_pair.cert))
    monkeypatch.setenv("LLMOPS_GATEWAY_TLS_KEY_FILE", str(https_pair.key))
    monkeypatch.setenv("LLMOPS_TLS_CA_FILE", str(ca.cert_path))
    trusting = ssl.create_default_context(cafile=str(ca.cert_path))

    monkeypatch.setenv("LLMOPS_TLS_CERT_FILE", str(client_pair.cert))
    monkeypatch.setenv("LLMOPS_TLS_KEY_FILE", str(client_pair.key))
    gateway = GatewayProcess(binary, mtls_server.address, "127.0.0.1:0", grace=2)
    try:
        url = gateway.start()
        assert url.startswith("https://")
        with httpx.Client(verify=trusting, timeout=30) as http:
            assert http.get(f"{url}/readyz").status_code == 200
            listed = http.get(f"{url}/v1/models")
            assert listed.status_code == 200 and listed.json()["models"] == []
        with httpx.Client(timeout=30) as http, pytest.raises(httpx.HTTPError):
            http.get(f"{url}/readyz")  # the system roots do not trust the test CA
        plain = httpx.get(url.replace("https://", "http://") + "/readyz", timeout=30)
        assert plain.status_code == 400  # plain HTTP to the HTTPS port
    finally:
        gateway.stop()

    monkeypatch.delenv("LLMOPS_TLS_CERT_FILE")
    monkeypatch.delenv("LLMOPS_TLS_KEY_FILE")
    anonymous = GatewayProcess(binary, mtls_server.address, "127.0.0.1:0", grace=2)
    try:
        url = anonymous.start()
        with httpx.Client(verify=trusting, timeout=30) as http:
            assert http.get(f"{url}/readyz").status_code == 503  # no client certificate
            refused = http.get(f"{url}/v1/models")
            assert refused.status_code == 503 and refused.json()["code"] == 14  # UNAVAILABLE
    finally:
        anonymous.stop()
