"""The Salesforce emulator's Streaming API, driven only through aiosfstream-ng (subscribers) and
simple-salesforce (the REST changes that cause events), over TLS trusting the emulator's CA.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from aiosfstream_ng.client import Client
from aiosfstream_ng.exceptions import ServerError, TransportTimeoutError
from aiosfstream_ng.replay import ReplayMarker, ReplayOption

from emulators.common.server import ThreadedServer
from emulators.salesforce.app import create_app
from emulators.salesforce.auth import Credentials
from tests.fixtures.salesforce_emulator import SalesforceEmulatorHandle, by_name
from tests.fixtures.salesforce_streaming import OpenClient, PasswordGrantAuthenticator

ORDERS = "/data/OrderChangeEvent"
ALL_CHANGES = "/data/ChangeEvents"
ELIGIBILITY = "/event/Account_Eligibility_Update__e"
RECEIVE_TIMEOUT = 10


def authenticator_for(h: SalesforceEmulatorHandle) -> PasswordGrantAuthenticator:
    return PasswordGrantAuthenticator(
        token_url=h.token_url,
        client_id=h.client_id,
        client_secret=h.client_secret,
        username=h.username,
        password=h.password,
        ssl_context=ssl.create_default_context(cafile=h.ca_file),
    )


async def subscriber(
    h: SalesforceEmulatorHandle, open_client: OpenClient, *channels: str, **kwargs: Any
) -> tuple[Client, PasswordGrantAuthenticator]:
    authenticator = authenticator_for(h)
    client = await open_client(
        authenticator, ssl_context=ssl.create_default_context(cafile=h.ca_file), **kwargs
    )
    for channel in channels:
        await client.subscribe(channel)
    return client, authenticator


async def receive(client: Client, count: int) -> list[dict[str, Any]]:
    return [await asyncio.wait_for(client.receive(), RECEIVE_TIMEOUT) for _ in range(count)]


def header(message: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = message["data"]["payload"]["ChangeEventHeader"]
    return value


def replay_id(message: dict[str, Any]) -> int:
    value: int = message["data"]["event"]["replayId"]
    return value


def salesforce(h: SalesforceEmulatorHandle) -> Any:
    """A logged-in simple-salesforce client (typed Any: its sObject attributes are dynamic)."""
    return h.client()


def new_order(h: SalesforceEmulatorHandle, ids: dict[str, Any]) -> str:
    created = salesforce(h).Order.create(
        {
            "AccountId": ids["accounts"]["CUST-0001"],
            "Pricebook2Id": ids["pricebooks"]["portal"],
            "Status": "Draft",
            "EffectiveDate": "2025-01-15",
        }
    )
    order_id: str = created["id"]
    return order_id


async def test_cdc_events_of_rest_changes_arrive_on_the_object_channel_and_change_events(
    sf_emulator: SalesforceEmulatorHandle, sf_stream_clients: OpenClient
) -> None:
    ids = sf_emulator.seed_demo()
    sf = salesforce(sf_emulator)
    sf.Order.update(ids["orders"]["internet"], {"Status": "Activated"})  # before: not replayed
    client, _ = await subscriber(
        sf_emulator, sf_stream_clients, ORDERS, ALL_CHANGES, replay=ReplayOption.NEW_EVENTS
    )

    order_id = new_order(sf_emulator, ids)
    sf.Order.update(order_id, {"Status": "Activated"})
    messages = await receive(client, 4)

    by_channel = {
        channel: [m for m in messages if m["channel"] == channel]
        for channel in (ORDERS, ALL_CHANGES)
    }
    assert [len(v) for v in by_channel.values()] == [2, 2]
    assert [m["data"]["payload"] for m in by_channel[ORDERS]] == [
        m["data"]["payload"] for m in by_channel[ALL_CHANGES]
    ]
    # The same events, numbered by each channel on its own.
    assert [replay_id(m) for m in by_channel[ORDERS]] != [
        replay_id(m) for m in by_channel[ALL_CHANGES]
    ]
    create, update = by_channel[ORDERS]
    assert replay_id(create) < replay_id(update)
    for message in (create, update):
        h = header(message)
        assert h["entityName"] == "Order" and h["recordIds"] == [order_id]
        assert h["changeOrigin"].startswith("com/salesforce/api/rest/60.0")
        assert h["commitUser"].startswith("005") and len(h["commitUser"]) == 18
        assert isinstance(h["commitTimestamp"], int)
        assert abs(h["commitTimestamp"] / 1000 - time.time()) < 60
        assert isinstance(h["transactionKey"], str) and h["transactionKey"]
        assert isinstance(h["commitNumber"], int) and h["sequenceNumber"] == 1
    assert header(create)["changeType"] == "CREATE" and header(create)["changedFields"] == []
    assert create["data"]["payload"]["Status"] == "Draft"
    assert create["data"]["payload"]["AccountId"] == ids["accounts"]["CUST-0001"]
    assert header(update)["changeType"] == "UPDATE"
    assert {"Status", "LastModifiedDate"} <= set(header(update)["changedFields"])
    assert update["data"]["payload"]["Status"] == "Activated"
    assert "AccountId" not in update["data"]["payload"]
    assert header(create)["transactionKey"] != header(update)["transactionKey"]


async def test_replaying_all_events_delivers_the_retained_ones_then_new_ones(
    sf_emulator: SalesforceEmulatorHandle, sf_stream_clients: OpenClient
) -> None:
    ids = sf_emulator.seed_demo()
    sf = salesforce(sf_emulator)
    sf.Order.update(ids["orders"]["esim"], {"Status": "Activated"})
    sf.Order.update(ids["orders"]["internet"], {"Status": "Activated"})
    client, _ = await subscriber(
        sf_emulator, sf_stream_clients, ORDERS, replay=ReplayOption.ALL_EVENTS
    )

    retained = await receive(client, 2)
    sf.Order.update(ids["orders"]["physical_sim"], {"Status": "Activated"})
    [live] = await receive(client, 1)

    assert [header(m)["recordIds"] for m in [*retained, live]] == [
        [ids["orders"]["esim"]],
        [ids["orders"]["internet"]],
        [ids["orders"]["physical_sim"]],
    ]
    assert replay_id(retained[0]) < replay_id(retained[1]) < replay_id(live)


async def test_a_stored_replay_id_resumes_right_after_that_event(
    sf_emulator: SalesforceEmulatorHandle, sf_stream_clients: OpenClient
) -> None:
    ids = sf_emulator.seed_demo()
    sf = salesforce(sf_emulator)
    for key in ("esim", "internet", "physical_sim"):
        sf.Order.update(ids["orders"][key], {"Status": "Activated"})
    # The store starts out asking for everything retained; reading an event moves it on.
    markers = {ORDERS: ReplayMarker(date="0", replay_id=ReplayOption.ALL_EVENTS)}
    first_reader, _ = await subscriber(sf_emulator, sf_stream_clients, ORDERS, replay=markers)
    [first] = await receive(first_reader, 1)
    await first_reader.close()
    assert markers[ORDERS].replay_id == replay_id(first)

    resumed, _ = await subscriber(sf_emulator, sf_stream_clients, ORDERS, replay=markers)
    rest = await receive(resumed, 2)

    assert [header(m)["recordIds"] for m in [first, *rest]] == [
        [ids["orders"]["esim"]],
        [ids["orders"]["internet"]],
        [ids["orders"]["physical_sim"]],
    ]


async def test_platform_events_posted_over_rest_reach_their_channel(
    sf_emulator: SalesforceEmulatorHandle, sf_stream_clients: OpenClient
) -> None:
    ids = sf_emulator.seed_demo()
    client, _ = await subscriber(sf_emulator, sf_stream_clients, ELIGIBILITY)
    account_id = ids["accounts"]["CUST-0003"]

    salesforce(sf_emulator).Account_Eligibility_Update__e.create({"Account_Id__c": account_id})
    [message] = await receive(client, 1)

    payload = message["data"]["payload"]
    assert message["channel"] == ELIGIBILITY
    assert payload["Account_Id__c"] == account_id
    assert payload["CreatedById"].startswith("005")
    assert payload["CreatedDate"].endswith("Z")
    assert len(payload["EventUuid"]) == 36
    assert isinstance(replay_id(message), int)


async def test_a_dropped_session_is_rebuilt_and_resumes_from_the_last_consumed_event(
    sf_emulator: SalesforceEmulatorHandle, sf_stream_clients: OpenClient
) -> None:
    ids = sf_emulator.seed_demo()
    sf = salesforce(sf_emulator)
    markers: dict[str, ReplayMarker] = {}
    client, authenticator = await subscriber(sf_emulator, sf_stream_clients, ORDERS, replay=markers)
    sf.Order.update(ids["orders"]["esim"], {"Status": "Activated"})
    [before] = await receive(client, 1)

    assert sf_emulator.control("POST", "sessions/drop") == {"dropped": 1}
    # Published while the client has no session: it comes back through the replay of the
    # re-subscription that follows 403::Unknown client and a new handshake.
    sf.Order.update(ids["orders"]["internet"], {"Status": "Activated"})
    [during] = await receive(client, 1)
    sf.Order.update(ids["orders"]["physical_sim"], {"Status": "Activated"})
    [after] = await receive(client, 1)

    assert [header(m)["recordIds"][0] for m in (before, during, after)] == [
        ids["orders"][key] for key in ("esim", "internet", "physical_sim")
    ]
    # The library answers any 403 by authenticating again before it follows the advice.
    assert authenticator.authentications == 2


async def test_expired_tokens_make_the_subscriber_authenticate_again(
    sf_emulator: SalesforceEmulatorHandle, sf_stream_clients: OpenClient
) -> None:
    ids = sf_emulator.seed_demo()
    client, authenticator = await subscriber(sf_emulator, sf_stream_clients, ORDERS)

    assert sf_emulator.control("POST", "tokens/expire")["expired"] >= 2
    salesforce(sf_emulator).Order.update(ids["orders"]["esim"], {"Status": "Activated"})
    [message] = await receive(client, 1)

    assert header(message)["recordIds"] == [ids["orders"]["esim"]]
    assert authenticator.authentications == 2


async def test_a_replay_id_older_than_the_retained_window_gets_the_real_400(
    sf_emulator: SalesforceEmulatorHandle, sf_stream_clients: OpenClient
) -> None:
    sf_emulator.seed_demo()
    stale = {ORDERS: ReplayMarker(date="1600000000000", replay_id=82)}
    client, _ = await subscriber(sf_emulator, sf_stream_clients, replay=stale)

    with pytest.raises(ServerError) as refused:
        await client.subscribe(ORDERS)

    assert refused.value.response is not None
    assert refused.value.response["error"] == (
        "400::The replayId {82} you provided was invalid.  Please provide a valid ID, "
        "-2 to replay all events, or -1 to replay only new events."
    )
    assert client.subscriptions == set()


async def test_subscribing_to_a_channel_that_does_not_exist_is_refused(
    sf_emulator: SalesforceEmulatorHandle, sf_stream_clients: OpenClient
) -> None:
    client, _ = await subscriber(sf_emulator, sf_stream_clients)

    with pytest.raises(ServerError) as refused:
        await client.subscribe("/data/InvoiceChangeEvent")

    assert refused.value.error_code == 400
    assert refused.value.response is not None
    assert refused.value.response["error"] == (
        "400::The channel you requested to subscribe to does not exist {/data/InvoiceChangeEvent}"
    )


async def test_injected_gap_and_overflow_events_carry_only_their_header(
    sf_emulator: SalesforceEmulatorHandle, sf_stream_clients: OpenClient
) -> None:
    ids = sf_emulator.seed_demo()
    client, _ = await subscriber(sf_emulator, sf_stream_clients, ALL_CHANGES)
    order_id = ids["orders"]["esim"]

    sf_emulator.control(
        "POST",
        "events/gap",
        {"entity": "Order", "changeType": "GAP_UPDATE", "recordIds": [order_id]},
    )
    sf_emulator.control("POST", "events/overflow", {"entity": "OrderItem"})
    gap, overflow = await receive(client, 2)

    assert list(gap["data"]["payload"]) == ["ChangeEventHeader"]
    assert header(gap)["changeType"] == "GAP_UPDATE"
    assert header(gap)["entityName"] == "Order" and header(gap)["recordIds"] == [order_id]
    assert list(overflow["data"]["payload"]) == ["ChangeEventHeader"]
    assert header(overflow)["changeType"] == "GAP_OVERFLOW"
    assert header(overflow)["entityName"] == "OrderItem"
    assert header(overflow)["recordIds"] == []


async def test_a_transport_failure_surfaces_at_once_as_lost_connection(
    sf_emulator: SalesforceEmulatorHandle, sf_stream_clients: OpenClient
) -> None:
    """aiocometd-ng 0.5.6 calls `asyncio.wait_for(..., loop=...)`, a TypeError on Python 3.10+,
    so one failed long-poll ends `receive()` with TransportTimeoutError at once instead of being
    retried within `connection_timeout`: the listener has to own reconnection."""
    ids = sf_emulator.seed_demo()
    client, _ = await subscriber(sf_emulator, sf_stream_clients, ORDERS, connection_timeout=60)
    salesforce(sf_emulator).Order.update(ids["orders"]["esim"], {"Status": "Activated"})
    [delivered] = await receive(client, 1)

    # The next long-poll (the one in flight, or the one after it) gets a 503 that is not JSON.
    sf_emulator.control(
        "POST",
        "faults",
        {
            "kind": "fail",
            "count": 1,
            "status": 503,
            "body": "Service Unavailable",
            "path": "/cometd",
        },
    )
    started = time.monotonic()
    with pytest.raises(TransportTimeoutError, match="Lost connection with the server"):
        await asyncio.wait_for(client.receive(), RECEIVE_TIMEOUT)

    assert header(delivered)["recordIds"] == [ids["orders"]["esim"]]
    # Within one advice timeout (2 s here), nowhere near the 60 s connection_timeout.
    assert time.monotonic() - started < 5


def start_emulator(
    state_file: Path, certs: Path
) -> tuple[ThreadedServer, SalesforceEmulatorHandle]:
    app = create_app(
        seed=5,
        state_file=state_file,
        certs_dir=certs,
        credentials=Credentials(
            client_id="3MVG9restart", client_secret="s", username="u@x.test", password="p"
        ),
        connect_timeout_ms=2000,
    )
    server = ThreadedServer(
        app, ssl_certfile=app.state.ssl_certfile, ssl_keyfile=app.state.ssl_keyfile
    ).start()
    handle = SalesforceEmulatorHandle(
        instance_url=by_name(server.base_url),
        ca_file=app.state.ca_file,
        jwt_private_key_file=app.state.jwt_private_key_file,
        emulator=app.state.emulator,
        client_id="3MVG9restart",
        client_secret="s",
        username="u@x.test",
        password="p",
    )
    return server, handle


async def test_retained_events_survive_a_restart_from_the_state_file(
    tmp_path: Path, sf_stream_clients: OpenClient
) -> None:
    state_file, certs = tmp_path / "salesforce-state.json", tmp_path / "certs"
    server, h = start_emulator(state_file, certs)
    try:
        ids = h.seed_demo()
        sf = salesforce(h)
        for key in ("esim", "internet"):
            sf.Order.update(ids["orders"][key], {"Status": "Activated"})
        markers = {ORDERS: ReplayMarker(date="0", replay_id=ReplayOption.ALL_EVENTS)}
        reader, _ = await subscriber(h, sf_stream_clients, ORDERS, replay=markers)
        before = await receive(reader, 2)
        await reader.close()
    finally:
        server.stop()

    server, h = start_emulator(state_file, certs)
    try:
        everything, _ = await subscriber(
            h, sf_stream_clients, ORDERS, replay=ReplayOption.ALL_EVENTS
        )
        after = await receive(everything, 2)
        resumed_markers = {ORDERS: ReplayMarker(date="0", replay_id=replay_id(before[0]))}
        resumed, _ = await subscriber(h, sf_stream_clients, ORDERS, replay=resumed_markers)
        [second] = await receive(resumed, 1)
        await everything.close()
        await resumed.close()
    finally:
        server.stop()

    assert [m["data"] for m in after] == [m["data"] for m in before]
    assert second["data"] == before[1]["data"]
