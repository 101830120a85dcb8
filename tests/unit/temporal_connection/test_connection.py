"""How the Temporal connection settings reach `Client.connect`, and which combinations stop a
process at start.

The client is made lazy (`Client.connect(lazy=True)` dials nothing), so what `connect_temporal`
handed to the SDK is read back from the client's own connect configuration, with no server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from temporalio.client import Client
from temporalio.service import ConnectConfig, TLSConfig

from config.payload_keys import generate_payload_key
from config.settings import Settings, SettingsError, load_settings
from temporal_connection.codec import EncryptionCodec
from temporal_connection.connection import connect_temporal

CONNECTION_ENV = [
    "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_PAYLOAD_KEYS",
    "TEMPORAL_PAYLOAD_KEYS_FILE", "TEMPORAL_TLS", "TEMPORAL_TLS_CA_FILE",
    "TEMPORAL_TLS_CERT_FILE", "TEMPORAL_TLS_KEY_FILE", "TEMPORAL_TLS_SERVER_NAME",
    "TEMPORAL_API_KEY",
]  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in CONNECTION_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env file is read
    yield


class Pki:
    """A CA, the frontend's certificate it signed, and a client certificate, as PEM files."""

    def __init__(self, directory: Path) -> None:
        self.authority = trustme.CA()
        self.ca = directory / "ca.pem"
        self.authority.cert_pem.write_to_path(str(self.ca))
        client = self.authority.issue_cert("fulfillment-worker")
        self.cert = directory / "client.pem"
        self.key = directory / "client.key"
        client.cert_chain_pems[0].write_to_path(str(self.cert))
        client.private_key_pem.write_to_path(str(self.key))


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


async def _connect_config(settings: Settings, **overrides: object) -> tuple[Client, ConnectConfig]:
    client = await connect_temporal(settings, lazy=True, **overrides)
    return client, client.service_client.config


