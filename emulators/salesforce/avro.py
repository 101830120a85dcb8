"""The Pub/Sub API's Avro side: each topic's schema, made from the org's schema, and each bus
event in that schema's binary form.

A change event's schema (`/data/<Entity>ChangeEvent`) is a record whose first field is the
`ChangeEventHeader`, then every field of the object that a change event can carry, each a union
`["null", T]` defaulting to null; a compound address (`BillingAddress`) is one nullable nested
record of its components, at the place of its first component, and its flat fields
(`BillingStreet`, …) are not fields of their own. `Id`, `IsDeleted` and `SystemModstamp` are left
out, as change event bodies never carry them (the record ids are in the header). Events on
`/data/ChangeEvents` use the schema of their own object; that topic has none of its own.
A platform event's schema (`/event/<Name>__e`) is `CreatedDate`, `CreatedById`, then its custom
fields (the event's `EventUuid` is the Pub/Sub event's id, not a field).

Types: text, ids, references and picklists are strings; booleans booleans; double, currency and
percent doubles; int ints; datetime a `timestamp-millis` long; date a `date` int.

A schema's id is its fingerprint: the first 22 characters of the base64url of the sha256 of its
JSON (keys sorted, no spaces), so it changes exactly when the schema does.

The header's `changedFields`, `nulledFields` and `diffFields` are bitmaps, as on the real wire:
a list whose first entry (`"0x1F0"`) sets bit i (least significant first) for top-level field i
of the schema (0 is the header, so an object's fields start at bit 1), followed by one entry
`"<i>-0x<hex>"` per compound field at top-level index i with a changed component, bit j for its
j-th component. A changed component also sets its compound's own top-level bit, as Salesforce
does; `field_names` names a compound by its components then (`BillingAddress.City`, not
`BillingAddress` as well), which is how the CometD header names it.
`nulledFields` lists what an UPDATE set to null; `diffFields` is always empty (no large text
field is sent as a diff here). `field_names` turns a bitmap back into names (for tests: the
engine decodes with its own code).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache, cached_property
from typing import Any

import fastavro

from emulators.salesforce import schema
from emulators.salesforce.events import (
    ALL_CHANGE_EVENTS,
    StreamEvent,
    change_event_channel,
    platform_event_channel,
)
from emulators.salesforce.schema import FieldType, SObject

Schema = dict[str, Any]

CHANGE_TYPES = (
    "CREATE",
    "UPDATE",
    "DELETE",
    "UNDELETE",
    "GAP_CREATE",
    "GAP_UPDATE",
    "GAP_DELETE",
    "GAP_UNDELETE",
    "GAP_OVERFLOW",
)
# Never in a change event's body (the record ids are in the header).
_NOT_IN_CHANGE_EVENTS = frozenset({"Id", "IsDeleted", "SystemModstamp"})
# A platform event's fields that the platform sets, and the one that is the event's own id.
_PLATFORM_EVENT_SYSTEM = frozenset({"ReplayId", "CreatedDate", "CreatedById", "EventUuid"})
_NAMESPACE = "com.sforce.eventbus"
_TIMESTAMP = {"type": "long", "logicalType": "timestamp-millis"}
_DATE = {"type": "int", "logicalType": "date"}
_EPOCH_DATE = date(1970, 1, 1)
_EVENT_ID_NAMESPACE = uuid.UUID("6f6e1d2c-52a4-4d43-9c55-0b6f1e7c3a10")

# By the type's name in a describe, so types this org does not use yet map too.
_AVRO_TYPES: dict[str, Any] = {
    "id": "string",
    "reference": "string",
    "picklist": "string",
    "multipicklist": "string",
    "string": "string",
    "textarea": "string",
    "email": "string",
    "phone": "string",
    "url": "string",
    "boolean": "boolean",
    "int": "int",
    "double": "double",
    "currency": "double",
    "percent": "double",
    "datetime": _TIMESTAMP,
    "date": _DATE,
}


def _header_schema() -> Schema:
    def strings() -> dict[str, Any]:
        return {"type": "array", "items": "string"}

    return {
        "type": "record",
        "name": "ChangeEventHeader",
        "namespace": "com.salesforce.eventbus",
        "fields": [
            {"name": "entityName", "type": "string"},
            {"name": "recordIds", "type": strings()},
            {
                "name": "changeType",
                "type": {"type": "enum", "name": "ChangeType", "symbols": list(CHANGE_TYPES)},
            },
            {"name": "changeOrigin", "type": "string"},
            {"name": "transactionKey", "type": "string"},
            {"name": "sequenceNumber", "type": "int"},
            {"name": "commitTimestamp", "type": "long"},
            {"name": "commitNumber", "type": "long"},
            {"name": "commitUser", "type": "string"},
            {"name": "nulledFields", "type": strings()},
            {"name": "diffFields", "type": strings()},
            {"name": "changedFields", "type": strings()},
        ],
    }


@dataclass(frozen=True)
class TopicSchema:
    """One schema: its JSON, its id, and what encoding needs to know of its fields."""

    schema: Schema
    sobject: SObject
    change_event: bool

    @cached_property
    def json(self) -> str:
        return _canonical(self.schema)

    @cached_property
    def schema_id(self) -> str:
        return fingerprint(self.schema)

    @cached_property
    def _parsed(self) -> Any:
        return fastavro.parse_schema(json.loads(self.json))

    @property
    def field_names(self) -> list[str]:
        return [f["name"] for f in self.schema["fields"]]

    def encode(self, record: Mapping[str, Any]) -> bytes:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, self._parsed, dict(record))
        return out.getvalue()

    def decode(self, payload: bytes) -> dict[str, Any]:
        """The record in `payload` (logical types as datetime and date); raises on junk."""
        record = fastavro.schemaless_reader(io.BytesIO(payload), self._parsed, None)
        if not isinstance(record, dict):
            raise ValueError("the payload is not a record")
        return record


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def fingerprint(avro_schema: Schema) -> str:
    """A schema's id: base64url of the sha256 of its canonical JSON, 22 characters."""
    return _fingerprint(_canonical(avro_schema))


