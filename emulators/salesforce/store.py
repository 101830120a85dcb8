"""The org's records and the rules Salesforce enforces when they are written.

`Store` holds every record (deleted ones too, as the recycle bin does, for `queryAll`) and performs
create, update and delete inside a `Transaction`: the validation of docs/design.md's objects
(required fields, restricted picklists, lookups, the pricebook rules of orders), derived fields
(auto-numbers, list and total prices), cascades, and the list of changes that the REST layer turns
into change events once the transaction commits. A failed transaction is undone record by record. An
update lists as changed only the fields whose stored value differs (a field set to its current value
is not changed), plus LastModifiedDate; an update that changes nothing still counts as a save and
yields an UPDATE listing only LastModifiedDate (and LastModifiedById when another user saves);
Salesforce's documentation is silent on this. Derived values (TotalPrice, TotalAmount) follow their
inputs without being listed.

Every write of one transaction carries the same LastModifiedDate/SystemModstamp (the time of its
first write), so that the same change to several records is the same change, as Salesforce
merges it into one event (its documentation says nothing of the timestamps themselves).

Order activation, as Salesforce's Object Reference states it: an Order is inserted with Status
Draft only, the update that activates it (Draft to Activated) may change no other field, and an
activated order cannot be deleted; it can be set back to Draft (the design re-activates orders),
and its other fields stay writable once activated (the engine's write-backs). Salesforce's exact
wording for these refusals is not documented: the codes are those Salesforce uses for record
rules (FIELD_INTEGRITY_EXCEPTION naming the fields, DELETE_FAILED for a refused delete, like the
other delete refusals here) and the messages are the emulator's own; rely on code and fields.
Each save that activates an order (its Status becoming Activated from any other) sets its
read-only ActivatedDate to the save's time and ActivatedById to the saving user, as part of that
save: the update lists them as changed (after the caller's fields) when their values differ.

A data load (`Transaction(data_load=True)`, the control API's seeding) arranges an org's past
rather than living it: as with Salesforce's "Set Audit Fields upon Record Creation", it may write
CreatedDate and LastModifiedDate (SystemModstamp follows LastModifiedDate; an unset
LastModifiedDate is CreatedDate on create), and an order's ActivatedDate (its ActivatedById is
then the loading user). It may also write orders activated: inserted so, or activated together
with other fields, which Salesforce's activation rules above otherwise refuse; an order written
activated without an ActivatedDate is activated at the save's time (its CreatedDate or its
LastModifiedDate). It knows nothing of HTTP or of events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from emulators.salesforce import ids, schema
from emulators.salesforce.errors import ApiError, dml_error
from emulators.salesforce.ids import IdFactory
from emulators.salesforce.schema import Field, FieldType, SObject

Record = dict[str, Any]

STANDARD_PRICEBOOK_NAME = "Standard Price Book"
_AUTONUMBERS = {"Order": ("OrderNumber", 8, 100), "OrderItem": ("OrderItemNumber", 10, 1)}
# Read-only fields a data load may write.
_LOADABLE_FIELDS = frozenset({"CreatedDate", "LastModifiedDate", "ActivatedDate"})
_ACTIVATION_FIELDS = ("ActivatedDate", "ActivatedById")


@dataclass
class Change:
    """One record operation of a transaction, in the terms a change event speaks.

    The values are not kept here: a change event carries the committed ones, read once the
    transaction is over.
    """

    entity: str
    change_type: str  # CREATE, UPDATE or DELETE
    record_id: str
    changed_fields: list[str]


@dataclass
class Transaction:
    """The work of one API call: its undo log, its record changes and its platform events."""

    user_id: str
    changes: list[Change] = field(default_factory=list)
    undo: list[tuple[str, str, Record | None]] = field(default_factory=list)
    platform_events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # The audit timestamp of every write in the transaction, fixed at its first write.
    timestamp: str | None = None
    # Seeding: audit fields writable and orders written activated (see the module docstring).
    data_load: bool = False

    def mark(self) -> tuple[int, int, int]:
        """A savepoint: `Store.rollback(tx, to=mark)` undoes only what came after it."""
        return len(self.undo), len(self.changes), len(self.platform_events)


class Store:
    """All records of the org, keyed by object name and 18-character id."""

    def __init__(self, id_factory: IdFactory, clock: Callable[[], float]) -> None:
        self.ids = id_factory
        self.clock = clock
        self.tables: dict[str, dict[str, Record]] = {}
        self.autonumbers: dict[str, int] = {}
        self.clear()

    def clear(self) -> None:
        """Back to an empty org (ids continue from the factory's own state)."""
        self.tables = {name: {} for name in _data_objects()}
        self.autonumbers = {}

    # ---- reading ---------------------------------------------------------------------------

    def records(self, sobject: SObject, *, include_deleted: bool = False) -> list[Record]:
        table = self.tables.get(sobject.name, {})
        return [r for r in table.values() if include_deleted or not r["IsDeleted"]]

    def get(self, record_id: str, *, include_deleted: bool = False) -> Record | None:
        sobject = schema.BY_PREFIX.get(record_id[:3])
        if sobject is None:
            return None
        record = self.tables.get(sobject.name, {}).get(record_id)
        if record is None or (record["IsDeleted"] and not include_deleted):
            return None
        return record

    def find_by(self, sobject: SObject, spec: Field, value: Any) -> list[Record]:
        return [r for r in self.records(sobject) if _equal(r.get(spec.name), value)]

    def standard_pricebook(self) -> Record:
        for record in self.records(schema.PRICEBOOK2):
            if record["IsStandard"]:
                return record
        raise AssertionError("the standard price book always exists")

    def is_empty(self) -> bool:
        """True when the org holds nothing but the standard price book."""
        return all(
            not table or (name == "Pricebook2" and len(table) == 1)
            for name, table in self.tables.items()
        )

    # ---- transactions ----------------------------------------------------------------------

    def rollback(self, tx: Transaction, to: tuple[int, int, int] = (0, 0, 0)) -> None:
        undo_at, changes_at, events_at = to
        for table, record_id, previous in reversed(tx.undo[undo_at:]):
            if previous is None:
                self.tables[table].pop(record_id, None)
            else:
                self.tables[table][record_id] = previous
        del tx.undo[undo_at:]
        del tx.changes[changes_at:]
        del tx.platform_events[events_at:]

    # ---- writing ---------------------------------------------------------------------------

    def create(self, tx: Transaction, sobject: SObject, data: dict[str, Any]) -> Record:
        values = self._coerce(sobject, data, creating=True, data_load=tx.data_load)
        for spec in sobject.fields:
            if spec.name not in values and spec.default is not None:
                values[spec.name] = spec.default
        missing = [
            spec.name for spec in sobject.fields if spec.required and values.get(spec.name) is None
        ]
        if missing:
            raise dml_error(
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(missing)}]",
                missing,
            )
        self._check_references(sobject, values)
        record: Record = {spec.name: None for spec in sobject.fields}
        record.update(values)
        created = values.get("CreatedDate") or self._now(tx)
        modified = values.get("LastModifiedDate") or created
        record_id = self.ids.new(sobject.key_prefix)
        record.update(
            Id=record_id,
            IsDeleted=False,
            CreatedDate=created,
            CreatedById=tx.user_id,
            LastModifiedDate=modified,
            LastModifiedById=tx.user_id,
            SystemModstamp=modified,
        )
        for spec in sobject.fields:
            if spec.type is FieldType.BOOLEAN and record[spec.name] is None:
                record[spec.name] = False
        self._before_insert(tx, sobject, record)
        if sobject is schema.ORDER:
            activates = record["Status"] == schema.ORDER_ACTIVATED
            self._stamp_activation(tx, record, values, activates=activates, at=created)
        self._put(tx, sobject, record, previous=None)
        self._after_write(tx, sobject, record)
        tx.changes.append(Change(sobject.name, "CREATE", record_id, []))
        return record

    def update(
        self, tx: Transaction, sobject: SObject, record_id: str, data: dict[str, Any]
    ) -> Record:
        current = self._existing(sobject, record_id)
        values = self._coerce(sobject, data, creating=False, data_load=tx.data_load)
        cleared = [
            name
            for name, value in values.items()
            if value is None and (spec := sobject.field(name)) is not None and spec.required
        ]
        if cleared:
            raise dml_error(
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(cleared)}]",
                cleared,
            )
        self._check_references(sobject, values)
        record = dict(current)
        # `get`: records of a state saved before a field existed lack it.
        changed = [name for name, value in values.items() if not _equal(current.get(name), value)]
        record.update(values)
        modified = values.get("LastModifiedDate") or self._now(tx)
        record.update(
            LastModifiedDate=modified, LastModifiedById=tx.user_id, SystemModstamp=modified
        )
        self._before_update(tx, sobject, current, record, changed)
        if sobject is schema.ORDER:
            activates = _activates(current, record)
            self._stamp_activation(tx, record, values, activates=activates, at=modified)
            changed.extend(
                name
                for name in _ACTIVATION_FIELDS
                if name not in changed and not _equal(current.get(name), record[name])
            )
        self._put(tx, sobject, record, previous=current)
        self._after_write(tx, sobject, record)
        changed_fields = [name for name in changed if name != "LastModifiedDate"]
        changed_fields.append("LastModifiedDate")
        if "LastModifiedById" not in changed and current["LastModifiedById"] != tx.user_id:
            changed_fields.append("LastModifiedById")
        tx.changes.append(Change(sobject.name, "UPDATE", record_id, changed_fields))
        return record

    def delete(self, tx: Transaction, sobject: SObject, record_id: str) -> None:
        record = self.get(record_id, include_deleted=True)
        if record is None or schema.BY_PREFIX.get(record_id[:3]) is not sobject:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        if record["IsDeleted"]:
            raise ApiError(404, "ENTITY_IS_DELETED", "entity is deleted", [])
        self._before_delete(tx, sobject, record)
        deleted = dict(record)
        now = self._now(tx)
        deleted.update(IsDeleted=True, LastModifiedDate=now, SystemModstamp=now)
        self._put(tx, sobject, deleted, previous=record)
        self._after_write(tx, sobject, deleted)
        tx.changes.append(Change(sobject.name, "DELETE", record_id, []))

    def insert_standard_pricebook(self, user_id: str) -> Record:
        """The one standard price book every org has; created at reset, never by the API."""
        tx = Transaction(user_id)
        record = self.create(
            tx, schema.PRICEBOOK2, {"Name": STANDARD_PRICEBOOK_NAME, "IsActive": True}
        )
        record["IsStandard"] = True
        return record

    # ---- state -----------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {"tables": self.tables, "autonumbers": self.autonumbers}

    def load_state(self, state: dict[str, Any]) -> None:
        self.tables = {name: {} for name in _data_objects()}
        for name, table in state["tables"].items():
            self.tables[name] = dict(table)
        self.autonumbers = {str(k): int(v) for k, v in state["autonumbers"].items()}

    # ---- internals -------------------------------------------------------------------------

    def _now(self, tx: Transaction) -> str:
        if tx.timestamp is None:
            tx.timestamp = schema.format_datetime(datetime.fromtimestamp(self.clock(), UTC))
        return tx.timestamp

    def _put(
        self, tx: Transaction, sobject: SObject, record: Record, previous: Record | None
    ) -> None:
        tx.undo.append((sobject.name, record["Id"], previous))
        self.tables[sobject.name][record["Id"]] = record

    def _existing(self, sobject: SObject, record_id: str) -> Record:
        record = self.get(record_id, include_deleted=True)
        if record is None or schema.BY_PREFIX.get(record_id[:3]) is not sobject:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        if record["IsDeleted"]:
            raise ApiError(404, "ENTITY_IS_DELETED", "entity is deleted", [])
        return record

    def _coerce(
        self, sobject: SObject, data: dict[str, Any], *, creating: bool, data_load: bool
    ) -> Record:
        values: Record = {}
        refused: list[str] = []
        for name, raw in data.items():
            if name == "attributes":
                continue
            spec = sobject.field(name)
            if spec is None:
                raise schema.unknown_field_error(sobject, name)
            writable = spec.createable if creating else spec.updateable
            if not writable and not (data_load and spec.name in _LOADABLE_FIELDS):
                refused.append(spec.name)
                continue
            values[spec.name] = schema.coerce(sobject, spec, raw)
        if refused:
            raise dml_error(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(refused)}. Please check the security "
                "settings of this field and verify that it is read/write for your profile or "
                "permission set.",
                refused,
            )
        return values

    def _check_references(self, sobject: SObject, values: Record) -> None:
        for name, value in values.items():
            spec = sobject.field(name)
            if spec is None or spec.type is not FieldType.REFERENCE or value is None:
                continue
            target = schema.get_object(spec.reference_to or "")
            if target is None:
                continue
            if ids.key_prefix(value) != target.key_prefix:
                raise dml_error(
                    "FIELD_INTEGRITY_EXCEPTION",
                    f"{spec.display}: id value of incorrect type: {value}",
                    [spec.name],
                )
            referenced = self.get(value, include_deleted=True)
            if referenced is None:
                raise dml_error(
                    "INVALID_CROSS_REFERENCE_KEY",
                    "invalid cross reference id",
                    [spec.name],
                )
            if referenced["IsDeleted"]:
                raise dml_error("ENTITY_IS_DELETED", "entity is deleted", [spec.name])

    def _next_autonumber(self, sobject: SObject) -> str:
        field_name, width, start = _AUTONUMBERS[sobject.name]
        number = self.autonumbers.get(field_name, start - 1) + 1
        self.autonumbers[field_name] = number
        return f"{number:0{width}d}"

    def _before_insert(self, tx: Transaction, sobject: SObject, record: Record) -> None:
        if sobject is schema.ORDER:
            if record["Status"] != schema.ORDER_DRAFT and not tx.data_load:
                raise dml_error(
                    "FIELD_INTEGRITY_EXCEPTION",
                    f"An order can only be created with Status {schema.ORDER_DRAFT}: create it "
                    "as a draft, then activate it with an update of its Status.",
                    ["Status"],
                )
            record["OrderNumber"] = self._next_autonumber(sobject)
            record["TotalAmount"] = 0.0
        elif sobject is schema.ORDER_ITEM:
            record["OrderItemNumber"] = self._next_autonumber(sobject)
            self._check_order_item(record)
        elif sobject is schema.PRICEBOOK_ENTRY:
            self._check_pricebook_entry(record)

    def _before_update(
        self,
        tx: Transaction,
        sobject: SObject,
        current: Record,
        record: Record,
        changed: list[str],
    ) -> None:
        if sobject is schema.ORDER and _activates(current, record) and not tx.data_load:
            others = [name for name in changed if name != "Status"]
            if others:
                raise dml_error(
                    "FIELD_INTEGRITY_EXCEPTION",
                    "An order's Status is the only field an update that activates it can "
                    f"change; update {', '.join(others)} separately.",
                    others,
                )
        if sobject is schema.ORDER_ITEM:
            record["TotalPrice"] = _total_price(record)
        elif sobject is schema.PRICEBOOK2 and record["IsStandard"] and not record["IsActive"]:
            raise dml_error(
                "FIELD_INTEGRITY_EXCEPTION",
                "The standard price book can't be deactivated.",
                ["IsActive"],
            )
        elif (
            sobject is schema.ORDER
            and "Pricebook2Id" in changed
            and any(self._order_items(record["Id"]))
        ):
            raise dml_error(
                "FIELD_INTEGRITY_EXCEPTION",
                "field integrity exception: Pricebook2Id "
                "(can't change the price book of an order that has order products)",
                ["Pricebook2Id"],
            )

    def _before_delete(self, tx: Transaction, sobject: SObject, record: Record) -> None:
        if sobject is schema.ACCOUNT:
            orders = [o for o in self.records(schema.ORDER) if o["AccountId"] == record["Id"]]
            if orders:
                raise dml_error(
                    "DELETE_FAILED",
                    f"Your attempt to delete {record['Name']} could not be completed because it "
                    f"is associated with the following orders.: {orders[0]['OrderNumber']}",
                )
        elif sobject is schema.ORDER:
            if record["Status"] == schema.ORDER_ACTIVATED:
                raise dml_error(
                    "DELETE_FAILED",
                    f"Your attempt to delete order {record['OrderNumber']} could not be "
                    "completed because it is activated. Set its Status back to "
                    f"{schema.ORDER_DRAFT} first.",
                )
            for item in self._order_items(record["Id"]):
                self.delete(tx, schema.ORDER_ITEM, item["Id"])
        elif sobject is schema.PRODUCT2:
            if any(i["Product2Id"] == record["Id"] for i in self.records(schema.ORDER_ITEM)):
                raise dml_error(
                    "DELETE_FAILED",
                    f"Your attempt to delete {record['Name']} could not be completed because it "
                    "is associated with the following order products.",
                )
            for entry in self.records(schema.PRICEBOOK_ENTRY):
                if entry["Product2Id"] == record["Id"]:
                    self.delete(tx, schema.PRICEBOOK_ENTRY, entry["Id"])
        elif sobject is schema.PRICEBOOK2:
            if record["IsStandard"]:
                raise dml_error("DELETE_FAILED", "You can't delete the standard price book.")
            for entry in self.records(schema.PRICEBOOK_ENTRY):
                if entry["Pricebook2Id"] == record["Id"]:
                    self.delete(tx, schema.PRICEBOOK_ENTRY, entry["Id"])
        elif sobject is schema.PRICEBOOK_ENTRY and any(
            i["PricebookEntryId"] == record["Id"] for i in self.records(schema.ORDER_ITEM)
        ):
            raise dml_error(
                "DELETE_FAILED",
                "Your attempt to delete this price book entry could not be completed because "
                "it is associated with order products.",
            )

    @staticmethod
    def _stamp_activation(
        tx: Transaction, order: Record, given: Record, *, activates: bool, at: str
    ) -> None:
        """Note when and by whom `order` was last activated, if this save activates it.

        A data load may give the ActivatedDate itself, activating or not: the org's past.
        """
        if "ActivatedDate" in given:
            activated_at = given["ActivatedDate"]
        elif activates:
            activated_at = at
        else:
            return
        order["ActivatedDate"] = activated_at
        order["ActivatedById"] = tx.user_id if activated_at is not None else None

    def _after_write(self, tx: Transaction, sobject: SObject, record: Record) -> None:
        if sobject is schema.ORDER_ITEM:
            order = self.tables["Order"].get(record["OrderId"])
            if order is not None and not order["IsDeleted"]:
                # The roll-up summary is maintained silently: no change event of its own.
                total = sum(_total_price(i) for i in self._order_items(order["Id"]))
                updated = dict(order, TotalAmount=total)
                self._put(tx, schema.ORDER, updated, previous=order)

    def _order_items(self, order_id: str) -> list[Record]:
        return [i for i in self.records(schema.ORDER_ITEM) if i["OrderId"] == order_id]

    def _check_pricebook_entry(self, record: Record) -> None:
        product = self.tables["Product2"][record["Product2Id"]]
        record["Name"] = product["Name"]
        record["ProductCode"] = product["ProductCode"]
        for entry in self.records(schema.PRICEBOOK_ENTRY):
            if (
                entry["Pricebook2Id"] == record["Pricebook2Id"]
                and entry["Product2Id"] == record["Product2Id"]
            ):
                raise dml_error(
                    "DUPLICATE_VALUE", "This price definition already exists in this price book"
                )
        pricebook = self.tables["Pricebook2"][record["Pricebook2Id"]]
        if not pricebook["IsStandard"]:
            standard_id = self.standard_pricebook()["Id"]
            if not any(
                e["Pricebook2Id"] == standard_id and e["Product2Id"] == record["Product2Id"]
                for e in self.records(schema.PRICEBOOK_ENTRY)
            ):
                raise dml_error(
                    "STANDARD_PRICE_NOT_DEFINED", "No standard price defined for this product"
                )

    def _check_order_item(self, record: Record) -> None:
        order = self.tables["Order"][record["OrderId"]]
        entry = self.tables["PricebookEntry"][record["PricebookEntryId"]]
        if order["Pricebook2Id"] != entry["Pricebook2Id"]:
            raise dml_error(
                "FIELD_INTEGRITY_EXCEPTION",
                "field integrity exception: PricebookEntryId (pricebook entry is in a different "
                "pricebook than the one assigned to the Order, or Order has null pricebook)",
                ["PricebookEntryId"],
            )
        if not entry["IsActive"]:
            raise dml_error(
                "FIELD_INTEGRITY_EXCEPTION",
                "field integrity exception: PricebookEntryId (pricebook entry is inactive)",
                ["PricebookEntryId"],
            )
        if record["Product2Id"] is None:
            record["Product2Id"] = entry["Product2Id"]
        elif record["Product2Id"] != entry["Product2Id"]:
            raise dml_error(
                "FIELD_INTEGRITY_EXCEPTION",
                "field integrity exception: Product2Id (the product does not match the price "
                "book entry's product)",
                ["Product2Id"],
            )
        record["ListPrice"] = entry["UnitPrice"]
        record["TotalPrice"] = _total_price(record)


def _activates(current: Record, record: Record) -> bool:
    return bool(
        current["Status"] != schema.ORDER_ACTIVATED and record["Status"] == schema.ORDER_ACTIVATED
    )


def _total_price(item: Record) -> float:
    return float(item["Quantity"] or 0) * float(item["UnitPrice"] or 0)


def _equal(left: Any, right: Any) -> bool:
    return bool(left == right and type(left) is type(right))


def _data_objects() -> list[str]:
    return [o.name for o in schema.OBJECTS.values() if not o.platform_event]
