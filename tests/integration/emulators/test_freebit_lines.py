"""Freebit emulator: line registration, eSIM activation (asynchronous), plans and options."""

from __future__ import annotations

import time
from typing import Any

import pytest

from emulators.freebit import demo
from tests.fixtures.freebit_emulator import FreebitEmulatorHandle
from tests.integration.emulators._freebit import EID, auth_key, call, line_state, wait_for_state

# A complete port-in block, as the spec's person fields name it.
MNP: dict[str, str] = {
    "reserveNumber": "1234567890",
    "reserveExpireDate": "20991231",
    "lastnameKanji": "山田",
    "firstnameKanji": "太郎",
    "lastnameZenKana": "ヤマダ",
    "firstnameZenKana": "タロウ",
    "gender": "M",
    "birthday": "19800102",
}
REGISTRATIONS = ["mvno/esim/addAcnt", "master/addAcnt"]


@pytest.fixture
def key(freebit_emulator: FreebitEmulatorHandle) -> str:
    freebit_emulator.http.post(f"{freebit_emulator.control_url}/seed", json={"dataset": "demo"})
    return auth_key(freebit_emulator)


def activate_esim(handle: FreebitEmulatorHandle, key: str, **fields: Any) -> dict[str, Any]:
    request = {
        "authKey": key,
        "account": "08012340001",
        "eid": EID,
        "simKind": "E2",
        "addKind": "N",
        "createType": "new",
        "aladinOperated": "20",
        "planCode": "PASI_10G",
        **fields,
    }
    return call(handle, "mvno/esim/addAcnt", **request)


def register_line(handle: FreebitEmulatorHandle, key: str, **fields: Any) -> dict[str, Any]:
    request = {
        "authKey": key,
        "account": "08012340002",
        "addKind": "N",
        "createType": "new",
        "planCode": "PASI_3G",
        **fields,
    }
    return call(handle, "master/addAcnt", **request)


def test_esim_activation_is_accepted_then_turns_active_after_the_delay(
    freebit_emulator: FreebitEmulatorHandle, key: str
) -> None:
    started = time.monotonic()
    accepted = activate_esim(freebit_emulator, key)
    assert accepted["resultCode"] == "100"
    assert accepted["account"] == "08012340001"
    assert line_state(freebit_emulator, key, "08012340001")["state"] == "processing"
    detail = wait_for_state(freebit_emulator, key, "08012340001")
    assert time.monotonic() - started >= freebit_emulator.activation_delay
    assert (detail["state"], detail["eid"], detail["planCode"]) == ("active", EID, "PASI_10G")


def test_activation_of_a_configured_failing_eid_turns_failed(
    freebit_emulator: FreebitEmulatorHandle, key: str
) -> None:
    accepted = activate_esim(freebit_emulator, key, eid=demo.FAILING_EID)
    assert accepted["resultCode"] == "100"
    detail = wait_for_state(freebit_emulator, key, "08012340001")
    assert detail["state"] == "failed"
    assert detail["failReason"]


def test_registration_of_a_configured_failing_number_turns_failed(
    freebit_emulator: FreebitEmulatorHandle, key: str
) -> None:
    freebit_emulator.http.post(
        f"{freebit_emulator.control_url}/config", json={"failing_accounts": ["08055550000"]}
    )
    accepted = register_line(freebit_emulator, key, account="08055550000")
    assert accepted["resultCode"] == "100"
    assert wait_for_state(freebit_emulator, key, "08055550000")["state"] == "failed"


def test_line_registration_turns_active(freebit_emulator: FreebitEmulatorHandle, key: str) -> None:
    register_line(freebit_emulator, key, account="08012340002")
    detail = wait_for_state(freebit_emulator, key, "08012340002")
    assert (detail["state"], detail["simType"]) == ("active", "physical")


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"addKind": "X"}, "400-356"),
        ({"addKind": "R"}, "400-356"),
        ({"eid": "1234"}, "230"),
        ({"planCode": "NO_SUCH_PLAN"}, "220"),
        ({"account": "12"}, "210"),
        ({"addKind": "M"}, "210"),
        ({"account": demo.DEMO_ESIM_ACCOUNT}, "212"),
    ],
)
def test_esim_activation_refusals_carry_their_result_code(
    freebit_emulator: FreebitEmulatorHandle, key: str, fields: dict[str, object], code: str
) -> None:
    reply = activate_esim(freebit_emulator, key, **fields)
    assert reply["resultCode"] == code
    assert set(reply["status"]) == {"message", "statusCode"}


