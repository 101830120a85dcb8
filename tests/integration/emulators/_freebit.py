"""Helpers for the Freebit emulator tests: calls shaped as a real client sends them."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.fixtures.freebit_emulator import FreebitEmulatorHandle

EID = "89049032000000000000000000000123"


def call(handle: FreebitEmulatorHandle, operation: str, **fields: Any) -> dict[str, Any]:
    """POST `json=<fields>` url-encoded to /emptool/api/<operation>/ and decode the reply."""
    reply = handle.http.post(f"{handle.api_url}{operation}/", data={"json": json.dumps(fields)})
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def auth_key(handle: FreebitEmulatorHandle) -> str:
    reply = call(handle, "authOem", oemId=handle.oem_id, oemKey=handle.oem_key)
    assert reply["resultCode"] == "100", reply
    return str(reply["authKey"])


def line_state(handle: FreebitEmulatorHandle, key: str, account: str) -> dict[str, Any]:
    reply = call(
        handle, "master/getAcnt", authKey=key, requestDatas=[{"kind": "MVNO", "account": account}]
    )
    assert reply["resultCode"] == "100", reply
    detail: dict[str, Any] = reply["responseDatas"][0]
    return detail


def wait_for_state(
    handle: FreebitEmulatorHandle, key: str, account: str, *, timeout: float = 3.0
) -> dict[str, Any]:
    """Poll account detail, as a client would, until the line leaves "processing"."""
    deadline = time.monotonic() + timeout
    while True:
        detail = line_state(handle, key, account)
        if detail["state"] != "processing" or time.monotonic() > deadline:
            return detail
        time.sleep(0.02)