def _set_env(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> Settings:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return load_settings()


async def test_without_tls_settings_the_client_dials_in_clear_and_sends_no_key() -> None:
    client, config = await _connect_config(load_settings(temporal_namespace="fulfil"))
    assert config.target_host == "127.0.0.1:7233"
    assert client.namespace == "fulfil"
    # False, not None: None would let the SDK turn TLS on by itself if a key were present.
    assert config.tls is False
    assert config.api_key is None


async def test_tls_alone_verifies_the_frontend_against_the_system_roots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _set_env(
        monkeypatch,
        {"TEMPORAL_ADDRESS": "temporal.example.com:7233", "TEMPORAL_TLS": "true"},
    )
    _, config = await _connect_config(settings)
    assert config.target_host == "temporal.example.com:7233"
    assert config.tls == TLSConfig()


async def test_mutual_tls_presents_the_client_certificate_and_trusts_the_given_ca(
    monkeypatch: pytest.MonkeyPatch, pki: Pki
) -> None:
    settings = _set_env(
        monkeypatch,
        {
            "TEMPORAL_ADDRESS": "10.0.0.7:7233",
            "TEMPORAL_NAMESPACE": "fulfillment.a1b2c",
            "TEMPORAL_TLS": "true",
            "TEMPORAL_TLS_CA_FILE": str(pki.ca),
            "TEMPORAL_TLS_CERT_FILE": str(pki.cert),
            "TEMPORAL_TLS_KEY_FILE": str(pki.key),
            "TEMPORAL_TLS_SERVER_NAME": "temporal.internal.example",
        },
    )
    client, config = await _connect_config(settings)
    assert client.namespace == "fulfillment.a1b2c"
    assert config.tls == TLSConfig(
        server_root_ca_cert=pki.ca.read_bytes(),
        domain="temporal.internal.example",
        client_cert=pki.cert.read_bytes(),
        client_private_key=pki.key.read_bytes(),
    )
    assert config.api_key is None


async def test_an_api_key_is_sent_over_tls_as_temporal_cloud_expects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _set_env(
        monkeypatch,
        {
            "TEMPORAL_ADDRESS": "ap-northeast-1.aws.api.temporal.io:7233",
            "TEMPORAL_NAMESPACE": "fulfillment.a1b2c",
            "TEMPORAL_TLS": "true",
            "TEMPORAL_API_KEY": "cloud-api-key-value",
        },
    )
    client, config = await _connect_config(settings)
    assert config.api_key == "cloud-api-key-value"
    assert config.tls == TLSConfig()
    assert client.namespace == "fulfillment.a1b2c"
    # Like every secret, the key is handed to the log redactor.
    assert "cloud-api-key-value" in settings.secrets()
    assert "cloud-api-key-value" not in repr(settings)


async def test_a_certificate_renewed_on_disk_is_used_by_the_next_connect(
    monkeypatch: pytest.MonkeyPatch, pki: Pki
) -> None:
    settings = _set_env(
        monkeypatch,
        {
            "TEMPORAL_TLS": "true",
            "TEMPORAL_TLS_CERT_FILE": str(pki.cert),
            "TEMPORAL_TLS_KEY_FILE": str(pki.key),
        },
    )
    renewed = pki.authority.issue_cert("fulfillment-worker")
    renewed.cert_chain_pems[0].write_to_path(str(pki.cert))
    renewed.private_key_pem.write_to_path(str(pki.key))
    _, config = await _connect_config(settings)
    assert isinstance(config.tls, TLSConfig)
    assert config.tls.client_cert == renewed.cert_chain_pems[0].bytes()
    assert config.tls.client_private_key == renewed.private_key_pem.bytes()


async def test_overrides_add_to_the_settings_without_dropping_tls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _set_env(monkeypatch, {"TEMPORAL_TLS": "true", "TEMPORAL_API_KEY": "k"})
    _, config = await _connect_config(settings, identity="worker@host-1")
    assert config.identity == "worker@host-1"
    assert config.tls == TLSConfig()
    assert config.api_key == "k"


async def test_payload_keys_from_a_mounted_secret_file_encrypt_like_inline_keys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    current, previous = generate_payload_key("k2025-07"), generate_payload_key("k2025-01")
    secret = tmp_path / "temporal_payload_keys"
    # How a secret store writes a list: one entry per line, a final newline.
    secret.write_text(f"{current}\n{previous}\n")
    settings = _set_env(monkeypatch, {"TEMPORAL_PAYLOAD_KEYS_FILE": str(secret)})
    client, _ = await _connect_config(settings)
    codec = client.data_converter.payload_codec
    assert isinstance(codec, EncryptionCodec)
    assert codec.encrypting_key_id == "k2025-07"
    assert codec.key_ids == ["k2025-07", "k2025-01"]
    # Read at start: the keys are held (and redacted) like keys given inline.
    assert settings.temporal_payload_keys is not None
    assert settings.temporal_payload_keys.get_secret_value() == f"{current},{previous}"
    assert f"{current},{previous}" in settings.secrets()


def _refusal(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as caught:
        _set_env(monkeypatch, values)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_payload_keys_given_both_inline_and_as_a_file_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "keys"
    secret.write_text(generate_payload_key("a"))
    message = _refusal(
        monkeypatch,
        {
            "TEMPORAL_PAYLOAD_KEYS": generate_payload_key("b"),
            "TEMPORAL_PAYLOAD_KEYS_FILE": str(secret),
        },
    )
    assert "TEMPORAL_PAYLOAD_KEYS_FILE" in message
    assert "not both" in message


def test_a_malformed_key_file_is_named_without_quoting_its_content(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "keys"
    # A 16-byte key: well-formed base64, wrong length, and material that must not be printed.
    secret.write_text("k1:c2l4dGVlbi1ieXRlLWtleQ==\n")
    message = _refusal(monkeypatch, {"TEMPORAL_PAYLOAD_KEYS_FILE": str(secret)})
    assert message.startswith("configuration error: TEMPORAL_PAYLOAD_KEYS_FILE is malformed")
    assert "expected 32" in message
    assert "c2l4dGVlbi1ieXRlLWtleQ" not in message


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_an_empty_key_file_is_refused_rather_than_running_unencrypted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str
) -> None:
    secret = tmp_path / "keys"
    secret.write_text(content)
    message = _refusal(monkeypatch, {"TEMPORAL_PAYLOAD_KEYS_FILE": str(secret)})
    assert "TEMPORAL_PAYLOAD_KEYS_FILE" in message
    assert "no keys given" in message


def test_a_missing_key_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    message = _refusal(monkeypatch, {"TEMPORAL_PAYLOAD_KEYS_FILE": str(tmp_path / "not-mounted")})
    assert f"TEMPORAL_PAYLOAD_KEYS_FILE is malformed: no such file: {tmp_path}" in message


def test_a_key_file_that_is_not_text_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "keys"
    secret.write_bytes(b"\xff\xfe\x00binary")
    message = _refusal(monkeypatch, {"TEMPORAL_PAYLOAD_KEYS_FILE": str(secret)})
    assert "cannot read" in message
    assert "not UTF-8 text" in message


@pytest.mark.parametrize(
    "setting",
    ["TEMPORAL_TLS_CA_FILE", "TEMPORAL_TLS_SERVER_NAME", "TEMPORAL_API_KEY"],
)
def test_a_tls_setting_or_api_key_without_tls_on_is_refused(
    monkeypatch: pytest.MonkeyPatch, pki: Pki, setting: str
) -> None:
    value = {
        "TEMPORAL_TLS_CA_FILE": str(pki.ca),
        "TEMPORAL_TLS_SERVER_NAME": "temporal.example.com",
        "TEMPORAL_API_KEY": "key",
    }[setting]
    # Ignoring it would connect in clear text, an API key included.
    message = _refusal(monkeypatch, {setting: value, "TEMPORAL_TLS": "false"})
    assert message == f"configuration error: {setting} is malformed: needs TEMPORAL_TLS=true"


def test_a_client_certificate_without_its_key_is_refused(
    monkeypatch: pytest.MonkeyPatch, pki: Pki
) -> None:
    message = _refusal(
        monkeypatch, {"TEMPORAL_TLS": "true", "TEMPORAL_TLS_CERT_FILE": str(pki.cert)}
    )
    assert message.startswith("configuration error: TEMPORAL_TLS_KEY_FILE is malformed")


def test_a_client_key_without_its_certificate_is_refused(
    monkeypatch: pytest.MonkeyPatch, pki: Pki
) -> None:
    message = _refusal(monkeypatch, {"TEMPORAL_TLS": "true", "TEMPORAL_TLS_KEY_FILE": str(pki.key)})
    assert "TEMPORAL_TLS_KEY_FILE" in message
    assert "TEMPORAL_TLS_CERT_FILE" in message


def test_files_swapped_by_mistake_are_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, pki: Pki
) -> None:
    message = _refusal(
        monkeypatch,
        {
            "TEMPORAL_TLS": "true",
            "TEMPORAL_TLS_CERT_FILE": str(pki.key),
            "TEMPORAL_TLS_KEY_FILE": str(pki.cert),
        },
    )
    assert message.startswith("configuration error: TEMPORAL_TLS_CERT_FILE is malformed")
    assert "no PEM certificate" in message


def test_a_missing_ca_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    message = _refusal(
        monkeypatch,
        {"TEMPORAL_TLS": "true", "TEMPORAL_TLS_CA_FILE": str(tmp_path / "ca.pem")},
    )
    assert "TEMPORAL_TLS_CA_FILE is malformed: no such file" in message


def test_an_address_with_a_scheme_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK would accept https://… with a deprecation warning and ignore TEMPORAL_TLS.
    message = _refusal(
        monkeypatch,
        {"TEMPORAL_ADDRESS": "https://ns.acct.tmprl.cloud:7233", "TEMPORAL_TLS": "true"},
    )
    assert "TEMPORAL_ADDRESS is malformed" in message


def test_empty_values_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # An env file's `TEMPORAL_API_KEY=` line, as elsewhere in the settings.
    settings = _set_env(monkeypatch, {"TEMPORAL_API_KEY": "", "TEMPORAL_TLS_SERVER_NAME": "  "})
    assert settings.temporal_api_key is None
    assert settings.temporal_tls_server_name is None