def test_number_port_in_with_a_reservation_is_accepted(
    freebit_emulator: FreebitEmulatorHandle, key: str
) -> None:
    reply = activate_esim(freebit_emulator, key, addKind="M", mnp=dict(MNP))
    assert reply["resultCode"] == "100"


def test_reissue_of_an_existing_esim_line_is_accepted(
    freebit_emulator: FreebitEmulatorHandle, key: str
) -> None:
    reply = activate_esim(freebit_emulator, key, addKind="R", account=demo.DEMO_ESIM_ACCOUNT)
    assert reply["resultCode"] == "100"
    assert line_state(freebit_emulator, key, demo.DEMO_ESIM_ACCOUNT)["state"] == "processing"


def test_duplicate_line_registration_is_refused(
    freebit_emulator: FreebitEmulatorHandle, key: str
) -> None:
    reply = register_line(freebit_emulator, key, account=demo.DEMO_PHYSICAL_ACCOUNT)
    assert reply["resultCode"] == "212"
    assert reply["status"] == {"message": "account already registered", "statusCode": "409"}


def test_account_detail_of_an_unknown_line_is_not_found(
    freebit_emulator: FreebitEmulatorHandle, key: str
) -> None:
    reply = call(
        freebit_emulator,
        "master/getAcnt",
        authKey=key,
        requestDatas=[{"kind": "MVNO", "account": "09000000000"}],
    )
    assert reply["resultCode"] == "211"


def test_traffic_info_of_an_active_line(freebit_emulator: FreebitEmulatorHandle, key: str) -> None:
    reply = call(
        freebit_emulator, "mvno/getTrafficInfo", authKey=key, account=demo.DEMO_PHYSICAL_ACCOUNT
    )
    assert reply["resultCode"] == "100"
    assert set(reply["traffic"]) >= {"today", "thisMonth"}


def test_plan_change_applies_from_its_run_time(
    freebit_emulator: FreebitEmulatorHandle, key: str
) -> None:
    account = demo.DEMO_PHYSICAL_ACCOUNT
    later = call(
        freebit_emulator,
        "mvno/changePlan",
        authKey=key,
        account=account,
        planCode="PASI_50G",
        runTime="29991231",
    )
    assert later["resultCode"] == "100"
    detail = line_state(freebit_emulator, key, account)
    assert detail["planCode"] == "PASI_3G"
    assert detail["pendingPlan"] == {"planCode": "PASI_50G", "runTime": "29991231"}
    call(
        freebit_emulator,
        "mvno/changePlan",
        authKey=key,
        account=account,
        planCode="PASI_10G",
        runTime="20000101",
    )
    assert line_state(freebit_emulator, key, account)["planCode"] == "PASI_10G"
    bad = call(
        freebit_emulator, "mvno/changePlan", authKey=key, account=account, planCode="X", runTime="1"
    )
    assert bad["resultCode"] == "220"


def test_talk_option_order(freebit_emulator: FreebitEmulatorHandle, key: str) -> None:
    account = demo.DEMO_ESIM_ACCOUNT
    ordered = call(
        freebit_emulator,
        "mvno/talkoption/addOrder",
        authKey=key,
        account=account,
        optionCode="TALK_5MIN",
    )
    assert ordered["resultCode"] == "100"
    assert line_state(freebit_emulator, key, account)["talkOptions"] == ["TALK_5MIN"]
    unknown = call(
        freebit_emulator, "mvno/talkoption/addOrder", authKey=key, account=account, optionCode="X"
    )
    assert unknown["resultCode"] == "220"


def register(
    handle: FreebitEmulatorHandle, key: str, operation: str, **fields: Any
) -> dict[str, Any]:
    if operation == "master/addAcnt":
        return register_line(handle, key, **fields)
    return activate_esim(handle, key, **fields)


def is_registered(handle: FreebitEmulatorHandle, key: str, account: str) -> bool:
    reply = call(
        handle, "master/getAcnt", authKey=key, requestDatas=[{"kind": "MVNO", "account": account}]
    )
    return bool(reply["resultCode"] == "100")


