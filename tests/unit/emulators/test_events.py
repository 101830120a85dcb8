"""The Salesforce emulator's event bus (envelopes, replay ids per channel, retention, persistence)
and how one transaction's record operations become its change events (`cdc`)."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import pytest

from emulators.salesforce.cdc import transaction_events
from emulators.salesforce.events import ALL_CHANGE_EVENTS, EventBus, StreamEvent
from emulators.salesforce.store import Change, Record

ORDER_ID = "801000000000001AAA"
OTHER_ORDER_ID = "801000000000002AAA"
USER_ID = "005000000000009AAA"
ORDERS = "/data/OrderChangeEvent"


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def publish_order_change(bus: EventBus, change_type: str = "CREATE", **overrides: Any) -> int:
    """Publish an Order change (or of `entity`); return its replay id on the object's channel."""
    arguments: dict[str, Any] = {
        "entity": "Order",
        "change_type": change_type,
        "record_ids": [ORDER_ID],
        "fields": {"Status": "Draft", "Description": None},
        "changed_fields": [],
        "commit_user": USER_ID,
        "change_origin": "com/salesforce/api/rest/60.0;client=tests",
        "transaction_key": "txn-1",
        "sequence_number": 1,
    }
    arguments.update(overrides)
    event = bus.publish_change(**arguments)
    return event.replay_id(event.channels[0])


def payload_of(event: StreamEvent) -> dict[str, Any]:
    payload: dict[str, Any] = event.data["payload"]
    return payload


def test_change_event_has_the_real_envelope_on_the_object_channel_and_change_events() -> None:
    clock = FakeClock(1_700_000_000.123)
    bus = EventBus(clock=clock, rng=random.Random(1))

    replay_id = publish_order_change(bus)

    [event] = bus.events()
    assert event.channels == (ORDERS, ALL_CHANGE_EVENTS)
    on_all = event.message(ALL_CHANGE_EVENTS)
    assert on_all["channel"] == ALL_CHANGE_EVENTS
    assert on_all["data"]["event"] == {"replayId": event.replay_id(ALL_CHANGE_EVENTS)}
    assert event.message(ORDERS)["data"]["event"] == {"replayId": replay_id}
    assert on_all["data"]["payload"] == event.message(ORDERS)["data"]["payload"]
    assert isinstance(event.data["schema"], str) and len(event.data["schema"]) == 22
    header = payload_of(event)["ChangeEventHeader"]
    # No nulledFields/diffFields: those are Pub/Sub API only, never on the CometD wire.
    assert header == {
        "entityName": "Order",
        "recordIds": [ORDER_ID],
        "changeType": "CREATE",
        "changedFields": [],
        "changeOrigin": "com/salesforce/api/rest/60.0;client=tests",
        "transactionKey": "txn-1",
        "sequenceNumber": 1,
        "commitTimestamp": 1_700_000_000_123,
        "commitNumber": header["commitNumber"],
        "commitUser": USER_ID,
    }
    assert isinstance(header["commitNumber"], int)


def test_bodies_follow_the_change_type() -> None:
    bus = EventBus(rng=random.Random(2))
    publish_order_change(bus, "CREATE")
    publish_order_change(
        bus,
        "UPDATE",
        fields={"Status": "Activated", "Description": None, "LastModifiedDate": "x"},
        changed_fields=["Status", "Description", "LastModifiedDate"],
    )
    publish_order_change(bus, "DELETE", changed_fields=["Status"])
    publish_order_change(bus, "UNDELETE", changed_fields=["Status"])

    create, update, delete, undelete = (payload_of(e) for e in bus.events())
    assert {k: v for k, v in create.items() if k != "ChangeEventHeader"} == {"Status": "Draft"}
    assert update["Status"] == "Activated" and update["Description"] is None
    assert update["ChangeEventHeader"]["changedFields"] == [
        "Status",
        "Description",
        "LastModifiedDate",
    ]
    assert "nulledFields" not in update["ChangeEventHeader"]
    assert list(delete) == ["ChangeEventHeader"]
    assert delete["ChangeEventHeader"]["changedFields"] == []
    assert undelete["Status"] == "Draft" and undelete["ChangeEventHeader"]["changedFields"] == []


