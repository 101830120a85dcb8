"""Freebit request models: the fields protocols.md names, and phone numbers of 11-14 digits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from clients.freebit import EsimActivation, MnpReservation, PhysicalSimActivation

EID = "89049032000000000000000000000123"
# "09012345678" in digits that are digits to Unicode (and to `\d`) but not to Freebit.
FULLWIDTH = "09012345678".translate({ord(d): 0xFF10 + int(d) for d in "0123456789"})
ARABIC_INDIC = "09012345678".translate({ord(d): 0x0660 + int(d) for d in "0123456789"})


@given(st.text(alphabet="0123456789", min_size=11, max_size=14))
def test_an_account_of_11_to_14_ascii_digits_is_accepted(account: str) -> None:
    assert PhysicalSimActivation(account=account, plan_code="PASI_3G").account == account


@pytest.mark.parametrize(
    "account",
    [
        "0901234567",  # 10 digits
        "090123456789012",  # 15 digits
        "090-1234-5678",
        FULLWIDTH,
        ARABIC_INDIC,
        "09012345678\n",
    ],
)
def test_an_account_that_is_not_11_to_14_ascii_digits_is_refused(account: str) -> None:
    with pytest.raises(ValidationError):
        PhysicalSimActivation(account=account, plan_code="PASI_3G")
    with pytest.raises(ValidationError):
        EsimActivation(account=account, eid=EID, plan_code="PASI_3G")


@pytest.mark.parametrize("eid", [EID[:-1], EID + "0", FULLWIDTH[:1] + EID[1:]])
def test_an_eid_that_is_not_32_ascii_digits_is_refused(eid: str) -> None:
    with pytest.raises(ValidationError):
        EsimActivation(account="09012345678", eid=eid, plan_code="PASI_3G")


def test_esim_request_carries_the_protocol_fields() -> None:
    request = EsimActivation(
        account="09012345678",
        eid=EID,
        plan_code="PASI_20G",
        add_kind="M",
        mnp=MnpReservation(reserveNumber="1234567890"),
    )
    assert request.to_json() == {
        "account": "09012345678",
        "eid": EID,
        "simKind": "E",
        "addKind": "M",
        "planCode": "PASI_20G",
        "mnp": {"reserveNumber": "1234567890"},
    }


def test_add_kind_is_one_of_n_m_r() -> None:
    with pytest.raises(ValidationError):
        EsimActivation(account="09012345678", eid=EID, plan_code="PASI_3G", add_kind="X")  # type: ignore[arg-type]
