"""Passwords inside DATABASE_URL / REDIS_URL, and the redactor's memory of secrets.

The URL passwords must not show in the settings' repr or dump, nor in any log line, while
`settings.database_url` stays the plain connection string the clients connect with. The
redactor masks the secrets of the configuration in force, and only those: reconfiguring
replaces them, so one test's (or one process phase's) secrets never bleed into the next.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.logging import REDACTED, configure_logging, get_logger, reset_redaction, scrub
from config.redaction import redact_url
from config.settings import Settings, load_settings

DB_PASSWORD = "pg-s3cret-Pw"
REDIS_PASSWORD = "redis-s3cret-Pw"
DATABASE_URL = f"postgresql://fulfil:{DB_PASSWORD}@db.internal:5432/fulfillment"
REDIS_URL = f"rediss://:{REDIS_PASSWORD}@cache.internal:6380/0"


@pytest.fixture(autouse=True)
def no_stray_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env file is read


@pytest.fixture
def settings() -> Settings:
    return load_settings(database_url=DATABASE_URL, redis_url=REDIS_URL)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    yield io.StringIO()
    logging.getLogger().handlers.clear()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (DATABASE_URL, "postgresql://fulfil:***@db.internal:5432/fulfillment"),
        (REDIS_URL, "rediss://:***@cache.internal:6380/0"),
        ("redis://default:pw@cache:6379/0", "redis://default:***@cache:6379/0"),
        (
            "postgresql:///fulfillment?host=/run/postgresql&password=sock-pw&sslmode=disable",
            "postgresql:///fulfillment?host=/run/postgresql&password=***&sslmode=disable",
        ),
        ("unix:///run/redis.sock?db=0&password=sock-pw", "unix:///run/redis.sock?db=0&password=***"),
        ("postgresql://u:p%40ss%2Fw@db/x", "postgresql://u:***@db/x"),
        # Written by hand with an unencoded "@" in the password: still hidden whole.
        ("postgresql://u:raw@pass@db/x", "postgresql://u:***@db/x"),
        # No password: nothing to hide, and the URL stays exactly as it was.
        ("postgresql://postgres:@/postgres?host=/tmp/run", "postgresql://postgres:@/postgres?host=/tmp/run"),
        ("postgresql://postgres@127.0.0.1:5432/postgres", "postgresql://postgres@127.0.0.1:5432/postgres"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)  # fmt: skip
def test_redact_url_hides_only_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_settings_repr_and_dump_hide_url_passwords_but_connect_with_them(
    settings: Settings,
) -> None:
    shown = [
        repr(settings),
        str(settings),
        str(settings.model_dump()),
        settings.model_dump_json(),
    ]
    for text in shown:
        assert DB_PASSWORD not in text and REDIS_PASSWORD not in text, text
    assert "fulfil:***@db.internal" in repr(settings)
    assert settings.model_dump()["redis_url"] == "rediss://:***@cache.internal:6380/0"
    # The clients connect with the attribute itself: it must stay the real connection string.
    assert settings.database_url == DATABASE_URL
    assert settings.redis_url == REDIS_URL


def test_url_passwords_are_secrets_too(settings: Settings) -> None:
    assert {DB_PASSWORD, REDIS_PASSWORD} <= set(settings.secrets())
    encoded = load_settings(
        database_url="postgresql://u:p%40ss%2Fword1@db/x",
        redis_url="unix:///run/redis.sock?password=sock%2Dpw-long",
    )
    # Both spellings: an error text may quote the URL or the decoded password.
    assert {"p%40ss%2Fword1", "p@ss/word1", "sock%2Dpw-long", "sock-pw-long"} <= set(
        encoded.secrets()
    )


def test_postgres_socket_url_with_password_parameter_is_accepted() -> None:
    url = "postgresql:///fulfillment?host=/run/postgresql&password=sock-pw-long"
    settings = load_settings(database_url=url)
    assert settings.database_url == url
    assert "sock-pw-long" in settings.secrets()
    assert "sock-pw-long" not in repr(settings)


def test_url_passwords_never_reach_a_log_line(settings: Settings, log_stream: io.StringIO) -> None:
    configure_logging(fmt="json", secrets=settings.secrets(), stream=log_stream)
    log = get_logger("test")
    log.info("connecting", database_url=settings.database_url, redis_url=settings.redis_url)
    log.error(f"authentication failed with password {DB_PASSWORD}")
    logging.getLogger("redis").error("cannot reach %s", settings.redis_url)
    log.error("pool failed", error=ConnectionError(f"refused for {settings.database_url}"))
    output = log_stream.getvalue()
    assert DB_PASSWORD not in output and REDIS_PASSWORD not in output
    first = json.loads(output.splitlines()[0])
    assert first["database_url"] == "postgresql://fulfil:***@db.internal:5432/fulfillment"


def test_a_password_too_short_to_mask_anywhere_is_still_masked_inside_a_url(
    log_stream: io.StringIO,
) -> None:
    settings = load_settings(database_url="postgresql://u:pw@db/x")
    configure_logging(fmt="json", secrets=settings.secrets(), stream=log_stream)
    get_logger("test").info(f"pool opened on {settings.database_url}")
    assert json.loads(log_stream.getvalue())["event"] == "pool opened on postgresql://u:***@db/x"


def test_reconfiguring_replaces_the_secrets_instead_of_adding_to_them(
    log_stream: io.StringIO,
) -> None:
    configure_logging(fmt="json", secrets=["first-config-secret"], stream=io.StringIO())
    configure_logging(fmt="json", secrets=["second-config-secret"], stream=log_stream)
    get_logger("test").info("seen: first-config-secret and second-config-secret")
    event = json.loads(log_stream.getvalue())["event"]
    # The configuration in force keeps its secret masked; the earlier one is forgotten.
    assert event == f"seen: first-config-secret and {REDACTED}"
    assert scrub("first-config-secret") == "first-config-secret"
    assert scrub("second-config-secret") == REDACTED


def test_reset_redaction_forgets_every_registered_secret() -> None:
    configure_logging(fmt="json", secrets=["registered-secret"], stream=io.StringIO())
    try:
        assert scrub("x registered-secret") == f"x {REDACTED}"
        reset_redaction()
        assert scrub("x registered-secret") == "x registered-secret"
    finally:
        logging.getLogger().handlers.clear()
