"""The Salesforce emulator's Avro side of the Pub/Sub API: schemas made from the org's schema,
their ids, bus events encoded in them, and the header's field bitmaps."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime
from typing import Any

import pytest

from emulators.salesforce import avro
from emulators.salesforce.events import ALL_CHANGE_EVENTS, EventBus, StreamEvent
from emulators.salesforce.pubsub import decode_replay_id, encode_replay_id

ORDERS = "/data/OrderChangeEvent"
ELIGIBILITY = "/event/Account_Eligibility_Update__e"
ORDER_ID = "801000000000001AAA"
USER_ID = "005000000000009AAA"


def order_schema() -> avro.TopicSchema:
    found = avro.topic_schema(ORDERS)
    assert found is not None
    return found


def field_type(topic: avro.TopicSchema, name: str) -> Any:
    return next(f["type"] for f in topic.schema["fields"] if f["name"] == name)


def publish_update(bus: EventBus, fields: dict[str, Any], changed: list[str]) -> StreamEvent:
    return bus.publish_change(
        entity="Order",
        change_type="UPDATE",
        record_ids=[ORDER_ID],
        fields=fields,
        changed_fields=changed,
        commit_user=USER_ID,
        change_origin="com/salesforce/api/rest/60.0",
        transaction_key="txn-1",
        sequence_number=1,
    )


def test_a_change_event_schema_starts_with_the_header_then_nullable_fields() -> None:
    topic = order_schema()
    header = topic.schema["fields"][0]

    assert topic.schema["name"] == "OrderChangeEvent"
    assert header["name"] == "ChangeEventHeader"
    assert [f["name"] for f in header["type"]["fields"]] == [
        "entityName",
        "recordIds",
        "changeType",
        "changeOrigin",
        "transactionKey",
        "sequenceNumber",
        "commitTimestamp",
        "commitNumber",
        "commitUser",
        "nulledFields",
        "diffFields",
        "changedFields",
    ]
    change_type = next(f for f in header["type"]["fields"] if f["name"] == "changeType")
    assert change_type["type"]["symbols"] == list(avro.CHANGE_TYPES)
    for avro_field in topic.schema["fields"][1:]:
        assert avro_field["type"][0] == "null" and avro_field["default"] is None
    assert field_type(topic, "Status") == ["null", "string"]
    assert field_type(topic, "AccountId") == ["null", "string"]
    assert field_type(topic, "TotalAmount") == ["null", "double"]
    assert field_type(topic, "EffectiveDate") == ["null", {"type": "int", "logicalType": "date"}]
    assert field_type(topic, "ActivatedDate") == [
        "null",
        {"type": "long", "logicalType": "timestamp-millis"},
    ]


def test_a_compound_address_is_one_nested_record_in_place_of_its_flat_fields() -> None:
    topic = order_schema()
    names = topic.field_names

    assert "BillingAddress" in names
    assert not {"BillingStreet", "BillingCity", "Id", "IsDeleted", "SystemModstamp"} & set(names)
    nested = field_type(topic, "BillingAddress")[1]
    assert nested["type"] == "record"
    assert [f["name"] for f in nested["fields"]] == [
        "Street",
        "City",
        "State",
        "PostalCode",
        "Country",
    ]


def test_a_platform_event_schema_is_created_date_created_by_then_its_fields() -> None:
    topic = avro.topic_schema(ELIGIBILITY)
    assert topic is not None
    assert topic.field_names == ["CreatedDate", "CreatedById", "Account_Id__c"]
    assert field_type(topic, "CreatedDate") == {"type": "long", "logicalType": "timestamp-millis"}


def test_schema_ids_are_stable_fingerprints_looked_up_by_id() -> None:
    orders, eligibility = avro.topic_schema(ORDERS), avro.topic_schema(ELIGIBILITY)
    assert orders is not None and eligibility is not None

    assert len(orders.schema_id) == 22 and orders.schema_id != eligibility.schema_id
    assert orders.schema_id == avro.fingerprint(orders.schema)
    assert avro.schema_by_id(orders.schema_id) is orders
    assert avro.schema_by_id("nope") is None
    assert avro.topic_schema(ALL_CHANGE_EVENTS) is None


def test_bitmaps_mark_top_level_positions_and_compound_components() -> None:
    schema = order_schema().schema
    names = [f["name"] for f in schema["fields"]]
    status, address = names.index("Status"), names.index("BillingAddress")

    bitmap = avro.bitmap(schema, ["Status", "BillingAddress.City", "BillingAddress.Country"])

    # A changed component marks its compound's own bit too, as Salesforce does.
    assert bitmap == [f"0x{1 << status | 1 << address:X}", f"{address}-0x12"]
    assert avro.field_names(schema, bitmap) == [
        "Status",
        "BillingAddress.City",
        "BillingAddress.Country",
    ]
    assert avro.bitmap(schema, []) == []
    assert avro.bitmap(schema, ["BillingAddress.City"]) == [
        f"0x{1 << address:X}",
        f"{address}-0x2",
    ]
    assert avro.field_names(schema, [f"0x{1 << address:X}"]) == ["BillingAddress"]
    assert avro.field_names(schema, ["0x1F0"]) == names[4:9]
    with pytest.raises(ValueError):
        avro.bitmap(schema, ["NoSuchField"])


def test_an_update_encodes_every_field_with_its_bitmaps() -> None:
    bus = EventBus(rng=random.Random(1), clock=lambda: 1_700_000_000.5)
    event = publish_update(
        bus,
        {
            "Status": "Activated",
            "Description": None,
            "BillingAddress": {"City": "Meguro-ku", "Street": None},
            "ActivatedDate": "2025-01-15T10:00:00.000Z",
            "EffectiveDate": "2025-01-15",
            "TotalAmount": 42,
        },
        ["Status", "Description", "BillingAddress.City", "BillingAddress.Street", "ActivatedDate"],
    )
    topic = avro.event_schema(event)

    record = topic.decode(avro.encode_event(topic, event))

    header = record["ChangeEventHeader"]
    assert header["changeType"] == "UPDATE" and header["recordIds"] == [ORDER_ID]
    assert header["commitTimestamp"] == 1_700_000_000_500 and header["commitUser"] == USER_ID
    assert avro.field_names(topic.schema, header["changedFields"]) == [
        "Status",
        "ActivatedDate",
        "Description",
        "BillingAddress.Street",
        "BillingAddress.City",
    ]
    assert avro.field_names(topic.schema, header["nulledFields"]) == [
        "Description",
        "BillingAddress.Street",
    ]
    assert header["diffFields"] == []
    assert record["Status"] == "Activated" and record["Description"] is None
    assert record["BillingAddress"] == {
        "Street": None,
        "City": "Meguro-ku",
        "State": None,
        "PostalCode": None,
        "Country": None,
    }
    assert record["ActivatedDate"] == datetime(2025, 1, 15, 10, tzinfo=UTC)
    assert record["EffectiveDate"] == date(2025, 1, 15)
    assert record["TotalAmount"] == 42.0
    assert record["AccountId"] is None and record["Name"] is None


def test_an_event_on_all_change_events_uses_its_objects_schema_and_keeps_its_id() -> None:
    bus = EventBus(rng=random.Random(2))
    event = publish_update(bus, {"Status": "Draft"}, ["Status"])
    gap = bus.inject_gap(entity="Order", change_type="GAP_UPDATE", record_ids=[ORDER_ID])

    assert avro.event_schema(event) is order_schema()
    assert avro.event_id(event) == avro.event_id(event) != avro.event_id(gap)
    record = order_schema().decode(avro.encode_event(order_schema(), gap))
    assert record["ChangeEventHeader"]["changeType"] == "GAP_UPDATE"
    assert record["ChangeEventHeader"]["changedFields"] == []


def test_a_platform_event_encodes_its_created_date_and_fields() -> None:
    bus = EventBus(rng=random.Random(3), clock=lambda: 1_700_000_000.25)
    event = bus.publish_platform_event(
        name="Account_Eligibility_Update__e",
        fields={"Account_Id__c": "001000000000001AAA"},
        created_by=USER_ID,
    )
    topic = avro.event_schema(event)

    record = topic.decode(avro.encode_event(topic, event))

    assert record == {
        "CreatedDate": datetime.fromtimestamp(1_700_000_000.25, UTC),
        "CreatedById": USER_ID,
        "Account_Id__c": "001000000000001AAA",
    }
    assert avro.event_id(event) == event.data["payload"]["EventUuid"]
    assert avro.record_fields(topic, record) == {"Account_Id__c": "001000000000001AAA"}


def test_replay_ids_are_opaque_bytes_bound_to_their_channel() -> None:
    encoded = encode_replay_id(ORDERS, 1_234_567)

    assert len(encoded) == 12 and str(1_234_567).encode() not in encoded
    assert decode_replay_id(ORDERS, encoded) == 1_234_567
    assert decode_replay_id(ELIGIBILITY, encoded) is None
    assert decode_replay_id(ORDERS, encoded[:-1]) is None
    assert decode_replay_id(ORDERS, b"1234567") is None