@cache
def _fingerprint(schema_json: str) -> str:
    digest = hashlib.sha256(schema_json.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:22]


def _avro_type(spec: schema.Field) -> Any:
    return _AVRO_TYPES[str(spec.type)]


def _change_event_schema(sobject: SObject) -> Schema:
    fields: list[dict[str, Any]] = [{"name": "ChangeEventHeader", "type": _header_schema()}]
    seen_compounds: set[str] = set()
    defined_records: set[str] = set()
    for spec in sobject.fields:
        if spec.name in _NOT_IN_CHANGE_EVENTS:
            continue
        member = sobject.compound_of(spec.name)
        if member is None:
            fields.append({"name": spec.name, "type": ["null", _avro_type(spec)], "default": None})
            continue
        compound = member[0]
        if compound.name in seen_compounds:
            continue
        seen_compounds.add(compound.name)
        # Every address compound is the same record type: defined once, then named.
        record_name = "Address"
        if record_name in defined_records:
            nested: Any = record_name
        else:
            defined_records.add(record_name)
            nested = {
                "type": "record",
                "name": record_name,
                "fields": [
                    {
                        "name": part,
                        "type": ["null", _avro_type(_field(sobject, name))],
                        "default": None,
                    }
                    for part, name in compound.parts
                ],
            }
        fields.append({"name": compound.name, "type": ["null", nested], "default": None})
    name = change_event_channel(sobject.name).removeprefix("/data/")
    return {"type": "record", "name": name, "namespace": _NAMESPACE, "fields": fields}


def _platform_event_schema(sobject: SObject) -> Schema:
    fields: list[dict[str, Any]] = [
        {"name": "CreatedDate", "type": _TIMESTAMP},
        {"name": "CreatedById", "type": "string"},
    ]
    for spec in sobject.fields:
        if spec.name in _PLATFORM_EVENT_SYSTEM:
            continue
        fields.append({"name": spec.name, "type": ["null", _avro_type(spec)], "default": None})
    return {"type": "record", "name": sobject.name, "namespace": _NAMESPACE, "fields": fields}


def _field(sobject: SObject, name: str) -> schema.Field:
    spec = sobject.field(name)
    if spec is None:
        raise AssertionError(f"{sobject.name} has no field {name}")
    return spec


