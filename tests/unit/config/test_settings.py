"""Settings: defaults, validation, and the one clear line a process stops with."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import (
    MIGRATE,
    WORKER,
    SettingsError,
    as_environment,
    load_settings,
)

ENV_NAMES = [
    "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_TASK_QUEUE", "DATABASE_URL", "REDIS_URL",
    "SF_TOKEN_URL", "SF_INSTANCE_URL", "SF_CLIENT_ID", "SF_CLIENT_SECRET", "SF_USERNAME",
    "SF_PASSWORD", "SF_API_VERSION", "SF_CA_FILE", "SF_TRIGGER_STATUS", "SF_AUTH_FLOW",
    "WHMCS_API_URL", "WHMCS_IDENTIFIER", "WHMCS_SECRET", "WHMCS_ACCESS_KEY", "FREEBIT_BASE_URL",
    "FREEBIT_OEM_ID", "FREEBIT_OEM_KEY", "API_SERVICE_TOKEN", "API_OPS_TOKEN",
    "WHMCS_WEBHOOK_SECRET", "SERVICES_CACHE_SAFETY_TTL_SECONDS", "SF_JWT_KEY_FILE",
    "SF_JWT_PRIVATE_KEY", "SF_CLIENT_NAME", "SF_POOL_SIZE", "WORKER_MAX_CONCURRENT_ACTIVITIES",
]  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env file is read


def test_defaults_match_the_design() -> None:
    settings = load_settings()
    assert settings.temporal_address == "127.0.0.1:7233"
    assert settings.temporal_task_queue == "order-fulfillment"
    assert settings.sf_api_version == "60.0"
    assert settings.sf_trigger_status == "Activated"
    assert settings.services_cache_safety_ttl_seconds == 43200
    assert settings.cache_key_prefix == "portal:"


def test_every_design_setting_is_read_from_its_environment_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    values = {
        "TEMPORAL_ADDRESS": "temporal:7233", "TEMPORAL_NAMESPACE": "prod",
        "TEMPORAL_TASK_QUEUE": "q", "DATABASE_URL": "postgresql://u:p@db:5432/f",
        "REDIS_URL": "redis://cache:6379/0", "SF_TOKEN_URL": "https://login.example/t",
        "SF_INSTANCE_URL": "https://x.my.example", "SF_CLIENT_ID": "cid",
        "SF_CLIENT_SECRET": "csecret", "SF_USERNAME": "u@example.com", "SF_PASSWORD": "pw",
        "SF_API_VERSION": "61.0", "SF_CA_FILE": str(ca), "SF_TRIGGER_STATUS": "Go",
        "WHMCS_API_URL": "https://billing.example/includes/api.php", "WHMCS_IDENTIFIER": "id",
        "WHMCS_SECRET": "wsecret", "WHMCS_ACCESS_KEY": "akey",
        "FREEBIT_BASE_URL": "https://fb.example/emptool/api/", "FREEBIT_OEM_ID": "oem",
        "FREEBIT_OEM_KEY": "okey", "API_SERVICE_TOKEN": "stoken", "API_OPS_TOKEN": "otoken",
        "WHMCS_WEBHOOK_SECRET": "hook", "SERVICES_CACHE_SAFETY_TTL_SECONDS": "60",
        "SF_AUTH_FLOW": "jwt", "SF_JWT_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----x",
        "SF_CLIENT_NAME": "fulfil-prod", "SF_POOL_SIZE": "12",
    }  # fmt: skip
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(require=WORKER)
    for name, value in values.items():
        actual = getattr(settings, name.lower())
        if hasattr(actual, "get_secret_value"):
            actual = actual.get_secret_value()
        assert str(actual) == value, name


def test_secrets_are_hidden_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHMCS_SECRET", "super-secret-value")
    settings = load_settings()
    assert "super-secret-value" not in repr(settings)
    assert "super-secret-value" not in str(settings.model_dump())
    assert "super-secret-value" in settings.secrets()


def test_missing_setting_names_it_in_one_line() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(require=MIGRATE)
    message = str(info.value)
    assert "DATABASE_URL" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "value", "hint"),
    [
        ("TEMPORAL_ADDRESS", "no-port", "host:port"),
        ("DATABASE_URL", "mysql://db/x", "postgres"),
        ("REDIS_URL", "http://cache", "redis"),
        ("SF_TOKEN_URL", "http://login.example", "https"),
        ("SF_API_VERSION", "v60", "60.0"),
        ("SF_CA_FILE", "/nonexistent/ca.pem", "no such file"),
        ("SERVICES_CACHE_SAFETY_TTL_SECONDS", "-5", "greater than 0"),
        ("SERVICES_CACHE_SAFETY_TTL_SECONDS", "soon", "integer"),
        ("SF_AUTH_FLOW", "magic", "password"),
    ],
)
def test_malformed_setting_names_it_in_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, hint: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(f"configuration error: {name} is malformed")
    assert hint in message
    assert "\n" not in message


def test_salesforce_flow_needs_its_own_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SF_TOKEN_URL", "https://login.example/services/oauth2/token")
    monkeypatch.setenv("SF_CLIENT_ID", "cid")
    monkeypatch.setenv("SF_AUTH_FLOW", "client_credentials")
    with pytest.raises(SettingsError, match="SF_CLIENT_SECRET must be set"):
        load_settings(require=["sf_token_url", "sf_client_id"])
    monkeypatch.setenv("SF_CLIENT_SECRET", "s3cret")
    assert load_settings(require=["sf_token_url", "sf_client_id"]).sf_client_id == "cid"


def test_jwt_is_the_default_flow_and_needs_a_signing_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SF_TOKEN_URL", "https://login.example/services/oauth2/token")
    monkeypatch.setenv("SF_CLIENT_ID", "cid")
    monkeypatch.setenv("SF_USERNAME", "integration@example.com")
    assert load_settings().sf_auth_flow == "jwt"
    with pytest.raises(SettingsError, match="SF_JWT_KEY_FILE must be set for SF_AUTH_FLOW=jwt"):
        load_settings(require=["sf_token_url", "sf_client_id"])
    key = tmp_path / "server.key"
    key.write_text("-----BEGIN PRIVATE KEY-----")
    monkeypatch.setenv("SF_JWT_KEY_FILE", str(key))
    assert load_settings(require=["sf_token_url"]).sf_jwt_key_file == key


def test_rest_pool_follows_the_activity_concurrency_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORKER_MAX_CONCURRENT_ACTIVITIES", "40")
    assert load_settings().sf_rest_pool_size == 40
    monkeypatch.setenv("SF_POOL_SIZE", "8")
    assert load_settings().sf_rest_pool_size == 8


def test_process_stops_at_start_with_one_line_naming_the_setting(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": "not a url"}
    result = subprocess.run(
        [sys.executable, "-m", "cli", "migrate"],
        env=env,
        cwd=Path(__file__).resolve().parents[3],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "fulfillment migrate: configuration error: DATABASE_URL is malformed: "
        "expected a URL starting with postgres:// or postgresql://"
    ]


def test_settings_given_as_environment_load_back_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a test or benchmark hands a `fulfillment` process it starts (secrets included)."""
    given = load_settings(
        database_url="postgresql://fulfillment@127.0.0.1:5432/fulfillment",
        whmcs_secret="whmcs-secret",
        worker_max_concurrent_activities=7,
        worker_workflow_sandbox=True,
    )
    environment = as_environment(given)
    assert environment["WHMCS_SECRET"] == "whmcs-secret"
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert load_settings().model_dump() == given.model_dump()


