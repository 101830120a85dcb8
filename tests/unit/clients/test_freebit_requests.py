"""Freebit registrations built from a domain `SimRequest`: the fields Freebit's spec names, and
phone numbers and EIDs in ASCII digits only."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from clients.freebit import registration_json
from domain.sim import MnpTransfer, SimRequest, SimType

EID = "89049032000000000000000000000123"
# "09012345678" in digits that are digits to Unicode (and to `\d`) but not to Freebit.
FULLWIDTH = "09012345678".translate({ord(d): 0xFF10 + int(d) for d in "0123456789"})
ARABIC_INDIC = "09012345678".translate({ord(d): 0x0660 + int(d) for d in "0123456789"})
ORDER = "801000000000001AAA"


def request(**overrides: object) -> SimRequest:
    fields: dict[str, object] = {
        "sf_order_id": ORDER,
        "sim_type": SimType.ESIM,
        "phone_number": "09012345678",
        "plan_code": "PASI_20G",
        "eid": EID,
    }
    return SimRequest.model_validate(fields | overrides)


@given(st.text(alphabet="0123456789", min_size=11, max_size=14))
def test_an_account_of_11_to_14_ascii_digits_is_accepted(account: str) -> None:
    assert request(phone_number=account).phone_number == account


@pytest.mark.parametrize(
    "account",
    ["0901234567", "090123456789012", "090-1234-5678", FULLWIDTH, ARABIC_INDIC, "09012345678\n"],
)
def test_an_account_that_is_not_11_to_14_ascii_digits_is_refused(account: str) -> None:
    with pytest.raises(ValidationError):
        request(phone_number=account)


@pytest.mark.parametrize("eid", [EID[:-1], EID + "0", FULLWIDTH[:1] + EID[1:]])
def test_an_eid_that_is_not_32_ascii_digits_is_refused(eid: str) -> None:
    with pytest.raises(ValidationError):
        request(eid=eid)


def test_an_esim_registration_carries_the_protocol_fields() -> None:
    operation, path, data = registration_json(request())
    assert (operation, path) == ("esim_add_account", "mvno/esim/addAcnt/")
    assert data == {
        "account": "09012345678",
        "eid": EID,
        "simKind": "E",
        "addKind": "N",
        "planCode": "PASI_20G",
        "createType": "new",
        # We are not ALADIN: with "10" Freebit would allow addKind N only (400-356).
        "aladinOperated": "20",
    }


def test_a_number_port_sends_addkind_m_with_the_person_freebit_needs() -> None:
    mnp = MnpTransfer(
        reservation_number="1234567890",
        expiry_date=date(2026, 12, 10),
        last_name_kanji="山田",
        first_name_kanji="太郎",
        last_name_kana="ヤマダ",
        first_name_kana="タロウ",
        gender="M",
        birthday=date(1990, 4, 1),
    )
    operation, path, data = registration_json(request(sim_type=SimType.PHYSICAL, eid=None, mnp=mnp))
    assert (operation, path) == ("add_account", "master/addAcnt/")
    assert data["addKind"] == "M" and "eid" not in data
    assert data["mnp"] == {
        "reserveNumber": "1234567890",
        "reserveExpireDate": "20261210",
        "lastnameKanji": "山田",
        "firstnameKanji": "太郎",
        "lastnameZenKana": "ヤマダ",
        "firstnameZenKana": "タロウ",
        "gender": "M",
        "birthday": "19900401",
    }
