"""The Salesforce emulator's Bayeux messages checked field by field over plain HTTP.

aiosfstream-ng hides most of the wire (advice, error texts, cookies), so these tests post the
messages a CometD client sends and compare the replies with what Salesforce answers
(as Salesforce's Streaming API documents them). Also here: the engine's write-back of the Activation
fields, whose UPDATE event must list only the fields whose values changed.
"""

from __future__ import annotations

from typing import Any

from tests.fixtures.salesforce_emulator import SalesforceEmulatorHandle

ORDERS = "/data/OrderChangeEvent"
ALL_CHANGES = "/data/ChangeEvents"
PRODUCTS = "/data/Product2ChangeEvent"
UNKNOWN_CLIENT_ADVICE = {"reconnect": "handshake", "interval": 0}


def replay_ids(events: list[dict[str, Any]]) -> list[int]:
    return [int(e["data"]["event"]["replayId"]) for e in events]


def record_ids(event: dict[str, Any]) -> list[str]:
    ids: list[str] = event["data"]["payload"]["ChangeEventHeader"]["recordIds"]
    return ids


def test_handshake_offers_only_long_polling_and_the_replay_extension(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    bayeux = sf_emulator.bayeux()
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
    bayeux = sf_emulator.bayeux()
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
    good = sf_emulator.bayeux()
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
    bayeux = sf_emulator.bayeux()
    bayeux.handshake()
    sf_emulator.control("POST", "sessions/drop")

    (connect,) = bayeux.connect()
    assert connect["successful"] is False and connect["error"] == "403::Unknown client"
    assert connect["advice"] == UNKNOWN_CLIENT_ADVICE
    # Salesforce names no client in this reply: the one asked about does not exist.
    assert "clientId" not in connect
    subscribe = bayeux.subscribe(ORDERS)
    assert subscribe["error"] == "403::Unknown client"
    assert subscribe["advice"] == UNKNOWN_CLIENT_ADVICE
    assert "clientId" not in subscribe


def test_a_replay_id_outside_retention_gets_the_exact_400_text(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    bayeux = sf_emulator.bayeux()
    bayeux.handshake()

    reply = bayeux.subscribe(ORDERS, replay=82)

    assert reply["successful"] is False and reply["subscription"] == ORDERS
    # Two spaces after "invalid.", as Salesforce sends it.
    assert reply["error"] == (
        "400::The replayId {82} you provided was invalid.  Please provide a valid ID, -2 to "
        "replay all events, or -1 to replay only new events."
    )


def test_replay_minus_one_skips_retained_events_and_minus_two_replays_them(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    sf: Any = sf_emulator.client()
    for order_id in ids["orders"].values():
        sf.Order.update(order_id, {"Description": "reviewed"})
    fresh = sf_emulator.bayeux()
    fresh.handshake()
    fresh.subscribe(ORDERS, replay=-1)
    everything = sf_emulator.bayeux()
    everything.handshake()
    everything.subscribe(ORDERS, replay=-2)

    assert [r["channel"] for r in fresh.connect()] == ["/meta/connect"]
    replayed = [r for r in everything.connect() if r["channel"] == ORDERS]
    assert replayed
    first = replayed[0]["data"]["event"]["replayId"]

    resumed = sf_emulator.bayeux()
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
    bayeux = sf_emulator.bayeux()
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


def test_after_the_handshake_a_call_without_the_session_cookie_is_an_unknown_client(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    bayeux = sf_emulator.bayeux()
    bayeux.handshake()
    assert bayeux.subscribe(ORDERS)["successful"] is True
    bayeux.http.cookies.clear()

    (connect,) = bayeux.connect()

    assert connect["successful"] is False and connect["error"] == "403::Unknown client"
    assert connect["advice"] == UNKNOWN_CLIENT_ADVICE and "clientId" not in connect
    # The refusal sets a fresh cookie; a new handshake under it works again.
    assert "BAYEUX_BROWSER" in bayeux.http.cookies
    assert bayeux.handshake()["successful"] is True
    connected = bayeux.connect()
    assert [r["successful"] for r in connected] == [True]


def test_a_session_cookie_of_another_browser_does_not_open_the_session(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    first, second = sf_emulator.bayeux(), sf_emulator.bayeux()
    first.handshake()
    second.handshake()
    assert first.http.cookies["BAYEUX_BROWSER"] != second.http.cookies["BAYEUX_BROWSER"]
    second.client_id = first.client_id

    (connect,) = second.connect()

    assert connect["error"] == "403::Unknown client" and "clientId" not in connect


def test_the_streaming_api_below_version_37_is_refused(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    old = sf_emulator.bayeux(version="36.0")
    refused = old.handshake()
    assert refused["successful"] is False and "clientId" not in refused
    assert refused["error"].startswith("400::")
    assert "37.0" in refused["error"]

    oldest_served = sf_emulator.bayeux(version="37.0")
    assert oldest_served.handshake()["successful"] is True


def test_replay_ids_are_numbered_per_channel(sf_emulator: SalesforceEmulatorHandle) -> None:
    ids = sf_emulator.seed_demo()
    sf: Any = sf_emulator.client()
    sf.Order.update(ids["orders"]["esim"], {"Description": "first"})
    sf.Product2.update(ids["products"]["VPN-BASIC"], {"Description": "only on all changes"})
    sf.Order.update(ids["orders"]["internet"], {"Description": "second"})

    orders = sf_emulator.bayeux().retained(ORDERS)
    everything = sf_emulator.bayeux().retained(ALL_CHANGES)
    products = sf_emulator.bayeux().retained(PRODUCTS)

    assert [record_ids(e) for e in orders] == [[ids["orders"]["esim"]], [ids["orders"]["internet"]]]
    assert len(everything) == 3 and len(products) == 1
    # Each channel numbers its own events: the same change has one id per channel it is on.
    assert replay_ids(orders) != replay_ids([everything[0], everything[2]])
    assert replay_ids(products) != replay_ids([everything[1]])
    for channel_ids in (replay_ids(orders), replay_ids(everything)):
        assert channel_ids == sorted(set(channel_ids))
    retained = sf_emulator.control("GET", f"events?channel={ORDERS}")
    assert retained["latestReplayId"] == replay_ids(orders)[-1]
    assert [e["replayIds"][ORDERS] for e in retained["events"]] == replay_ids(orders)
    assert retained["latestReplayIds"][ALL_CHANGES] == replay_ids(everything)[-1]
    # A resume point is read on its own channel.
    resumed = sf_emulator.bayeux()
    resumed.handshake()
    resumed.subscribe(ORDERS, replay=replay_ids(orders)[0])
    after = [m for m in resumed.connect() if m["channel"] == ORDERS]
    assert [record_ids(e) for e in after] == [[ids["orders"]["internet"]]]
