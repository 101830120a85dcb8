"""Freebit emulator control API: faults, seeds, and resuming from a state file mid-activation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from emulators.common.server import ThreadedServer
from emulators.freebit.app import create_app
from tests.fixtures.freebit_emulator import FreebitEmulatorHandle
from tests.integration.emulators._freebit import EID, auth_key, call, line_state, wait_for_state


def test_fail_next_activation_with_a_server_error(freebit_emulator: FreebitEmulatorHandle) -> None:
    key = auth_key(freebit_emulator)
    freebit_emulator.http.post(
        f"{freebit_emulator.control_url}/faults",
        json={"kind": "fail", "count": 1, "status": 502, "path": "/emptool/api/master/addAcnt"},
    )
    url = f"{freebit_emulator.api_url}master/addAcnt/"
    request = {
        "json": json.dumps(
            {"authKey": key, "account": "08012340009", "planCode": "PASI_3G", "createType": "new"}
        )
    }
    assert freebit_emulator.http.post(url, data=request).status_code == 502
    assert freebit_emulator.http.post(url, data=request).json()["resultCode"] == "100"


def test_fail_next_call_with_a_freebit_refusal_body(
    freebit_emulator: FreebitEmulatorHandle,
) -> None:
    key = auth_key(freebit_emulator)
    busy = {"resultCode": "503", "status": {"message": "busy", "statusCode": "503"}}
    freebit_emulator.http.post(
        f"{freebit_emulator.control_url}/faults",
        json={"kind": "fail", "count": 1, "status": 200, "body": busy},
    )
    first = call(freebit_emulator, "master/addAcnt", authKey=key, account="08012340010")
    assert first == busy
    accepted = call(
        freebit_emulator,
        "master/addAcnt",
        authKey=key,
        account="08012340010",
        planCode="PASI_3G",
        createType="new",
    )
    assert accepted["resultCode"] == "100", "the refused call changed nothing"


def test_fraction_of_calls_fail_repeatably_under_a_seed(
    freebit_emulator: FreebitEmulatorHandle,
) -> None:
    def statuses() -> list[int]:
        freebit_emulator.http.post(f"{freebit_emulator.control_url}/reset", json={"seed": 3})
        freebit_emulator.http.post(
            f"{freebit_emulator.control_url}/faults",
            json={"kind": "fail", "rate": 0.5, "status": 503, "path": "/emptool/api/authOem/"},
        )
        url = f"{freebit_emulator.api_url}authOem/"
        body = {"json": json.dumps({"oemId": "x", "oemKey": "y"})}
        return [freebit_emulator.http.post(url, data=body).status_code for _ in range(20)]

    first = statuses()
    assert set(first) == {200, 503}
    assert statuses() == first


def test_latency_slows_matching_operations_only(freebit_emulator: FreebitEmulatorHandle) -> None:
    freebit_emulator.http.post(
        f"{freebit_emulator.control_url}/faults",
        json={"kind": "latency", "ms": 300, "path": "/emptool/api/master/"},
    )
    started = time.monotonic()
    key = auth_key(freebit_emulator)
    assert time.monotonic() - started < 0.3
    started = time.monotonic()
    call(freebit_emulator, "master/getAcnt", authKey=key, requestDatas=[])
    assert time.monotonic() - started >= 0.3


def test_same_seed_gives_the_same_auth_keys(freebit_emulator: FreebitEmulatorHandle) -> None:
    def first_key() -> str:
        freebit_emulator.http.post(f"{freebit_emulator.control_url}/reset", json={"seed": 9})
        return auth_key(freebit_emulator)

    assert first_key() == first_key()


def test_sessions_drop_is_a_no_op_without_streaming(
    freebit_emulator: FreebitEmulatorHandle,
) -> None:
    reply = freebit_emulator.http.post(f"{freebit_emulator.control_url}/sessions/drop")
    assert reply.json() == {"dropped": 0}


def test_restart_from_state_file_keeps_lines_and_finishes_pending_activation(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "freebit.json")
    settings = {"activation_delay": 0.3}
    with ThreadedServer(create_app(seed=1, state_file=path, settings=settings)) as server:
        api = f"{server.base_url}/emptool/api/"
        key = httpx.post(
            f"{api}authOem/",
            data={"json": json.dumps({"oemId": "emulator-oem", "oemKey": "emulator-oem-key"})},
        ).json()["authKey"]
        request = {
            "authKey": key,
            "account": "08012340003",
            "eid": EID,
            "simKind": "E2",
            "addKind": "N",
            "createType": "new",
            "planCode": "PASI_3G",
        }
        accepted = httpx.post(f"{api}mvno/esim/addAcnt/", data={"json": json.dumps(request)})
        assert accepted.json()["resultCode"] == "100"
    with ThreadedServer(create_app(seed=1, state_file=path, settings=settings)) as server:
        handle = FreebitEmulatorHandle(base_url=server.base_url, http=httpx.Client())
        deadline = time.monotonic() + 3
        while True:
            reply = call(
                handle,
                "master/getAcnt",
                authKey=key,
                requestDatas=[{"kind": "MVNO", "account": "08012340003"}],
            )
            assert reply["resultCode"] == "100", "the auth key survived the restart too"
            state = reply["responseDatas"][0]["state"]
            if state != "processing" or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert state == "active"
        handle.http.close()


def test_config_changes_are_checked(freebit_emulator: FreebitEmulatorHandle) -> None:
    url = f"{freebit_emulator.control_url}/config"
    refused: list[dict[str, object]] = [
        {"colour": "red"},
        {"activation_delay": -1},
        {"activation_delay": True},
        {"failing_eids": "89049032000000000000000000000666"},
        {"plans": ["PASI_3G"]},
    ]
    for bad in refused:
        assert freebit_emulator.http.post(url, json=bad).status_code == 400, bad
    assert (
        freebit_emulator.http.post(url, json={"activation_delay": 1}).json()["activation_delay"]
        == 1.0
    )
    freebit_emulator.http.post(f"{freebit_emulator.control_url}/reset")
    assert freebit_emulator.http.get(url).json()["activation_delay"] == 0.2, "start value again"


def lose_next_reply(handle: FreebitEmulatorHandle, operation: str, **spec: object) -> None:
    reply = handle.http.post(
        f"{handle.control_url}/faults",
        json={"kind": "lose_reply", "count": 1, "path": f"/emptool/api/{operation}/", **spec},
    )
    assert reply.status_code == 201, reply.text


def registration(key: str, operation: str, account: str) -> dict[str, str]:
    request = {"authKey": key, "account": account, "planCode": "PASI_3G", "createType": "new"}
    if operation == "mvno/esim/addAcnt":
        request |= {"eid": EID, "simKind": "E", "addKind": "N"}
    return {"json": json.dumps(request)}


@pytest.mark.parametrize("operation", ["mvno/esim/addAcnt", "master/addAcnt"])
def test_a_registration_whose_reply_was_reset_made_the_line_and_a_repeat_says_so(
    freebit_emulator: FreebitEmulatorHandle, operation: str
) -> None:
    key = auth_key(freebit_emulator)
    lose_next_reply(freebit_emulator, operation, mode="reset")
    form = registration(key, operation, "08012340020")
    with pytest.raises(httpx.RemoteProtocolError):
        freebit_emulator.http.post(f"{freebit_emulator.api_url}{operation}/", data=form)
    detail = line_state(freebit_emulator, key, "08012340020")
    assert detail["state"] == "processing"
    repeat = freebit_emulator.http.post(f"{freebit_emulator.api_url}{operation}/", data=form)
    assert repeat.json()["status"] == {"message": "account already registered", "statusCode": "409"}


def test_an_activation_whose_reply_hangs_past_the_client_timeout_still_activates(
    freebit_emulator: FreebitEmulatorHandle,
) -> None:
    key = auth_key(freebit_emulator)
    lose_next_reply(freebit_emulator, "mvno/esim/addAcnt", mode="hang")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{freebit_emulator.api_url}mvno/esim/addAcnt/",
            data=registration(key, "mvno/esim/addAcnt", "08012340021"),
            timeout=0.3,
        )
    assert wait_for_state(freebit_emulator, key, "08012340021")["state"] == "active"
