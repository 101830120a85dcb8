"""Freebit emulator: authOem, auth keys that expire, and malformed requests."""

from __future__ import annotations

import json
import time

from tests.fixtures.freebit_emulator import FreebitEmulatorHandle
from tests.integration.emulators._freebit import auth_key, call


def test_auth_oem_returns_an_auth_key(freebit_emulator: FreebitEmulatorHandle) -> None:
    reply = call(
        freebit_emulator, "authOem", oemId=freebit_emulator.oem_id, oemKey=freebit_emulator.oem_key
    )
    assert reply["resultCode"] == "100"
    assert reply["status"] == {"message": "OK", "statusCode": "200"}
    assert len(reply["authKey"]) == 32


def test_wrong_oem_key_is_refused(freebit_emulator: FreebitEmulatorHandle) -> None:
    reply = call(freebit_emulator, "authOem", oemId=freebit_emulator.oem_id, oemKey="wrong")
    assert reply["resultCode"] == "201"
    assert reply["status"]["statusCode"] == "401"
    assert "authKey" not in reply


def test_call_without_a_valid_auth_key_is_refused(freebit_emulator: FreebitEmulatorHandle) -> None:
    reply = call(freebit_emulator, "mvno/getTrafficInfo", authKey="nope", account="08011110001")
    assert (reply["resultCode"], reply["status"]["statusCode"]) == ("202", "401")


def test_auth_key_expires_after_its_lifetime(freebit_emulator: FreebitEmulatorHandle) -> None:
    freebit_emulator.http.post(
        f"{freebit_emulator.control_url}/config", json={"auth_key_lifetime": 0.2}
    )
    freebit_emulator.http.post(f"{freebit_emulator.control_url}/seed", json={"dataset": "demo"})
    key = auth_key(freebit_emulator)
    fresh = call(freebit_emulator, "mvno/getTrafficInfo", authKey=key, account="08011110001")
    assert fresh["resultCode"] == "100"
    time.sleep(0.25)
    stale = call(freebit_emulator, "mvno/getTrafficInfo", authKey=key, account="08011110001")
    assert stale["resultCode"] == "202"
    renewed = call(
        freebit_emulator,
        "mvno/getTrafficInfo",
        authKey=auth_key(freebit_emulator),
        account="08011110001",
    )
    assert renewed["resultCode"] == "100"


def test_tokens_expire_control_invalidates_every_auth_key(
    freebit_emulator: FreebitEmulatorHandle,
) -> None:
    freebit_emulator.http.post(f"{freebit_emulator.control_url}/seed", json={"dataset": "demo"})
    key = auth_key(freebit_emulator)
    expired = freebit_emulator.http.post(f"{freebit_emulator.control_url}/tokens/expire").json()
    assert expired == {"expired": 1}
    reply = call(freebit_emulator, "mvno/getTrafficInfo", authKey=key, account="08011110001")
    assert reply["resultCode"] == "202"


def test_json_field_may_come_multipart(freebit_emulator: FreebitEmulatorHandle) -> None:
    body = json.dumps({"oemId": freebit_emulator.oem_id, "oemKey": freebit_emulator.oem_key})
    reply = freebit_emulator.http.post(
        f"{freebit_emulator.api_url}authOem/", files={"json": (None, body)}
    )
    assert reply.json()["resultCode"] == "100"


def test_missing_or_broken_json_field_is_a_malformed_request(
    freebit_emulator: FreebitEmulatorHandle,
) -> None:
    url = f"{freebit_emulator.api_url}authOem/"
    assert freebit_emulator.http.post(url, data={"other": "1"}).json()["resultCode"] == "200"
    assert freebit_emulator.http.post(url, data={"json": "{oops"}).json()["resultCode"] == "200"
