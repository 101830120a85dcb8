"""Helpers for the WHMCS emulator tests: calls shaped as a real API client sends them."""

from __future__ import annotations

import base64
from typing import Any

import httpx

from tests.fixtures.whmcs_emulator import WhmcsEmulatorHandle


def call(
    handle: WhmcsEmulatorHandle, action: str, data: dict[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    """POST one action with credentials and responsetype=json; return the decoded reply."""
    reply = raw_call(handle, action, data, **fields)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def raw_call(
    handle: WhmcsEmulatorHandle, action: str, data: dict[str, Any] | None = None, **fields: Any
) -> httpx.Response:
    form = {
        "action": action,
        "identifier": handle.identifier,
        "secret": handle.secret,
        "responsetype": "json",
        **(data or {}),
        **fields,
    }
    return handle.http.post(handle.api_url, data=form)


def custom_fields(values: dict[int, str]) -> str:
    """base64(php serialize({id: value})), written out independently of the emulator's code."""
    body = "".join(f'i:{key};s:{len(value.encode())}:"{value}";' for key, value in values.items())
    return base64.b64encode(f"a:{len(values)}:{{{body}}}".encode()).decode()
