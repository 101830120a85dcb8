"""The "lose_reply" fault: the emulator applies the request, then the client does not get the reply.

Driven over real HTTP against a toy emulator (and over TLS against the Salesforce emulator, which
is served through the same middleware), with the two client libraries the engine uses: httpx
(WHMCS, Freebit) and requests (simple-salesforce).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import requests
from simple_salesforce.exceptions import SalesforceGeneralError

from emulators.common.server import ThreadedServer
from tests.fixtures.salesforce_emulator import SalesforceEmulatorHandle
from tests.integration.emulators._toy import NotesEmulator, notes_app

FAULTS = "/__emulator__/faults"


def lose_reply(client: httpx.Client, **spec: Any) -> dict[str, Any]:
    reply = client.post(FAULTS, json={"kind": "lose_reply", **spec})
    assert reply.status_code == 201, reply.text
    rule: dict[str, Any] = reply.json()
    return rule


def add(client: httpx.Client, text: str, *, timeout: float = 5) -> httpx.Response:
    return client.post("/api", data={"action": "add", "text": text}, timeout=timeout)


def stored(client: httpx.Client) -> list[str]:
    notes: dict[str, str] = client.get("/__emulator__/state").json()["notes"]
    return sorted(notes.values())


def logged(client: httpx.Client, action: str = "add") -> list[tuple[int, str | None]]:
    records = client.get("/__emulator__/requests", params={"action": action}).json()["requests"]
    return [(r["status"], r["lost_reply"]) for r in records]


def eventually(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# -- mode "status" ----------------------------------------------------------------------------


def test_status_mode_applies_the_write_then_answers_502_once(notes: httpx.Client) -> None:
    rule = lose_reply(notes, count=1, action="add")
    assert (rule["mode"], rule["status"], rule["count"]) == ("status", 502, 1)
    lost = add(notes, "committed")
    assert lost.status_code == 502
    assert stored(notes) == ["committed"]
    assert add(notes, "second").status_code == 200
    assert stored(notes) == ["committed", "second"]
    assert logged(notes) == [(200, "status"), (200, None)]


def test_status_mode_sends_the_configured_status_and_body(notes: httpx.Client) -> None:
    body = {"result": "error", "message": "Gateway Timeout"}
    lose_reply(notes, mode="status", status=504, body=body, count=1)
    lost = add(notes, "x")
    assert (lost.status_code, lost.json()) == (504, body)
    assert stored(notes) == ["x"]


# -- mode "reset" -----------------------------------------------------------------------------


def test_reset_mode_applies_the_write_and_httpx_sees_a_broken_reply(notes: httpx.Client) -> None:
    lose_reply(notes, mode="reset", count=1, action="add")
    with pytest.raises(httpx.RemoteProtocolError):
        add(notes, "committed")
    assert stored(notes) == ["committed"]
    assert add(notes, "next").status_code == 200
    assert logged(notes) == [(200, "reset"), (200, None)]


def test_reset_mode_applies_the_write_and_requests_sees_a_broken_reply(
    notes: httpx.Client, notes_server: ThreadedServer
) -> None:
    lose_reply(notes, mode="reset", count=1)
    with requests.Session() as session, pytest.raises(requests.exceptions.RequestException) as err:
        session.post(f"{notes_server.base_url}/api", data={"action": "add", "text": "x"}, timeout=5)
    assert isinstance(
        err.value, requests.exceptions.ChunkedEncodingError | requests.exceptions.ConnectionError
    )
    assert stored(notes) == ["x"]


def test_a_dropped_reply_leaves_no_error_in_the_server_log(
    notes: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    lose_reply(notes, mode="reset", count=1)
    with caplog.at_level(logging.INFO, logger="uvicorn.error"), pytest.raises(httpx.HTTPError):
        add(notes, "x")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- mode "hang" ------------------------------------------------------------------------------


def test_hang_mode_applies_the_write_and_the_client_times_out(notes: httpx.Client) -> None:
    rule = lose_reply(notes, mode="hang", count=1, action="add")
    assert rule["ms"] == 60_000
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        add(notes, "committed", timeout=0.3)
    # The hold ends when the client gives up, not after its 60 s.
    assert stored(notes) == ["committed"]
    eventually(lambda: logged(notes) == [(200, "hang")])
    assert time.monotonic() - started < 5


def test_hang_mode_drops_the_reply_when_its_time_is_up(notes: httpx.Client) -> None:
    lose_reply(notes, mode="hang", ms=200, count=1)
    started = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError):
        add(notes, "x", timeout=5)
    assert time.monotonic() - started >= 0.2
    assert stored(notes) == ["x"]


def test_a_held_reply_does_not_block_other_requests_and_reset_releases_it(
    notes: httpx.Client, notes_server: ThreadedServer
) -> None:
    lose_reply(notes, mode="hang", count=1)
    outcome: list[BaseException] = []

    def held_call() -> None:
        try:
            httpx.post(
                f"{notes_server.base_url}/api", data={"action": "add", "text": "held"}, timeout=30
            )
        except httpx.HTTPError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=held_call)
    caller.start()
    eventually(lambda: stored(notes) == ["held"])
    started = time.monotonic()
    assert add(notes, "meanwhile").status_code == 200
    assert time.monotonic() - started < 1
    notes.post("/__emulator__/reset", json={"seed": 1})
    caller.join(timeout=5)
    assert not caller.is_alive()
    assert [type(exc) for exc in outcome] == [httpx.RemoteProtocolError]


def test_server_shutdown_ends_a_held_reply_at_once() -> None:
    emulator = NotesEmulator(seed=1)
    server = ThreadedServer(notes_app(emulator)).start()
    outcome: list[BaseException] = []

    def held_call() -> None:
        try:
            httpx.post(f"{server.base_url}/api", data={"action": "add", "text": "x"}, timeout=30)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    try:
        emulator.faults.add({"kind": "lose_reply", "mode": "hang", "count": 1})
        caller = threading.Thread(target=held_call)
        caller.start()
        eventually(lambda: list(emulator.notes.values()) == ["x"])
    finally:
        started = time.monotonic()
        server.stop()
    assert time.monotonic() - started < 1.5
    caller.join(timeout=5)
    assert [type(exc) for exc in outcome] == [httpx.RemoteProtocolError]


# -- matching, counting, listing --------------------------------------------------------------


def test_method_tells_a_write_from_a_read_on_the_same_path(notes: httpx.Client) -> None:
    rule = lose_reply(notes, mode="reset", count=1, method="post", path="/notes")
    assert rule["method"] == "POST"
    assert notes.get("/notes").status_code == 200
    assert add(notes, "form write").status_code == 200  # POST, other path
    with pytest.raises(httpx.RemoteProtocolError):
        notes.post("/notes", json={"text": "rest write"})
    assert notes.get("/notes").json() != {}
    assert stored(notes) == ["form write", "rest write"]


def test_method_matching_applies_to_fail_rules_too(notes: httpx.Client) -> None:
    notes.post(FAULTS, json={"kind": "fail", "count": 1, "method": "GET", "path": "/notes"})
    assert notes.post("/notes", json={"text": "x"}).status_code == 201
    assert notes.get("/notes").status_code == 503


def test_action_and_path_matching(notes: httpx.Client) -> None:
    lose_reply(notes, count=1, action="token")
    lose_reply(notes, count=1, path="/nowhere")
    assert add(notes, "x").status_code == 200
    assert notes.post("/api", data={"action": "token"}).status_code == 502
    assert notes.post("/api", data={"action": "token"}).status_code == 200
    assert [f["path"] for f in notes.get(FAULTS).json()["faults"]] == ["/nowhere"]


def test_count_loses_exactly_that_many_replies_and_all_writes_apply(notes: httpx.Client) -> None:
    lose_reply(notes, count=2)
    assert [add(notes, str(n)).status_code for n in range(3)] == [502, 502, 200]
    assert stored(notes) == ["0", "1", "2"]


def test_rate_with_count_loses_a_fraction_until_count_is_reached(notes: httpx.Client) -> None:
    lose_reply(notes, rate=1, count=1)
    lose_reply(notes, rate=0, count=1, action="add")
    assert [add(notes, str(n)).status_code for n in range(3)] == [502, 200, 200]


def test_lose_reply_rules_are_listed_cleared_and_reset(notes: httpx.Client) -> None:
    lose_reply(notes, mode="hang", ms=5000, count=3, method="PATCH", path="/services/data/")
    [listed] = notes.get(FAULTS).json()["faults"]
    assert listed == {
        "id": 1,
        "kind": "lose_reply",
        "mode": "hang",
        "ms": 5000,
        "count": 3,
        "remaining": 3,
        "method": "PATCH",
        "path": "/services/data/",
    }
    notes.delete(FAULTS)
    assert notes.get(FAULTS).json() == {"faults": []}
    lose_reply(notes, count=1)
    notes.post("/__emulator__/reset")
    assert notes.get(FAULTS).json() == {"faults": []}
    assert add(notes, "x").status_code == 200


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "a lose_reply rule needs 'count' or 'rate'"),
        ({"count": 0}, "'count' must be a positive integer"),
        ({"count": 1, "mode": "explode"}, "lose_reply 'mode' must be one of status, reset, hang"),
        ({"count": 1, "status": 99}, "'status' must be an HTTP status code"),
        ({"count": 1, "mode": "reset", "status": 502}, "'status' and 'body' apply only"),
        ({"count": 1, "mode": "hang", "body": "x"}, "'status' and 'body' apply only"),
        ({"count": 1, "mode": "status", "ms": 10}, "'ms' applies only to lose_reply mode 'hang'"),
        ({"count": 1, "mode": "hang", "ms": 0}, "'ms' must be an integer from 1 to 600000"),
        ({"count": 1, "mode": "hang", "ms": 600_001}, "'ms' must be an integer from 1 to 600000"),
        ({"count": 1, "mode": "hang", "ms": "10"}, "'ms' must be an integer from 1 to 600000"),
        ({"count": 1, "method": "GET /x"}, "'method' must be an HTTP method"),
        ({"count": 1, "method": 1}, "'method' must be a string"),
        ({"count": 1, "delay": 1}, "unknown fault fields: delay"),
    ],
)
def test_bad_lose_reply_rules_are_refused_with_a_clear_message(
    notes: httpx.Client, spec: dict[str, Any], message: str
) -> None:
    reply = notes.post(FAULTS, json={"kind": "lose_reply", **spec})
    assert reply.status_code == 400
    assert message in reply.json()["error"]
    assert notes.get(FAULTS).json() == {"faults": []}


def test_mode_belongs_to_lose_reply_only(notes: httpx.Client) -> None:
    reply = notes.post(FAULTS, json={"kind": "fail", "count": 1, "mode": "reset"})
    assert (reply.status_code, reply.json()) == (
        400,
        {"error": "'mode' applies only to kind 'lose_reply'"},
    )


# -- the Salesforce emulator (TLS, simple-salesforce) -----------------------------------------


def account_api(sf: SalesforceEmulatorHandle) -> Any:
    # simple-salesforce types `sf.Account` as a union of its REST and two bulk APIs.
    return sf.client().Account


def seed_account(sf: SalesforceEmulatorHandle) -> str:
    created = sf.control(
        "POST",
        "seed",
        {"records": [{"attributes": {"type": "Account", "referenceId": "a"}, "Name": "Before"}]},
    )
    return str(created["ids"]["a"])


def test_salesforce_write_back_applies_when_its_reply_is_reset_over_tls(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    account_id = seed_account(sf_emulator)
    accounts = account_api(sf_emulator)
    sf_emulator.control(
        "POST",
        "faults",
        {"kind": "lose_reply", "mode": "reset", "count": 1, "method": "PATCH"},
    )
    # A Salesforce update answers 204, which has no body to cut short: the fault must still
    # keep the reply from arriving whole.
    with pytest.raises(requests.exceptions.RequestException):
        accounts.update(account_id, {"Name": "After"})
    assert accounts.get(account_id)["Name"] == "After"
    [record] = [
        r for r in sf_emulator.control("GET", "requests")["requests"] if r["method"] == "PATCH"
    ]
    assert (record["status"], record["lost_reply"]) == (204, "reset")


def test_salesforce_write_back_applies_when_its_reply_is_a_502(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    account_id = seed_account(sf_emulator)
    accounts = account_api(sf_emulator)
    sf_emulator.control("POST", "faults", {"kind": "lose_reply", "count": 1, "method": "PATCH"})
    with pytest.raises(SalesforceGeneralError) as err:
        accounts.update(account_id, {"Name": "After"})
    assert err.value.status == 502
    assert accounts.get(account_id)["Name"] == "After"


def test_salesforce_write_back_applies_when_its_reply_hangs_over_tls(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    account_id = seed_account(sf_emulator)
    token = sf_emulator.login()
    url = (
        f"{sf_emulator.instance_url}/services/data/v{sf_emulator.api_version}"
        f"/sobjects/Account/{account_id}"
    )
    sf_emulator.control(
        "POST", "faults", {"kind": "lose_reply", "mode": "hang", "count": 1, "method": "PATCH"}
    )
    with sf_emulator.http() as session, pytest.raises(requests.exceptions.ReadTimeout):
        session.patch(
            url, json={"Name": "After"}, headers={"Authorization": f"Bearer {token}"}, timeout=0.3
        )
    assert account_api(sf_emulator).get(account_id)["Name"] == "After"