@pytest.mark.parametrize(
    ("add_kind", "account", "extra"),
    [("M", "08012340001", {"mnp": MNP}), ("R", demo.DEMO_ESIM_ACCOUNT, {})],
)
def test_esim_from_aladin_allows_only_add_kind_n(
    freebit_emulator: FreebitEmulatorHandle,
    key: str,
    add_kind: str,
    account: str,
    extra: dict[str, Any],
) -> None:
    before = line_state(freebit_emulator, key, demo.DEMO_ESIM_ACCOUNT)["state"]
    reply = activate_esim(
        freebit_emulator, key, aladinOperated="10", addKind=add_kind, account=account, **extra
    )
    assert reply["resultCode"] == "400-356"
    assert reply["status"]["statusCode"] == "400"
    assert "addKind" in reply["status"]["message"]
    assert not is_registered(freebit_emulator, key, "08012340001")
    assert line_state(freebit_emulator, key, demo.DEMO_ESIM_ACCOUNT)["state"] == before
    # Outside ALADIN the same requests are fine.
    fine = activate_esim(
        freebit_emulator, key, aladinOperated="20", addKind=add_kind, account=account, **extra
    )
    assert fine["resultCode"] == "100"


def test_esim_from_aladin_with_add_kind_n_is_accepted(
    freebit_emulator: FreebitEmulatorHandle, key: str
) -> None:
    assert activate_esim(freebit_emulator, key, aladinOperated="10")["resultCode"] == "100"


@pytest.mark.parametrize("operation", REGISTRATIONS)
def test_aladin_operated_is_a_flag(
    freebit_emulator: FreebitEmulatorHandle, key: str, operation: str
) -> None:
    reply = register(freebit_emulator, key, operation, aladinOperated="1")
    assert (reply["resultCode"], reply["status"]["message"]) == (
        "210",
        "aladinOperated must be 10 or 20",
    )


@pytest.mark.parametrize("operation", REGISTRATIONS)
@pytest.mark.parametrize("create_type", [None, "", "  "])
def test_create_type_is_required_on_every_registration(
    freebit_emulator: FreebitEmulatorHandle, key: str, operation: str, create_type: str | None
) -> None:
    reply = register(freebit_emulator, key, operation, createType=create_type)
    assert reply == {
        "resultCode": "210",
        "status": {"message": "createType is required", "statusCode": "400"},
    }
    account = "08012340001" if operation == "mvno/esim/addAcnt" else "08012340002"
    assert not is_registered(freebit_emulator, key, account)


@pytest.mark.parametrize("operation", REGISTRATIONS)
@pytest.mark.parametrize("missing", sorted(MNP))
def test_a_port_in_needs_every_person_field(
    freebit_emulator: FreebitEmulatorHandle, key: str, operation: str, missing: str
) -> None:
    mnp = {name: value for name, value in MNP.items() if name != missing}
    reply = register(freebit_emulator, key, operation, addKind="M", mnp=mnp)
    assert reply == {
        "resultCode": "210",
        "status": {"message": f"missing MNP fields: mnp.{missing}", "statusCode": "400"},
    }
    blank = register(freebit_emulator, key, operation, addKind="M", mnp={**MNP, missing: " "})
    assert blank["resultCode"] == "210"
    assert f"mnp.{missing}" in blank["status"]["message"]


@pytest.mark.parametrize("operation", REGISTRATIONS)
def test_a_port_in_without_its_block_names_every_field(
    freebit_emulator: FreebitEmulatorHandle, key: str, operation: str
) -> None:
    reply = register(freebit_emulator, key, operation, addKind="M")
    assert reply["resultCode"] == "210"
    assert reply["status"]["message"] == "mnp is required for addKind M"
    empty = register(freebit_emulator, key, operation, addKind="M", mnp={})
    assert empty["status"]["message"] == "missing MNP fields: " + ", ".join(
        f"mnp.{name}" for name in MNP
    )


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"birthday": "1980-01-02"}, "mnp.birthday must be YYYYMMDD"),
        ({"reserveExpireDate": "2099123"}, "mnp.reserveExpireDate must be YYYYMMDD"),
        ({"gender": "X"}, "mnp.gender must be M, F or C"),
    ],
)
def test_port_in_fields_must_be_well_formed(
    freebit_emulator: FreebitEmulatorHandle, key: str, bad: dict[str, str], message: str
) -> None:
    reply = activate_esim(freebit_emulator, key, addKind="M", mnp={**MNP, **bad})
    assert (reply["resultCode"], reply["status"]["message"]) == ("210", message)