@pytest.mark.parametrize(
    ("service", "ops", "hint"),
    [
        ("s" * 31, "o" * 40, "API_SERVICE_TOKEN is too short"),
        ("s" * 40, "short-ops-token", "API_OPS_TOKEN is too short"),
        ("t" * 40, "t" * 40, "share a token"),
        # A list: every token is checked, and none may be in both scopes.
        ("s" * 40 + ",short", "o" * 40, "API_SERVICE_TOKEN is too short"),
        ("s" * 40 + "," + "t" * 40, "o" * 40 + "," + "t" * 40, "share a token"),
    ],
)
def test_the_api_refuses_guessable_or_shared_tokens_in_one_line(
    monkeypatch: pytest.MonkeyPatch, service: str, ops: str, hint: str
) -> None:
    monkeypatch.setenv("API_SERVICE_TOKEN", service)
    monkeypatch.setenv("API_OPS_TOKEN", ops)
    with pytest.raises(SettingsError) as info:
        load_settings(require=["api_service_token", "api_ops_token"])
    assert hint in str(info.value) and "\n" not in str(info.value)
    assert service not in str(info.value) and ops not in str(info.value)
    # Other processes do not serve the tokens and do not check them.
    assert load_settings().api_ops_token is not None


def test_each_scope_takes_a_list_of_tokens_for_a_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    new, old = "n" * 40, "s" * 40
    monkeypatch.setenv("API_SERVICE_TOKEN", f"{new}, {old}")
    monkeypatch.setenv("API_OPS_TOKEN", "o" * 40)
    settings = load_settings(require=["api_service_token", "api_ops_token"])
    assert settings.api_service_tokens == (new, old)
    assert settings.api_ops_tokens == ("o" * 40,)
    # Each one is redacted on its own where it appears in a log line.
    assert {new, old} <= set(settings.secrets())


