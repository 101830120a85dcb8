"""Customers' phone numbers, EIDs, names and addresses never reach the logs whole.

Everything goes through the real logging setup (`configure_logging`) and is read back from the
JSON line it writes, the way a log shipper would see it. Phone numbers and EIDs keep their last
four digits so that an operator can still match a line to a ticket; the ids operators work with
(order, WHMCS, workflow, replay ids) stay as they are.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from config.logging import REDACTED, configure_logging, get_logger

PHONE = "09012345678"
PHONE_MASKED = "*******5678"
EID = "89049032000001000000012345678901"
EID_MASKED = "*" * 28 + "8901"


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(level="DEBUG", fmt="json", stream=stream)
    yield stream
    logging.getLogger().handlers.clear()


def _line(stream: io.StringIO) -> dict[str, Any]:
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines() if text.strip()]
    assert isinstance(line, dict)
    return line


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("phone", "090-1234-5678", PHONE_MASKED),
        ("msisdn", "819012345678", "********5678"),
        ("account", PHONE, PHONE_MASKED),
        ("SIM_Phone_Number__c", "+81 90-1234-5678", "********5678"),
        ("eid", EID, EID_MASKED),
        ("EID__c", EID, EID_MASKED),
        ("name", "山田 太郎", REDACTED),
        ("firstname", "Taro", REDACTED),
        ("lastName", "Yamada", REDACTED),
        ("last_name_kana", "ヤマダ", REDACTED),
        ("street", "1-2-3 Shibuya", REDACTED),
        ("address", "1-2-3 Shibuya, Tokyo", REDACTED),
        ("BillingCity", "Shibuya-ku", REDACTED),
        ("postal_code", "150-0002", REDACTED),
        ("email", "taro@example.jp", REDACTED),
    ],
)
def test_personal_fields_are_masked_by_key(
    json_logs: io.StringIO, key: str, value: str, shown: str
) -> None:
    get_logger("test").info("order loaded", **{key: value})
    assert _line(json_logs)[key] == shown


def test_account_that_is_not_a_phone_number_stays(json_logs: io.StringIO) -> None:
    get_logger("test").info("whmcs client", account="ACME-0042")
    assert _line(json_logs)["account"] == "ACME-0042"


def test_nested_records_are_masked_leaf_by_leaf(json_logs: io.StringIO) -> None:
    # The shape a change event or a Salesforce record has when a caller logs it whole.
    get_logger("test").info(
        "change event",
        record={
            "Id": "801000000000001AAA",
            "BillingAddress": {"Street": "1-2-3 Shibuya", "City": "Shibuya-ku", "PostalCode": "1"},
            "Account": {"Name": "Yamada Taro", "Id": "001000000000001AAA"},
            "SIM_Phone_Number__c": PHONE,
            "EID__c": EID,
            "Status": "Activated",
        },
        lines=[{"account": PHONE, "planCode": "PASI_3G"}],
    )
    line = _line(json_logs)
    assert line["record"] == {
        "Id": "801000000000001AAA",
        "BillingAddress": {"Street": REDACTED, "City": REDACTED, "PostalCode": REDACTED},
        "Account": {"Name": REDACTED, "Id": "001000000000001AAA"},
        "SIM_Phone_Number__c": PHONE_MASKED,
        "EID__c": EID_MASKED,
        "Status": "Activated",
    }
    assert line["lines"] == [{"account": PHONE_MASKED, "planCode": "PASI_3G"}]


@pytest.mark.parametrize(
    "number",
    [
        PHONE,
        "090-1234-5678",
        "+81 90 1234 5678",
        "+81-90-1234-5678",
        "+819012345678",
        "02012345678901",
    ],
)
def test_phone_numbers_inside_free_text_keep_only_their_last_four_digits(
    json_logs: io.StringIO, number: str
) -> None:
    get_logger("test").warning(f"freebit refused line {number}: 400-356")
    event = _line(json_logs)["event"]
    assert number not in event
    digits = "".join(c for c in number if c.isdigit())
    assert event == f"freebit refused line {'*' * (len(digits) - 4)}{digits[-4:]}: 400-356"


def test_eids_and_phones_in_exceptions_and_stdlib_records_are_masked(
    json_logs: io.StringIO,
) -> None:
    try:
        raise RuntimeError(f'addAcnt failed: {{"account": "{PHONE}", "eid": "{EID}"}}')
    except RuntimeError:
        get_logger("test").exception("esim activation failed")
    logging.getLogger("stdlib").warning("line %s on %s", PHONE, EID)
    get_logger("test").error("call failed", error=ValueError(f"no line {PHONE}"))
    output = json_logs.getvalue()
    assert PHONE not in output and EID not in output
    assert output.count(PHONE_MASKED) == 3 and output.count(EID_MASKED) == 2


def test_operational_ids_are_never_masked(json_logs: io.StringIO) -> None:
    ids: dict[str, Any] = {
        "sf_order_id": "801000000000001AAA",
        "sf_account_id": "001000000000001AAA",
        "workflow_id": "order-fulfillment-801000000000001AAA",
        "whmcs_order_id": 81234567890,
        "whmcs_client_id": 12345678901,
        "whmcs_service_ids": [81234567891, 81234567892],
        "replay_id": "81234567890",
        "request_id": "09012345678-retry",
    }
    get_logger("test").info("fulfillment 801000000000001AAA at replay 1700000000123", **ids)
    line = _line(json_logs)
    assert {key: line[key] for key in ids} == ids
    assert line["event"] == "fulfillment 801000000000001AAA at replay 1700000000123"


def test_dates_amounts_and_short_numbers_in_text_stay(json_logs: io.StringIO) -> None:
    text = "invoice 2024-01-15 of 12000 JPY, order 81, 10.0.0.1:5432, 400-356, took 1234567ms"
    get_logger("test").info(text)
    assert _line(json_logs)["event"] == text


def test_console_format_masks_the_same_way() -> None:
    stream = io.StringIO()
    configure_logging(level="INFO", fmt="console", stream=stream)
    try:
        get_logger("test").info("sim requested", account=PHONE, name="Yamada Taro")
    finally:
        logging.getLogger().handlers.clear()
    output = stream.getvalue()
    assert PHONE not in output and "Yamada" not in output
    assert PHONE_MASKED in output