def test_an_mnp_block_is_checked_whatever_the_add_kind(
    freebit_emulator: FreebitEmulatorHandle, key: str
) -> None:
    reply = register_line(freebit_emulator, key, addKind="N", mnp={"reserveNumber": "1"})
    assert reply["resultCode"] == "210"
    assert reply["status"]["message"].startswith("missing MNP fields: mnp.reserveExpireDate")


@pytest.mark.parametrize("gender", ["M", "F", "C"])
def test_physical_sim_port_in_with_every_field_is_accepted(
    freebit_emulator: FreebitEmulatorHandle, key: str, gender: str
) -> None:
    reply = register_line(freebit_emulator, key, addKind="M", mnp={**MNP, "gender": gender})
    assert reply["resultCode"] == "100"
    assert wait_for_state(freebit_emulator, key, "08012340002")["state"] == "active"


@pytest.mark.parametrize(
    ("operation", "account"),
    [
        ("mvno/esim/addAcnt", demo.DEMO_ESIM_ACCOUNT),
        ("master/addAcnt", demo.DEMO_PHYSICAL_ACCOUNT),
        ("mvno/esim/addAcnt", demo.DEMO_PHYSICAL_ACCOUNT),
    ],
)
def test_registering_an_existing_line_is_told_apart_from_refusals(
    freebit_emulator: FreebitEmulatorHandle, key: str, operation: str, account: str
) -> None:
    reply = register(freebit_emulator, key, operation, account=account)
    assert reply == {
        "resultCode": "212",
        "status": {"message": "account already registered", "statusCode": "409"},
    }
    assert line_state(freebit_emulator, key, account)["state"] == "active", "left as it was"


def test_physical_sim_reissue_needs_an_existing_physical_line(
    freebit_emulator: FreebitEmulatorHandle, key: str
) -> None:
    reissued = register_line(freebit_emulator, key, addKind="R", account=demo.DEMO_PHYSICAL_ACCOUNT)
    assert reissued["resultCode"] == "100"
    assert line_state(freebit_emulator, key, demo.DEMO_PHYSICAL_ACCOUNT)["state"] == "processing"
    unknown = register_line(freebit_emulator, key, addKind="R", account="09012345678")
    assert (unknown["resultCode"], unknown["status"]["statusCode"]) == ("211", "404")
    esim = register_line(freebit_emulator, key, addKind="R", account=demo.DEMO_ESIM_ACCOUNT)
    assert esim["resultCode"] == "210"
    assert register_line(freebit_emulator, key, addKind="X")["resultCode"] == "210"


def test_account_detail_answers_the_first_requested_account_only(
    freebit_emulator: FreebitEmulatorHandle, key: str
) -> None:
    both = [
        {"kind": "MVNO", "account": demo.DEMO_PHYSICAL_ACCOUNT},
        {"kind": "MVNO", "account": demo.DEMO_ESIM_ACCOUNT},
    ]
    reply = call(freebit_emulator, "master/getAcnt", authKey=key, requestDatas=both)
    assert [d["account"] for d in reply["responseDatas"]] == [demo.DEMO_PHYSICAL_ACCOUNT]
    unknown_first = [{"kind": "MVNO", "account": "09000000000"}, *both]
    missing = call(freebit_emulator, "master/getAcnt", authKey=key, requestDatas=unknown_first)
    assert missing["resultCode"] == "211"
    known_first = [*both[1:], {"kind": "MVNO", "account": "09000000000"}]
    found = call(freebit_emulator, "master/getAcnt", authKey=key, requestDatas=known_first)
    assert [d["account"] for d in found["responseDatas"]] == [demo.DEMO_ESIM_ACCOUNT]


def test_a_line_seeded_in_an_undocumented_state_is_reported_as_it_is(
    freebit_emulator: FreebitEmulatorHandle, key: str
) -> None:
    seeded = freebit_emulator.http.post(
        f"{freebit_emulator.control_url}/seed",
        json={"records": {"accounts": [{"account": "08077770000", "state": "suspended"}]}},
    )
    assert seeded.json() == {"accounts": ["08077770000"]}
    # A line registered now turns active once the delay is over; the seeded one keeps its state.
    register_line(freebit_emulator, key)
    assert wait_for_state(freebit_emulator, key, "08012340002")["state"] == "active"
    assert line_state(freebit_emulator, key, "08077770000")["state"] == "suspended"