def test_secrets_are_read_from_a_mounted_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "api_ops_token").write_text("o" * 40 + "\n")
    (tmp_path / "WHMCS_SECRET").write_text("from-a-file")
    monkeypatch.setenv("SETTINGS_SECRETS_DIR", str(tmp_path))
    monkeypatch.delenv("API_OPS_TOKEN", raising=False)
    monkeypatch.delenv("WHMCS_SECRET", raising=False)
    settings = load_settings()
    assert settings.api_ops_tokens == ("o" * 40,)
    assert settings.whmcs_secret is not None
    assert settings.whmcs_secret.get_secret_value() == "from-a-file"
    # The environment wins over a file.
    monkeypatch.setenv("WHMCS_SECRET", "from-the-environment")
    overridden = load_settings().whmcs_secret
    assert overridden is not None and overridden.get_secret_value() == "from-the-environment"
    monkeypatch.setenv("SETTINGS_SECRETS_DIR", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match=r"SETTINGS_SECRETS_DIR .* is not a directory"):
        load_settings()


def test_the_api_takes_two_long_distinct_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_SERVICE_TOKEN", "s" * 32)
    monkeypatch.setenv("API_OPS_TOKEN", "o" * 32)
    settings = load_settings(require=["api_service_token", "api_ops_token"])
    assert settings.api_ops_token is not None


@pytest.mark.parametrize(
    ("given", "mode"),
    [
        ({}, "token"),
        ({"api_codec_require_auth": "false"}, "none"),
        ({"api_codec_require_auth": "true"}, "token"),
        ({"api_codec_auth": "none", "api_codec_require_auth": "true"}, "none"),
        ({"api_codec_auth": ""}, "token"),
    ],
)
def test_the_codec_mode_is_api_codec_auth_or_what_the_deprecated_setting_says(
    given: dict[str, str], mode: str
) -> None:
    assert load_settings(**given).codec_auth == mode


def test_an_oidc_codec_without_its_provider_stops_the_api_naming_what_is_missing() -> None:
    tokens = {"api_service_token": "s" * 32, "api_ops_token": "o" * 32}
    with pytest.raises(SettingsError) as stopped:
        load_settings(
            require=("api_ops_token",),
            api_codec_auth="oidc",
            api_codec_oidc_issuer="https://login.example.jp",
            **tokens,
        )
    assert str(stopped.value) == (
        "configuration error: API_CODEC_AUTH=oidc needs API_CODEC_OIDC_AUDIENCE, "
        "API_CODEC_OIDC_JWKS_URL"
    )
    with pytest.raises(SettingsError, match="API_CODEC_REQUIRED_CLAIM is malformed"):
        load_settings(api_codec_required_claim="groups")
    claimed = load_settings(api_codec_required_claim="groups=fulfillment-ops")
    assert claimed.codec_required_claim == ("groups", "fulfillment-ops")