def test_events_of_one_transaction_share_a_commit_number() -> None:
    bus = EventBus(rng=random.Random(3))
    publish_order_change(bus, transaction_key="a", sequence_number=1)
    publish_order_change(bus, transaction_key="a", sequence_number=2)
    publish_order_change(bus, transaction_key="b", sequence_number=1)

    numbers = [payload_of(e)["ChangeEventHeader"]["commitNumber"] for e in bus.events()]
    assert numbers[0] == numbers[1] < numbers[2]


def test_custom_objects_publish_on_their_double_underscore_channel() -> None:
    bus = EventBus(rng=random.Random(4))
    publish_order_change(bus, entity="Shipment__c")

    [event] = bus.events()
    assert event.channels == ("/data/Shipment__ChangeEvent", ALL_CHANGE_EVENTS)
    assert bus.knows_channel("/data/Shipment__ChangeEvent")


def test_replay_ids_increase_with_gaps_and_depend_only_on_the_seed() -> None:
    def ids(seed: int) -> list[int]:
        bus = EventBus(rng=random.Random(seed))
        return [publish_order_change(bus, transaction_key=str(i)) for i in range(30)]

    first = ids(7)
    assert first == sorted(set(first))
    assert any(b - a > 1 for a, b in itertools.pairwise(first))
    assert ids(7) == first
    assert ids(8) != first


def test_platform_event_carries_created_date_user_and_uuid() -> None:
    bus = EventBus(clock=FakeClock(1_700_000_000.5), rng=random.Random(5))

    published = bus.publish_platform_event(
        name="Account_Eligibility_Update__e",
        fields={"Account_Id__c": "001000000000001AAA"},
        created_by=USER_ID,
    )

    [event] = bus.events()
    channel = "/event/Account_Eligibility_Update__e"
    assert event == published and event.channels == (channel,)
    event_uuid = payload_of(event)["EventUuid"]
    assert payload_of(event) == {
        "Account_Id__c": "001000000000001AAA",
        "CreatedDate": "2023-11-14T22:13:20.500Z",
        "CreatedById": USER_ID,
        "EventUuid": event_uuid,
    }
    assert len(event_uuid) == 36
    assert event.message(channel)["data"]["event"] == {
        "EventUuid": event_uuid,
        "replayId": bus.latest_replay_id(channel),
    }


def test_gap_events_carry_only_the_header_and_overflow_no_record_ids() -> None:
    bus = EventBus(rng=random.Random(6))
    bus.inject_gap(entity="Order", change_type="GAP_UPDATE", record_ids=[ORDER_ID])
    bus.inject_overflow(entity="OrderItem")

    gap, overflow = (payload_of(e) for e in bus.events())
    assert list(gap) == ["ChangeEventHeader"]
    assert gap["ChangeEventHeader"]["changeType"] == "GAP_UPDATE"
    assert gap["ChangeEventHeader"]["recordIds"] == [ORDER_ID]
    assert list(overflow) == ["ChangeEventHeader"]
    assert overflow["ChangeEventHeader"]["changeType"] == "GAP_OVERFLOW"
    assert overflow["ChangeEventHeader"]["recordIds"] == []
    assert overflow["ChangeEventHeader"]["entityName"] == "OrderItem"


@pytest.mark.parametrize("change_type", ["UPDATE", "GAP_OVERFLOW", "gap_update"])
def test_gap_injection_refuses_a_non_gap_change_type(change_type: str) -> None:
    with pytest.raises(ValueError, match="changeType"):
        EventBus().inject_gap(entity="Order", change_type=change_type, record_ids=[ORDER_ID])


def test_events_older_than_retention_are_forgotten_and_resuming_before_them_is_refused() -> None:
    clock = FakeClock()
    bus = EventBus(retention_seconds=3600, clock=clock, rng=random.Random(9))
    start = bus.latest_replay_id(ORDERS)
    old = publish_order_change(bus, transaction_key="old")
    clock.now += 1800
    recent = publish_order_change(bus, transaction_key="recent")
    assert bus.is_valid_resume_point(ORDERS, start)

    clock.now += 1801

    assert [e.replay_id(ORDERS) for e in bus.events()] == [recent]
    assert not bus.is_valid_resume_point(ORDERS, start)
    assert bus.is_valid_resume_point(ORDERS, old)
    assert bus.is_valid_resume_point(ORDERS, recent)
    assert not bus.is_valid_resume_point(ORDERS, recent + 1)


