"""Freebit emulator: line registration, eSIM activation (asynchronous), plans and options."""

from __future__ import annotations

import time
from typing import Any

import pytest

from emulators.freebit import demo
from tests.fixtures.freebit_emulator import FreebitEmulatorHandle
from tests.integration.emulators._freebit import EID, auth_key, call, line_state, wait_for_state


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
        "planCode": "PASI_10G",
        **fields,
    }
    return call(handle, "mvno/esim/addAcnt", **request)


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
    accepted = call(
        freebit_emulator, "master/addAcnt", authKey=key, account="08055550000", planCode="PASI_3G"
    )
    assert accepted["resultCode"] == "100"
    assert wait_for_state(freebit_emulator, key, "08055550000")["state"] == "failed"


def test_line_registration_turns_active(freebit_emulator: FreebitEmulatorHandle, key: str) -> None:
    call(freebit_emulator, "master/addAcnt", authKey=key, account="08012340002", planCode="PASI_3G")
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
    reply = activate_esim(
        freebit_emulator,
        key,
        addKind="M",
        mnp={"reserveNumber": "1234567890", "lastName": "Yamada"},
    )
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
    reply = call(
        freebit_emulator,
        "master/addAcnt",
        authKey=key,
        account=demo.DEMO_PHYSICAL_ACCOUNT,
        planCode="PASI_3G",
    )
    assert (reply["resultCode"], reply["status"]["statusCode"]) == ("212", "409")


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
