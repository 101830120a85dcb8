"""The Salesforce emulator's Bayeux messages checked field by field over plain HTTP.

aiosfstream-ng hides most of the wire (advice, error texts, cookies), so these tests post the
messages a CometD client sends and compare the replies with what Salesforce answers
(protocols.md, "Salesforce Streaming API"). Also here: the engine's write-back of the Activation
fields, whose UPDATE event must list only the fields whose values changed.
"""

from __future__ import annotations

from typing import Any

import requests

from tests.fixtures.salesforce_emulator import SalesforceEmulatorHandle

ORDERS = "/data/OrderChangeEvent"


class Bayeux:
    """Posts Bayeux message batches to `/cometd/60.0` with a bearer token and a cookie jar."""

    def __init__(self, h: SalesforceEmulatorHandle, token: str) -> None:
        self.http: requests.Session = h.http()
        self.url = f"{h.instance_url}/cometd/60.0"
        self.token = token
        self.client_id = ""
        self._next_id = 0

    def post(self, *messages: dict[str, Any]) -> list[dict[str, Any]]:
        batch = []
        for message in messages:
            self._next_id += 1
            batch.append({"id": str(self._next_id), **message})
        reply = self.http.post(
            self.url, json=batch, headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )
        assert reply.status_code == 200
        body: list[dict[str, Any]] = reply.json()
        return body

    def handshake(self) -> dict[str, Any]:
        (reply,) = self.post(
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "supportedConnectionTypes": ["long-polling"],
            }
        )
        self.client_id = str(reply.get("clientId", ""))
        return reply

    def connect(self) -> list[dict[str, Any]]:
        return self.post(
            {
                "channel": "/meta/connect",
                "clientId": self.client_id,
                "connectionType": "long-polling",
            }
        )

    def subscribe(self, channel: str, replay: int | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {
            "channel": "/meta/subscribe",
            "clientId": self.client_id,
            "subscription": channel,
        }
        if replay is not None:
            message["ext"] = {"replay": {channel: replay}}
        (reply,) = self.post(message)
        return reply


def test_handshake_offers_only_long_polling_and_the_replay_extension(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    bayeux = Bayeux(sf_emulator, sf_emulator.login())
    reply = bayeux.handshake()

    assert reply["successful"] is True and reply["channel"] == "/meta/handshake"
    assert reply["supportedConnectionTypes"] == ["long-polling"]
    assert reply["version"] == "1.0" and reply["minimumVersion"] == "1.0"
    assert reply["ext"] == {"replay": True, "payload.format": True}
    assert reply["id"] == "1" and reply["clientId"]
    assert "BAYEUX_BROWSER" in bayeux.http.cookies


def test_first_connect_answers_at_once_with_the_advice_and_events_ride_along(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    sf: Any = sf_emulator.client()
    for order_id in ids["orders"].values():
        sf.Order.update(order_id, {"Description": "reviewed"})
    bayeux = Bayeux(sf_emulator, sf_emulator.login())
    bayeux.handshake()
    subscribed = bayeux.subscribe(ORDERS, replay=-2)
    assert subscribed["successful"] is True and subscribed["subscription"] == ORDERS

    replies = bayeux.connect()

    connect = next(r for r in replies if r["channel"] == "/meta/connect")
    assert connect["successful"] is True
    assert connect["advice"] == {"interval": 0, "timeout": 2000, "reconnect": "retry"}
    events = [r for r in replies if r["channel"] == ORDERS]
    assert len(events) == len(replies) - 1 and events
    recorded = {r for e in events for r in e["data"]["payload"]["ChangeEventHeader"]["recordIds"]}
    assert set(ids["orders"].values()) <= recorded


def test_a_rejected_token_gets_401_on_connect_and_handshake_denied_with_a_reason(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    good = Bayeux(sf_emulator, sf_emulator.login())
    good.handshake()
    good.token = "00Dnot-a-token"

    (connect,) = good.connect()
    assert connect["successful"] is False
    assert connect["error"] == "401::Authentication invalid"
    assert connect["advice"]["reconnect"] == "none"

    denied = good.handshake()
    assert denied["successful"] is False and denied["error"] == "403::Handshake denied"
    assert denied["ext"]["sfdc"]["failureReason"] == "401::Authentication invalid"


def test_an_unknown_client_is_told_to_handshake_again_at_once(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    bayeux = Bayeux(sf_emulator, sf_emulator.login())
    bayeux.handshake()
    sf_emulator.control("POST", "sessions/drop")

    (connect,) = bayeux.connect()
    assert connect["successful"] is False and connect["error"] == "403::Unknown client"
    assert connect["advice"] == {"reconnect": "handshake", "interval": 0}
    subscribe = bayeux.subscribe(ORDERS)
    assert subscribe["error"] == "403::Unknown client"
    assert subscribe["advice"] == {"reconnect": "handshake", "interval": 0}


def test_a_replay_id_outside_retention_gets_the_exact_400_text(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    bayeux = Bayeux(sf_emulator, sf_emulator.login())
    bayeux.handshake()

    reply = bayeux.subscribe(ORDERS, replay=82)

    assert reply["successful"] is False and reply["subscription"] == ORDERS
    assert reply["error"] == (
        "400::The replayId {82} you provided was invalid. Please provide a valid ID, -2 to "
        "replay all events, or -1 to replay only new events."
    )


def test_replay_minus_one_skips_retained_events_and_minus_two_replays_them(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    sf: Any = sf_emulator.client()
    for order_id in ids["orders"].values():
        sf.Order.update(order_id, {"Description": "reviewed"})
    fresh = Bayeux(sf_emulator, sf_emulator.login())
    fresh.handshake()
    fresh.subscribe(ORDERS, replay=-1)
    everything = Bayeux(sf_emulator, sf_emulator.login())
    everything.handshake()
    everything.subscribe(ORDERS, replay=-2)

    assert [r["channel"] for r in fresh.connect()] == ["/meta/connect"]
    replayed = [r for r in everything.connect() if r["channel"] == ORDERS]
    assert replayed
    first = replayed[0]["data"]["event"]["replayId"]

    resumed = Bayeux(sf_emulator, sf_emulator.login())
    resumed.handshake()
    resumed.subscribe(ORDERS, replay=first)
    after = [r["data"]["event"]["replayId"] for r in resumed.connect() if r["channel"] == ORDERS]
    assert after == [r["data"]["event"]["replayId"] for r in replayed[1:]]


def test_a_write_back_that_repeats_the_status_lists_only_the_fields_it_changed(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    sf: Any = sf_emulator.client()
    order_id = ids["orders"]["internet"]
    sf.Order.update(order_id, {"Status": "Activated"})
    bayeux = Bayeux(sf_emulator, sf_emulator.login())
    bayeux.handshake()
    bayeux.subscribe(ORDERS, replay=-1)
    bayeux.connect()

    sf.Order.update(
        order_id,
        {
            "Status": "Activated",
            "Activation_Status__c": "Activated",
            "Activation_Last_Attempt_At__c": "2025-01-15T10:00:00.000+0000",
            "Activation_Error_Code__c": None,
        },
    )
    (event,) = [r for r in bayeux.connect() if r["channel"] == ORDERS]

    payload = event["data"]["payload"]
    header = payload["ChangeEventHeader"]
    assert header["changeType"] == "UPDATE" and header["recordIds"] == [order_id]
    assert "Status" not in header["changedFields"] and "Status" not in payload
    assert "Activation_Error_Code__c" not in header["changedFields"]
    assert set(header["changedFields"]) >= {
        "Activation_Status__c",
        "Activation_Last_Attempt_At__c",
        "LastModifiedDate",
    }
    assert payload["Activation_Status__c"] == "Activated"
    assert payload["Activation_Last_Attempt_At__c"] == "2025-01-15T10:00:00.000Z"
    assert set(payload) - {"ChangeEventHeader"} == set(header["changedFields"])