def test_the_log_keeps_at_most_max_events() -> None:
    bus = EventBus(max_events=3, rng=random.Random(10))
    ids = [publish_order_change(bus, transaction_key=str(i)) for i in range(5)]

    assert [e.replay_id(ORDERS) for e in bus.events()] == ids[2:]
    assert not bus.is_valid_resume_point(ORDERS, ids[0])
    assert bus.is_valid_resume_point(ORDERS, ids[1])


def test_snapshot_returns_events_of_one_channel_after_a_replay_id() -> None:
    bus = EventBus(rng=random.Random(11))
    publish_order_change(bus, transaction_key="1")
    bus.publish_platform_event(name="Account_Eligibility_Update__e", fields={}, created_by=USER_ID)
    publish_order_change(bus, entity="OrderItem", transaction_key="3")
    first, _, third = bus.events()

    everything, latest = bus.snapshot(ALL_CHANGE_EVENTS, None)
    after_first, _ = bus.snapshot(ALL_CHANGE_EVENTS, first.replay_id(ALL_CHANGE_EVENTS))
    orders, latest_order = bus.snapshot(ORDERS, None)

    assert everything == [first, third] and after_first == [third] and orders == [first]
    assert latest == third.replay_id(ALL_CHANGE_EVENTS)
    assert latest_order == first.replay_id(ORDERS)


def test_listeners_hear_each_event_in_order() -> None:
    bus = EventBus(rng=random.Random(12))
    heard: list[int] = []
    bus.add_listener(lambda event: heard.append(event.replay_id(ORDERS)))

    ids = [publish_order_change(bus, transaction_key=str(i)) for i in range(3)]

    assert heard == ids


def test_state_survives_a_round_trip_through_json_and_numbering_goes_on() -> None:
    clock = FakeClock()
    bus = EventBus(clock=clock, rng=random.Random(13))
    ids = [publish_order_change(bus, transaction_key=str(i)) for i in range(3)]
    state = json.loads(json.dumps(bus.to_state()))

    restored = EventBus(clock=clock, rng=random.Random(99))
    restored.load_state(state)
    later = publish_order_change(restored, transaction_key="later")

    assert [e.replay_id(ORDERS) for e in restored.events()][:3] == ids
    assert restored.events()[0] == bus.events()[0]
    assert later > ids[-1]
    assert restored.is_valid_resume_point(ORDERS, ids[0])


def test_reset_forgets_events_and_refuses_old_resume_points() -> None:
    bus = EventBus(rng=random.Random(14))
    ids = [publish_order_change(bus, transaction_key=str(i)) for i in range(2)]

    bus.reset()

    assert bus.events() == []
    assert not bus.is_valid_resume_point(ORDERS, ids[0])
    assert publish_order_change(bus, transaction_key="after") > ids[-1]


def test_reset_with_a_seed_restarts_numbering_deterministically() -> None:
    bus = EventBus(rng=random.Random(15))
    publish_order_change(bus)
    bus.reset(seed=42)
    first = publish_order_change(bus)
    bus.reset(seed=42)

    assert publish_order_change(bus) == first


def test_each_channel_numbers_its_own_events() -> None:
    bus = EventBus(rng=random.Random(16))
    order = bus.publish_change(
        entity="Order",
        change_type="DELETE",
        record_ids=[ORDER_ID],
        fields={},
        changed_fields=[],
        commit_user=USER_ID,
        change_origin="",
        transaction_key="t",
        sequence_number=1,
    )
    products = [
        bus.publish_change(
            entity="Product2",
            change_type="DELETE",
            record_ids=["01t000000000001AAA"],
            fields={},
            changed_fields=[],
            commit_user=USER_ID,
            change_origin="",
            transaction_key=f"p{i}",
            sequence_number=1,
        )
        for i in range(3)
    ]

    assert order.replay_id(ORDERS) != order.replay_id(ALL_CHANGE_EVENTS)
    assert bus.latest_replay_id(ORDERS) == order.replay_id(ORDERS)
    assert bus.latest_replay_id(ALL_CHANGE_EVENTS) == products[-1].replay_id(ALL_CHANGE_EVENTS)
    # A resume point is checked against its own channel's numbering.
    assert not bus.is_valid_resume_point(ORDERS, bus.latest_replay_id(ORDERS) + 1)
    assert bus.is_valid_resume_point(
        "/data/Product2ChangeEvent", products[0].replay_id("/data/Product2ChangeEvent")
    )


