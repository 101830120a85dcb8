"""The Salesforce id validator and SOQL quoting: nothing but valid ids reach a query."""

from __future__ import annotations

import string
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from clients.salesforce_ids import (
    InvalidSalesforceId,
    checksum,
    is_valid_sf_id,
    validate_sf_id,
)
from clients.soql import datetime_literal, id_literal, quote

ALNUM = string.ascii_letters + string.digits
id15s = st.text(alphabet=ALNUM, min_size=15, max_size=15)


def test_documented_example_gets_its_known_suffix() -> None:
    assert validate_sf_id("001A0000006Vm9r") == "001A0000006Vm9rIAC"
    assert validate_sf_id("001A0000006Vm9rIAC") == "001A0000006Vm9rIAC"


def test_key_prefix_is_enforced() -> None:
    assert validate_sf_id("001A0000006Vm9rIAC", key_prefix="001")
    with pytest.raises(InvalidSalesforceId):
        validate_sf_id("001A0000006Vm9rIAC", key_prefix="801")


@given(id15s)
def test_valid_ids_always_pass_in_both_forms(id15: str) -> None:
    id18 = id15 + checksum(id15)
    assert validate_sf_id(id15) == id18
    assert validate_sf_id(id18) == id18
    assert validate_sf_id(id18, key_prefix=id15[:3]) == id18


@given(st.text(max_size=40))
def test_nothing_but_valid_ids_passes(value: str) -> None:
    valid = (len(value) == 15 and all(c in ALNUM for c in value)) or (
        len(value) == 18 and all(c in ALNUM for c in value) and value[15:] == checksum(value[:15])
    )
    assert is_valid_sf_id(value) == valid


@given(id15s, st.text(alphabet=ALNUM, min_size=3, max_size=3))
def test_a_wrong_checksum_is_refused(id15: str, suffix: str) -> None:
    assume(suffix != checksum(id15))
    assert not is_valid_sf_id(id15 + suffix)


@given(id15s, st.sampled_from(["'", " ", "\\", "%", "\n", "'; DELETE", "é", "\x00"]))
def test_injection_characters_are_refused(id15: str, junk: str) -> None:
    assert not is_valid_sf_id(id15[:10] + junk + id15[10:])
    assert not is_valid_sf_id(id15 + junk)


@pytest.mark.parametrize("value", [None, 123, b"001A0000006Vm9r", ["001A0000006Vm9r"]])
def test_non_strings_are_refused(value: object) -> None:
    assert not is_valid_sf_id(value)


def test_error_message_does_not_echo_the_input() -> None:
    with pytest.raises(InvalidSalesforceId) as info:
        validate_sf_id("' OR Name != '")
    assert "OR" not in str(info.value)


def _unquote(literal: str) -> str:
    """Read a SOQL string literal back, failing if it ends before its last character."""
    assert literal[0] == "'" and literal[-1] == "'"
    escapes = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}
    out, index, body = [], 0, literal[1:-1]
    while index < len(body):
        char = body[index]
        assert char != "'", "an unescaped quote would end the literal early"
        if char == "\\":
            nxt = body[index + 1]
            out.append(escapes.get(nxt, nxt))
            index += 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


@given(st.text())
def test_quote_keeps_any_string_inside_one_literal(value: str) -> None:
    assert _unquote(quote(value)) == value


def test_quote_escapes_quotes_and_backslashes() -> None:
    assert quote('O\'Brien \\ "x"') == "'O\\'Brien \\\\ \\\"x\\\"'"


def test_id_literal_quotes_only_valid_ids() -> None:
    assert id_literal("001A0000006Vm9r") == "'001A0000006Vm9rIAC'"
    with pytest.raises(InvalidSalesforceId):
        id_literal("001A0000006Vm9r' OR Id != '")


def test_a_datetime_goes_into_soql_as_a_utc_literal_and_a_naive_one_is_refused() -> None:
    tokyo = timezone(timedelta(hours=9))
    assert datetime_literal(datetime(2026, 12, 1, 9, 0, 30, 999, tzinfo=tokyo)) == (
        "2026-12-01T00:00:30Z"
    )
    with pytest.raises(ValueError, match="time zone"):
        datetime_literal(datetime(2026, 12, 1, 9, 0))
