"""Logging: JSON lines in production, and no secret ever reaches the output."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from config.logging import REDACTED, configure_logging, get_logger, scrub


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(
        level="INFO", fmt="json", secrets=["tok-abcdef123", "oem-key-987654"], stream=stream
    )
    yield stream
    logging.getLogger().handlers.clear()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_event_level_and_fields(json_logs: io.StringIO) -> None:
    get_logger("test").info("order loaded", sf_order_id="801000000000001AAA")
    (line,) = _lines(json_logs)
    assert line["event"] == "order loaded"
    assert line["level"] == "info"
    assert line["sf_order_id"] == "801000000000001AAA"
    assert "timestamp" in line


def test_secret_looking_keys_are_masked(json_logs: io.StringIO) -> None:
    get_logger("test").info(
        "calling", password="hunter2", headers={"Authorization": "Bearer x"}, card_number="4111"
    )
    (line,) = _lines(json_logs)
    assert line["password"] == REDACTED
    assert line["headers"] == {"Authorization": REDACTED}
    assert line["card_number"] == REDACTED


def test_known_secret_values_are_masked_anywhere(json_logs: io.StringIO) -> None:
    log = get_logger("test")
    log.warning("upstream said: token tok-abcdef123 rejected")
    try:
        raise RuntimeError("auth failed for oemKey=oem-key-987654")
    except RuntimeError:
        log.exception("freebit call failed")
    logging.getLogger("stdlib").error("via stdlib tok-abcdef123")
    output = json.dumps(_lines(json_logs))
    assert "tok-abcdef123" not in output
    assert "oem-key-987654" not in output
    assert output.count(REDACTED) >= 3


def test_scrub_masks_known_secrets_in_text(json_logs: io.StringIO) -> None:
    assert scrub("key=oem-key-987654;") == f"key={REDACTED};"