@cache
def _schemas() -> tuple[dict[str, TopicSchema], dict[str, TopicSchema]]:
    """Every schema of the org, by topic and by id."""
    by_topic: dict[str, TopicSchema] = {}
    for sobject in schema.OBJECTS.values():
        if sobject.change_events:
            built = _change_event_schema(sobject)
            topic = change_event_channel(sobject.name)
            by_topic[topic] = TopicSchema(built, sobject, change_event=True)
        if sobject.platform_event:
            built = _platform_event_schema(sobject)
            topic = platform_event_channel(sobject.name)
            by_topic[topic] = TopicSchema(built, sobject, change_event=False)
    by_id = {s.schema_id: s for s in by_topic.values()}
    return by_topic, by_id


def topic_schema(topic: str) -> TopicSchema | None:
    """The schema of `topic` (None for `/data/ChangeEvents`, whose events bring their own, and
    for a topic the org does not have)."""
    return _schemas()[0].get(topic)


def schema_by_id(schema_id: str) -> TopicSchema | None:
    return _schemas()[1].get(schema_id)


def event_schema(event: StreamEvent) -> TopicSchema:
    """The schema an event is encoded in, whichever channel it is read on."""
    for channel in event.channels:
        if channel != ALL_CHANGE_EVENTS and (found := topic_schema(channel)) is not None:
            return found
    raise ValueError(f"no schema for an event on {', '.join(event.channels)}")


def event_id(event: StreamEvent) -> str:
    """The event's id: a platform event's EventUuid, else a UUID stable for the event."""
    uuid_text = event.data.get("payload", {}).get("EventUuid")
    if isinstance(uuid_text, str):
        return uuid_text
    key = _canonical(dict(sorted(event.replay_ids.items())))
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, key))


# ---- records --------------------------------------------------------------------------------


def event_record(topic: TopicSchema, event: StreamEvent) -> dict[str, Any]:
    """The Avro record of a bus event: every field present, null unless the event carries it."""
    payload: dict[str, Any] = event.data["payload"]
    if topic.change_event:
        return _change_record(topic, payload)
    return _platform_record(topic, payload)


def encode_event(topic: TopicSchema, event: StreamEvent) -> bytes:
    return topic.encode(event_record(topic, event))


def _change_record(topic: TopicSchema, payload: Mapping[str, Any]) -> dict[str, Any]:
    cometd_header: dict[str, Any] = payload["ChangeEventHeader"]
    body = {k: v for k, v in payload.items() if k != "ChangeEventHeader"}
    changed = list(cometd_header.get("changedFields", []))
    nulled = _nulled(body) if cometd_header["changeType"] == "UPDATE" else []
    header = {
        "entityName": cometd_header["entityName"],
        "recordIds": list(cometd_header["recordIds"]),
        "changeType": cometd_header["changeType"],
        "changeOrigin": cometd_header.get("changeOrigin", ""),
        "transactionKey": cometd_header.get("transactionKey", ""),
        "sequenceNumber": int(cometd_header.get("sequenceNumber", 1)),
        "commitTimestamp": int(cometd_header["commitTimestamp"]),
        "commitNumber": int(cometd_header["commitNumber"]),
        "commitUser": cometd_header.get("commitUser", ""),
        "nulledFields": bitmap(topic.schema, nulled),
        "diffFields": [],
        "changedFields": bitmap(topic.schema, changed),
    }
    record: dict[str, Any] = {"ChangeEventHeader": header}
    for avro_field in topic.schema["fields"][1:]:
        name = avro_field["name"]
        compound = topic.sobject.compound(name)
        value = body.get(name)
        if compound is not None:
            record[name] = (
                None
                if not isinstance(value, dict)
                else {
                    part: _value(_field(topic.sobject, flat), value.get(part))
                    for part, flat in compound.parts
                }
            )
        else:
            spec = topic.sobject.field(name)
            record[name] = None if spec is None else _value(spec, value)
    return record


