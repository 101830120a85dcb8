"""How one committed transaction's record operations become change events.

Salesforce's Change Data Capture documentation states the platform's rules, followed here:

- one event per record per transaction, of the record's *first* change type, carrying the values
  the transaction committed: a create followed by updates is one CREATE with the final values;
  several updates are one UPDATE listing every field any of them changed;
- records of one object that went through the same change (same change type, same body, same
  changed fields) share one event whose `recordIds` lists them all, in the order first touched;
  different changes are separate events;
- compound fields are nested (`"BillingAddress": {"Street": …}`) and `changedFields` names their
  components (`BillingAddress.Street`);
- date-times are in the `…000Z` form change events use.

Where that documentation is silent, these choices were made: a record updated and then deleted in
one transaction yields one DELETE (its committed state is deleted); one created and deleted in the
same transaction yields no event (nothing of it was ever committed); a field changed and changed
back within the transaction is still listed; `changedFields` keeps the order in which fields were
first changed, with LastModifiedDate and LastModifiedById last. Events are listed in the order of
their first record's first operation, which is the order of their sequence numbers. Nothing here
publishes: the REST layer hands the events to the bus.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from emulators.salesforce import schema
from emulators.salesforce.schema import FieldType, SObject
from emulators.salesforce.store import Change, Record

# Fields Salesforce maintains itself, never in a change event's body.
_AUDIT_FIELDS = frozenset({"Id", "IsDeleted", "SystemModstamp"})
# Listed after the fields a caller changed, as every update changes them.
_MODIFICATION_STAMPS = ("LastModifiedDate", "LastModifiedById")


@dataclass(frozen=True)
class ChangeEvent:
    """One change event of a transaction, before the bus numbers and envelopes it."""

    entity: str
    change_type: str
    record_ids: list[str]
    fields: dict[str, Any]
    changed_fields: list[str]


@dataclass
class _RecordHistory:
    sobject: SObject
    first_change_type: str
    record_id: str
    changed: list[str] = field(default_factory=list)
    deleted: bool = False


def transaction_events(
    changes: Iterable[Change], committed: Callable[[str], Record | None]
) -> list[ChangeEvent]:
    """The change events of one committed transaction's `changes` (in operation order).

    `committed(record_id)` reads a record as the transaction left it, deleted ones included.
    Objects without change data capture publish nothing.
    """
    histories: dict[str, _RecordHistory] = {}
    for change in changes:
        sobject = schema.get_object(change.entity)
        if sobject is None or not sobject.change_events:
            continue
        history = histories.get(change.record_id)
        if history is None:
            history = _RecordHistory(sobject, change.change_type, change.record_id)
            histories[change.record_id] = history
        history.deleted = history.deleted or change.change_type == "DELETE"
        history.changed.extend(n for n in change.changed_fields if n not in history.changed)

    events: dict[tuple[str, str, str, tuple[str, ...]], ChangeEvent] = {}
    for history in histories.values():
        built = _event(history, committed(history.record_id))
        if built is None:
            continue
        change_type, fields, changed = built
        entity = history.sobject.name
        key = (entity, change_type, json.dumps(fields, sort_keys=True), tuple(changed))
        if key in events:
            events[key].record_ids.append(history.record_id)
        else:
            events[key] = ChangeEvent(entity, change_type, [history.record_id], fields, changed)
    return list(events.values())


def _event(
    history: _RecordHistory, record: Record | None
) -> tuple[str, dict[str, Any], list[str]] | None:
    sobject = history.sobject
    if record is None or history.deleted or record["IsDeleted"]:
        if history.first_change_type == "CREATE":
            return None
        return "DELETE", {}, []
    if history.first_change_type == "CREATE":
        names = [n for n, v in record.items() if n not in _AUDIT_FIELDS and v is not None]
        return "CREATE", _body(sobject, record, names, drop_empty=True), []
    stamps = [n for n in _MODIFICATION_STAMPS if n in history.changed]
    names = [n for n in history.changed if n not in _MODIFICATION_STAMPS] + stamps
    return "UPDATE", _body(sobject, record, names, drop_empty=False), _changed(sobject, names)


def _body(
    sobject: SObject, record: Record, names: list[str], *, drop_empty: bool
) -> dict[str, Any]:
    """The values of `names` as a change event carries them, compound components nested."""
    body: dict[str, Any] = {}
    for name in names:
        value = _event_value(sobject, name, record.get(name))
        if drop_empty and value is None:
            continue
        member = sobject.compound_of(name)
        if member is None:
            body[name] = value
        else:
            compound, part = member
            body.setdefault(compound.name, {})[part] = value
    return body


def _changed(sobject: SObject, names: list[str]) -> list[str]:
    listed = []
    for name in names:
        member = sobject.compound_of(name)
        listed.append(name if member is None else f"{member[0].name}.{member[1]}")
    return listed


def _event_value(sobject: SObject, name: str, value: Any) -> Any:
    spec = sobject.field(name)
    if spec is not None and spec.type is FieldType.DATETIME and isinstance(value, str):
        moment = schema.parse_datetime(value)
        if moment is not None:
            moment = moment.astimezone(UTC)
            return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return value