def test_a_create_drops_empty_components_of_a_nested_compound_field() -> None:
    bus = EventBus(rng=random.Random(17))
    publish_order_change(
        bus,
        fields={
            "Status": "Draft",
            "BillingAddress": {"Street": "1-2-3", "City": None},
            "ShippingAddress": {"Street": None},
        },
    )
    publish_order_change(
        bus,
        "UPDATE",
        fields={"BillingAddress": {"City": None}},
        changed_fields=["BillingAddress.City"],
    )

    create, update = (payload_of(e) for e in bus.events())
    assert create["BillingAddress"] == {"Street": "1-2-3"} and "ShippingAddress" not in create
    assert update["BillingAddress"] == {"City": None}


def test_a_state_file_from_before_per_channel_replay_ids_still_loads() -> None:
    old_state = {
        "lastReplayId": 5_000_010,
        "floor": 5_000_000,
        "commitNumber": 42,
        "events": [
            {
                "replayId": 5_000_010,
                "channels": [ORDERS, ALL_CHANGE_EVENTS],
                "data": {"schema": "s", "payload": {}, "event": {"replayId": 5_000_010}},
                "publishedAt": 1_700_000_000.0,
            }
        ],
    }
    bus = EventBus(clock=FakeClock(), rng=random.Random(18))

    bus.load_state(old_state)

    [event] = bus.events()
    assert event.message(ORDERS)["data"]["event"] == {"replayId": 5_000_010}
    assert bus.is_valid_resume_point(ALL_CHANGE_EVENTS, 5_000_000)
    assert publish_order_change(bus, transaction_key="new") > 5_000_010


# ---- one transaction's change events (cdc) ----------------------------------------------------

STAMP = "2025-01-15T10:00:00.000+0000"


def order_record(record_id: str, **values: Any) -> Record:
    return {
        "Id": record_id,
        "IsDeleted": False,
        "SystemModstamp": STAMP,
        "LastModifiedDate": STAMP,
        "Status": "Draft",
        "BillingStreet": None,
        "BillingCity": None,
        **values,
    }


def test_a_record_updated_then_deleted_in_one_transaction_is_one_delete() -> None:
    records = {ORDER_ID: order_record(ORDER_ID, IsDeleted=True)}
    changes = [
        Change("Order", "UPDATE", ORDER_ID, ["Status", "LastModifiedDate"]),
        Change("Order", "DELETE", ORDER_ID, []),
    ]

    [event] = transaction_events(changes, records.get)

    assert (event.change_type, event.record_ids, event.fields) == ("DELETE", [ORDER_ID], {})


def test_a_record_created_and_deleted_in_one_transaction_leaves_no_event() -> None:
    records = {ORDER_ID: order_record(ORDER_ID, IsDeleted=True)}
    changes = [
        Change("Order", "CREATE", ORDER_ID, []),
        Change("Order", "DELETE", ORDER_ID, []),
    ]

    assert transaction_events(changes, records.get) == []


def test_merged_updates_list_the_caller_s_fields_first_and_the_stamps_last() -> None:
    records = {
        ORDER_ID: order_record(ORDER_ID, Status="Activated", BillingCity="Minato-ku"),
        OTHER_ORDER_ID: order_record(OTHER_ORDER_ID, Status="Activated", BillingCity="Minato-ku"),
    }
    changes = [
        Change("Order", "UPDATE", ORDER_ID, ["BillingCity", "LastModifiedDate"]),
        Change("Order", "UPDATE", OTHER_ORDER_ID, ["BillingCity", "LastModifiedDate"]),
        Change("Order", "UPDATE", ORDER_ID, ["Status", "LastModifiedDate"]),
        Change("Order", "UPDATE", OTHER_ORDER_ID, ["Status", "LastModifiedDate"]),
    ]

    [event] = transaction_events(changes, records.get)

    assert event.record_ids == [ORDER_ID, OTHER_ORDER_ID]
    assert event.changed_fields == ["BillingAddress.City", "Status", "LastModifiedDate"]
    assert event.fields == {
        "BillingAddress": {"City": "Minato-ku"},
        "Status": "Activated",
        "LastModifiedDate": "2025-01-15T10:00:00.000Z",
    }


def test_objects_without_change_data_capture_publish_nothing() -> None:
    account_id = "001000000000001AAA"
    changes = [Change("Account", "UPDATE", account_id, ["Name", "LastModifiedDate"])]

    assert transaction_events(changes, {account_id: {"Id": account_id}}.get) == []