def _platform_record(topic: TopicSchema, payload: Mapping[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {
        "CreatedDate": _millis(payload.get("CreatedDate")) or 0,
        "CreatedById": str(payload.get("CreatedById", "")),
    }
    for avro_field in topic.schema["fields"][2:]:
        name = avro_field["name"]
        record[name] = _value(_field(topic.sobject, name), payload.get(name))
    return record


def _nulled(body: Mapping[str, Any]) -> list[str]:
    names: list[str] = []
    for name, value in body.items():
        if isinstance(value, dict):
            names.extend(f"{name}.{part}" for part, v in value.items() if v is None)
        elif value is None:
            names.append(name)
    return names


def _value(spec: schema.Field, value: Any) -> Any:
    """A CometD body value in the Avro form of the field's type."""
    if value is None:
        return None
    kind = spec.type
    if kind is FieldType.DATETIME:
        return _millis(value)
    if kind is FieldType.DATE:
        parsed = schema.parse_date(str(value))
        return None if parsed is None else (parsed - _EPOCH_DATE).days
    if kind is FieldType.BOOLEAN:
        return bool(value)
    if kind in schema.NUMBER_TYPES:
        return float(value)
    return str(value)


def _millis(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    moment = schema.parse_datetime(value)
    if moment is None:
        return None
    return int(moment.timestamp() * 1000)


def record_fields(topic: TopicSchema, record: Mapping[str, Any]) -> dict[str, Any]:
    """A decoded platform event's custom fields as the REST API takes them (nulls left out)."""
    fields: dict[str, Any] = {}
    for avro_field in topic.schema["fields"][2:]:
        value = record.get(avro_field["name"])
        if isinstance(value, datetime):
            value = schema.format_datetime(value.astimezone(UTC))
        elif isinstance(value, date):
            value = value.isoformat()
        if value is not None:
            fields[avro_field["name"]] = value
    return fields


# ---- bitmaps --------------------------------------------------------------------------------


def bitmap(avro_schema: Schema, names: Sequence[str]) -> list[str]:
    """The bitmap list naming `names` (`Status`, `BillingAddress.City`) in `avro_schema`.

    Empty for no names; otherwise the top-level entry first (a named component sets its
    compound's bit there too), then one entry per compound field with named components, by
    position.
    """
    if not names:
        return []
    fields = avro_schema["fields"]
    index = {f["name"]: i for i, f in enumerate(fields)}
    top = 0
    nested: dict[int, int] = {}
    for name in names:
        parent, _, part = name.partition(".")
        position = index.get(parent)
        if position is None:
            raise ValueError(f"{avro_schema['name']} has no field {parent!r}")
        if not part:
            top |= 1 << position
            continue
        parts = [c["name"] for c in _record_fields(avro_schema, position)]
        if part not in parts:
            raise ValueError(f"{parent} has no component {part!r}")
        nested[position] = nested.get(position, 0) | 1 << parts.index(part)
        top |= 1 << position
    return [f"0x{top:X}", *(f"{position}-0x{bits:X}" for position, bits in sorted(nested.items()))]


def field_names(avro_schema: Schema, bitmaps: Sequence[str]) -> list[str]:
    """The field names a bitmap list marks, in schema order, a compound with marked components
    named by them alone (`BillingAddress.City`)."""
    names = _marked(avro_schema, bitmaps)
    compounds = {name.partition(".")[0] for name in names if "." in name}
    return [name for name in names if name not in compounds]


def _marked(avro_schema: Schema, bitmaps: Sequence[str]) -> list[str]:
    fields = avro_schema["fields"]
    names: list[str] = []
    for entry in bitmaps:
        position_text, dash, hex_bits = entry.rpartition("-")
        bits = int(hex_bits, 16)
        if not dash:
            names.extend(f["name"] for i, f in enumerate(fields) if bits >> i & 1)
            continue
        parent = fields[int(position_text)]
        components = _record_fields(avro_schema, int(position_text))
        names.extend(
            f"{parent['name']}.{c['name']}" for j, c in enumerate(components) if bits >> j & 1
        )
    return names


def _record_fields(avro_schema: Schema, position: int) -> list[dict[str, Any]]:
    """The components of the compound field at `position`: the fields of its nullable record
    type, defined there or earlier in the schema and then referred to by name."""
    defined: dict[str, list[dict[str, Any]]] = {}
    for index, avro_field in enumerate(avro_schema["fields"]):
        candidates = avro_field["type"]
        for candidate in candidates if isinstance(candidates, list) else [candidates]:
            if isinstance(candidate, dict) and candidate.get("type") == "record":
                defined[candidate["name"]] = candidate["fields"]
                if index == position:
                    return defined[candidate["name"]]
            elif index == position and isinstance(candidate, str) and candidate in defined:
                return defined[candidate]
    raise ValueError(f"field {position} of {avro_schema['name']} is not a compound field")
