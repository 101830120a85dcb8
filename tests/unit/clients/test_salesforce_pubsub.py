"""Pub/Sub API events decoded into the Streaming API's shape: Avro bodies, bitmaps, datetimes."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest

from clients.salesforce_pubsub import decode_event, field_names
from wire.pubsub import pubsub_api_pb2 as pb

ADDRESS = {
    "type": "record",
    "name": "Address",
    "fields": [
        {"name": "Street", "type": ["null", "string"], "default": None},
        {"name": "City", "type": ["null", "string"], "default": None},
        {"name": "PostalCode", "type": ["null", "string"], "default": None},
    ],
}
HEADER = {
    "type": "record",
    "name": "ChangeEventHeader",
    "fields": [
        {"name": "entityName", "type": "string"},
        {"name": "recordIds", "type": {"type": "array", "items": "string"}},
        {
            "name": "changeType",
            "type": {"type": "enum", "name": "ChangeType", "symbols": ["CREATE", "UPDATE"]},
        },
        {"name": "changeOrigin", "type": "string"},
        {"name": "transactionKey", "type": "string"},
        {"name": "sequenceNumber", "type": "int"},
        {"name": "commitTimestamp", "type": "long"},
        {"name": "commitNumber", "type": "long"},
        {"name": "commitUser", "type": "string"},
        {"name": "nulledFields", "type": {"type": "array", "items": "string"}},
        {"name": "diffFields", "type": {"type": "array", "items": "string"}},
        {"name": "changedFields", "type": {"type": "array", "items": "string"}},
    ],
}
# Salesforce's layout: the header first (bit 0), then the object's fields, all nullable.
SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "OrderChangeEvent",
    "namespace": "com.sforce.eventbus",
    "fields": [
        {"name": "ChangeEventHeader", "type": HEADER},
        {"name": "Status", "type": ["null", "string"], "default": None},  # bit 1
        {"name": "Description", "type": ["null", "string"], "default": None},  # bit 2
        {"name": "BillingAddress", "type": ["null", ADDRESS], "default": None},  # bit 3
        {
            "name": "ActivatedDate",  # bit 4
            "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}],
            "default": None,
        },
        {"name": "TotalAmount", "type": ["null", "double"], "default": None},  # bit 5
    ],
}
FIELDS = tuple(SCHEMA["fields"])


@pytest.mark.parametrize(
    ("bitmaps", "names"),
    [
        ([], []),
        (["0x2"], ["Status"]),
        (["0x12"], ["Status", "ActivatedDate"]),
        # Bit 3 marks the compound field; its components come as `<index>-<bits>` and name it.
        (["0x8", "3-0x3"], ["BillingAddress.Street", "BillingAddress.City"]),
        (["0x8"], ["BillingAddress"]),
        (["3-0x4"], ["BillingAddress.PostalCode"]),
        # Bits past the schema's end (a newer schema than ours) are not invented into names.
        (["0x102"], ["Status"]),
    ],
)
def test_bitmaps_name_the_schemas_fields(bitmaps: list[str], names: list[str]) -> None:
    assert field_names(FIELDS, bitmaps) == names


def _event(record: dict[str, Any]) -> pb.ProducerEvent:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(SCHEMA), record)
    return pb.ProducerEvent(id="e1", schema_id="s1", payload=out.getvalue())


def _header(**changes: Any) -> dict[str, Any]:
    return {
        "entityName": "Order",
        "recordIds": ["801000000000001AAA"],
        "changeType": "UPDATE",
        "changeOrigin": "com/salesforce/api/rest/62.0;client=portal",
        "transactionKey": "tx-1",
        "sequenceNumber": 1,
        "commitTimestamp": 1_796_000_000_000,
        "commitNumber": 42,
        "commitUser": "005000000000001AAA",
        "nulledFields": [],
        "diffFields": [],
        "changedFields": [],
    } | changes


def test_an_update_reads_as_cometd_shows_it() -> None:
    record = {
        "ChangeEventHeader": _header(changedFields=["0x1A", "3-0x2"], nulledFields=["0x4"]),
        "Status": "Activated",
        "Description": None,
        "BillingAddress": {"Street": None, "City": "Shibuya-ku", "PostalCode": None},
        "ActivatedDate": datetime(2026, 12, 7, 1, 2, 3, 456_000, tzinfo=UTC),
        "TotalAmount": None,
    }
    body = decode_event(fastavro.parse_schema(SCHEMA), FIELDS, _event(record))
    header = body.pop("ChangeEventHeader")
    assert header["changedFields"] == ["Status", "ActivatedDate", "BillingAddress.City"]
    assert header["nulledFields"] == ["Description"]
    assert header["commitTimestamp"] == 1_796_000_000_000
    assert header["changeType"] == "UPDATE"
    # Only what the event carries: unchanged fields (null in Avro) are absent, a nulled one is
    # present as null, a compound field keeps only its components that have a value.
    assert body == {
        "Status": "Activated",
        "Description": None,
        "BillingAddress": {"City": "Shibuya-ku"},
        "ActivatedDate": "2026-12-07T01:02:03.456Z",
    }


def test_a_platform_event_keeps_every_field() -> None:
    schema: dict[str, Any] = {
        "type": "record",
        "name": "Account_Eligibility_Update__e",
        "fields": [
            {"name": "CreatedDate", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "CreatedById", "type": "string"},
            {"name": "Account_Id__c", "type": ["null", "string"], "default": None},
        ],
    }
    out = io.BytesIO()
    parsed = fastavro.parse_schema(schema)
    created = datetime(2026, 12, 7, tzinfo=UTC)
    fastavro.schemaless_writer(
        out,
        parsed,
        {"CreatedDate": created, "CreatedById": "005000000000001AAA", "Account_Id__c": "001x"},
    )
    event = pb.ProducerEvent(id="e", schema_id="s", payload=out.getvalue())
    assert decode_event(parsed, tuple(schema["fields"]), event) == {
        "CreatedDate": "2026-12-07T00:00:00.000Z",
        "CreatedById": "005000000000001AAA",
        "Account_Id__c": "001x",
    }
