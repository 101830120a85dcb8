"""WHMCS emulator: authentication, IP allow-list and response encodings, over HTTP."""

from __future__ import annotations

import hashlib

from tests.fixtures.whmcs_emulator import WhmcsEmulatorHandle
from tests.integration.emulators._whmcs import call, raw_call


def test_wrong_secret_is_refused_with_authentication_failed(
    whmcs_emulator: WhmcsEmulatorHandle,
) -> None:
    reply = raw_call(whmcs_emulator, "GetPaymentMethods", secret="wrong")
    assert reply.status_code == 200
    assert reply.json() == {"result": "error", "message": "Authentication Failed"}
    missing = whmcs_emulator.http.post(
        whmcs_emulator.api_url, data={"action": "GetPaymentMethods", "responsetype": "json"}
    )
    assert missing.json()["message"] == "Authentication Failed"


def test_username_and_md5_password_form_is_accepted(whmcs_emulator: WhmcsEmulatorHandle) -> None:
    digest = hashlib.md5(whmcs_emulator.secret.encode(), usedforsecurity=False).hexdigest()
    for password in (whmcs_emulator.secret, digest):
        reply = whmcs_emulator.http.post(
            whmcs_emulator.api_url,
            data={
                "action": "GetPaymentMethods",
                "username": whmcs_emulator.identifier,
                "password": password,
                "responsetype": "json",
            },
        )
        assert reply.json()["result"] == "success"


def test_caller_not_on_the_allow_list_gets_403_invalid_ip(
    whmcs_emulator: WhmcsEmulatorHandle,
) -> None:
    whmcs_emulator.http.post(
        f"{whmcs_emulator.control_url}/config", json={"allowed_ips": ["203.0.113.9"]}
    )
    reply = raw_call(whmcs_emulator, "GetPaymentMethods")
    assert reply.status_code == 403
    assert reply.json() == {"result": "error", "message": "Invalid IP 127.0.0.1"}


def test_access_key_lets_a_caller_past_the_ip_allow_list(
    whmcs_emulator: WhmcsEmulatorHandle,
) -> None:
    whmcs_emulator.http.post(
        f"{whmcs_emulator.control_url}/config", json={"allowed_ips": ["203.0.113.9"]}
    )
    reply = raw_call(whmcs_emulator, "GetPaymentMethods", accesskey=whmcs_emulator.access_key)
    assert reply.status_code == 200
    assert reply.json()["result"] == "success"


def test_allowed_caller_passes_the_ip_check(whmcs_emulator: WhmcsEmulatorHandle) -> None:
    whmcs_emulator.http.post(
        f"{whmcs_emulator.control_url}/config", json={"allowed_ips": ["127.0.0.1"]}
    )
    assert call(whmcs_emulator, "GetPaymentMethods")["result"] == "success"


def test_unknown_action_is_command_not_found(whmcs_emulator: WhmcsEmulatorHandle) -> None:
    assert call(whmcs_emulator, "MakeCoffee") == {"result": "error", "message": "Command Not Found"}


def test_without_responsetype_json_the_reply_is_whmcs_xml(
    whmcs_emulator: WhmcsEmulatorHandle,
) -> None:
    whmcs_emulator.seed_demo()
    reply = raw_call(whmcs_emulator, "GetPaymentMethods", responsetype="xml")
    assert reply.headers["content-type"].startswith("text/xml")
    assert "<result>success</result>" in reply.text
    assert "<module>banktransfer</module>" in reply.text


def test_unknown_setting_is_refused(whmcs_emulator: WhmcsEmulatorHandle) -> None:
    reply = whmcs_emulator.http.post(f"{whmcs_emulator.control_url}/config", json={"colour": "red"})
    assert reply.status_code == 400
