"""The org's data model: the objects and fields of docs/design.md, their types, and value rules.

Each field knows its type, whether it is required, createable and updateable, its picklist values
(restricted or not), and for lookups the object and relationship it points to. `coerce` turns a
JSON value from a request into the stored value or raises the error Salesforce would give.
Stored values are JSON-ready: text as str, numbers as float, dates `YYYY-MM-DD`, date-times
`YYYY-MM-DDTHH:MM:SS.000+0000` in UTC, ids in their 18-character form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from emulators.salesforce import ids
from emulators.salesforce.errors import ApiError, dml_error


class FieldType(StrEnum):
    ID = "id"
    STRING = "string"
    TEXTAREA = "textarea"
    PICKLIST = "picklist"
    BOOLEAN = "boolean"
    DOUBLE = "double"
    CURRENCY = "currency"
    DATE = "date"
    DATETIME = "datetime"
    REFERENCE = "reference"


TEXT_TYPES = frozenset({FieldType.STRING, FieldType.TEXTAREA, FieldType.PICKLIST})
NUMBER_TYPES = frozenset({FieldType.DOUBLE, FieldType.CURRENCY})
ID_TYPES = frozenset({FieldType.ID, FieldType.REFERENCE})


@dataclass(frozen=True)
class Field:
    name: str
    type: FieldType
    label: str = ""
    required: bool = False
    createable: bool = True
    updateable: bool = True
    picklist: tuple[str, ...] = ()
    restricted: bool = False
    reference_to: str | None = None
    relationship_name: str | None = None
    external_id: bool = False
    length: int | None = None
    default: Any = None

    @property
    def display(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class ChildRelationship:
    name: str
    child_object: str
    field: str


@dataclass(frozen=True)
class CompoundField:
    """A compound address over its component fields (`BillingAddress` over `BillingStreet`, …).

    `parts` pairs each component's name as change events spell it (`Street`) with its field. REST
    reads spell the components in lower camel case (`street`, `postalCode`) and add the geocode
    components (null here: the org stores no geocodes).
    """

    name: str
    parts: tuple[tuple[str, str], ...]

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(name for _, name in self.parts)


def _address(prefix: str) -> CompoundField:
    components = ("Street", "City", "State", "PostalCode", "Country")
    return CompoundField(f"{prefix}Address", tuple((c, f"{prefix}{c}") for c in components))


@dataclass(frozen=True)
class SObject:
    name: str
    key_prefix: str
    label: str
    fields: tuple[Field, ...]
    children: tuple[ChildRelationship, ...] = ()
    platform_event: bool = False
    # Objects whose REST changes publish change data capture events.
    change_events: bool = False
    compounds: tuple[CompoundField, ...] = ()
    _by_name: dict[str, Field] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name.update({f.name.lower(): f for f in self.fields})

    def field(self, name: str) -> Field | None:
        return self._by_name.get(name.lower())

    def compound(self, name: str) -> CompoundField | None:
        lowered = name.lower()
        return next((c for c in self.compounds if c.name.lower() == lowered), None)

    def compound_of(self, field_name: str) -> tuple[CompoundField, str] | None:
        """The compound field that `field_name` is a component of, and the component's name."""
        for compound in self.compounds:
            for part, name in compound.parts:
                if name == field_name:
                    return compound, part
        return None

    def relationship(self, name: str) -> Field | None:
        lowered = name.lower()
        for candidate in self.fields:
            if candidate.relationship_name and candidate.relationship_name.lower() == lowered:
                return candidate
        return None

    def child(self, name: str) -> ChildRelationship | None:
        lowered = name.lower()
        return next((c for c in self.children if c.name.lower() == lowered), None)


def _system_fields() -> tuple[Field, ...]:
    return (
        Field("Id", FieldType.ID, "Record ID", createable=False, updateable=False),
        Field("IsDeleted", FieldType.BOOLEAN, "Deleted", createable=False, updateable=False),
        Field(
            "CreatedDate", FieldType.DATETIME, "Created Date", createable=False, updateable=False
        ),
        Field(
            "CreatedById",
            FieldType.REFERENCE,
            "Created By ID",
            createable=False,
            updateable=False,
            reference_to="User",
        ),
        Field(
            "LastModifiedDate",
            FieldType.DATETIME,
            "Last Modified Date",
            createable=False,
            updateable=False,
        ),
        Field(
            "LastModifiedById",
            FieldType.REFERENCE,
            "Last Modified By ID",
            createable=False,
            updateable=False,
            reference_to="User",
        ),
        Field(
            "SystemModstamp",
            FieldType.DATETIME,
            "System Modstamp",
            createable=False,
            updateable=False,
        ),
    )


def _text(name: str, label: str = "", length: int = 255, **kw: Any) -> Field:
    return Field(name, FieldType.STRING, label, length=length, **kw)


def _picklist(name: str, values: tuple[str, ...], *, restricted: bool, **kw: Any) -> Field:
    return Field(name, FieldType.PICKLIST, picklist=values, restricted=restricted, **kw)


def _lookup(name: str, target: str, relationship: str, label: str, **kw: Any) -> Field:
    return Field(
        name,
        FieldType.REFERENCE,
        label,
        reference_to=target,
        relationship_name=relationship,
        **kw,
    )


def _derived(name: str, kind: FieldType, label: str) -> Field:
    return Field(name, kind, label, createable=False, updateable=False)


ACCOUNT = SObject(
    "Account",
    "001",
    "Account",
    (
        *_system_fields(),
        _text("Name", "Account Name", required=True),
        _text("Customer_Number__c", "Customer Number", length=20, external_id=True),
        _text("WH_Account__c", "WHMCS Account", length=20),
        _picklist(
            "Portal_Status__c",
            ("Not Yet", "Active", "Inactive"),
            restricted=False,
            label="Portal Status",
        ),
        _text("Phone", "Account Phone", length=40),
    ),
    children=(ChildRelationship("Orders", "Order", "AccountId"),),
)

PRODUCT2 = SObject(
    "Product2",
    "01t",
    "Product",
    (
        *_system_fields(),
        _text("Name", "Product Name", required=True),
        _text("ProductCode", "Product Code"),
        Field("Description", FieldType.TEXTAREA, "Product Description", length=4000),
        Field("IsActive", FieldType.BOOLEAN, "Active", default=False),
        Field("WHMCS_Product_Id__c", FieldType.DOUBLE, "WHMCS Product Id", external_id=True),
        _picklist(
            "Product_Type__c",
            ("SIM", "Internet", "VPN", "Other"),
            restricted=True,
            label="Product Type",
        ),
        _picklist(
            "Item_Class__c",
            ("Service", "Activation", "Installation", "Add-on"),
            restricted=True,
            label="Item Class",
        ),
        _picklist(
            "Billing_Cycle__c",
            ("Monthly", "Quarterly", "Semiannually", "Annually", "Biennially", "Onetime"),
            restricted=True,
            label="Billing Cycle",
        ),
        _text("Freebit_Plan_Code__c", "Freebit Plan Code", length=40),
    ),
    children=(ChildRelationship("PricebookEntries", "PricebookEntry", "Product2Id"),),
    change_events=True,
)

PRICEBOOK2 = SObject(
    "Pricebook2",
    "01s",
    "Price Book",
    (
        *_system_fields(),
        _text("Name", "Price Book Name", required=True),
        Field("Description", FieldType.TEXTAREA, "Description", length=255),
        Field("IsActive", FieldType.BOOLEAN, "Active", default=False),
        _derived("IsStandard", FieldType.BOOLEAN, "Is Standard Price Book"),
    ),
    children=(ChildRelationship("PricebookEntries", "PricebookEntry", "Pricebook2Id"),),
)

PRICEBOOK_ENTRY = SObject(
    "PricebookEntry",
    "01u",
    "Price Book Entry",
    (
        *_system_fields(),
        _derived("Name", FieldType.STRING, "Product Name"),
        _derived("ProductCode", FieldType.STRING, "Product Code"),
        _lookup(
            "Product2Id", "Product2", "Product2", "Product ID", required=True, updateable=False
        ),
        _lookup(
            "Pricebook2Id",
            "Pricebook2",
            "Pricebook2",
            "Price Book ID",
            required=True,
            updateable=False,
        ),
        Field("UnitPrice", FieldType.CURRENCY, "List Price", required=True),
        Field("IsActive", FieldType.BOOLEAN, "Active", default=False),
        Field("UseStandardPrice", FieldType.BOOLEAN, "Use Standard Price", default=False),
    ),
    change_events=True,
)

ORDER_DRAFT = "Draft"
ORDER_ACTIVATED = "Activated"
# Salesforce groups Status values into the Draft and Activated categories; here each category
# has one value of the same name.
ORDER_STATUSES = (ORDER_DRAFT, ORDER_ACTIVATED)
ACTIVATION_STATUSES = ("Pending", "Activating", "Activated", "Failed", "Cancelled")

ORDER = SObject(
    "Order",
    "801",
    "Order",
    (
        *_system_fields(),
        _derived("OrderNumber", FieldType.STRING, "Order Number"),
        _text("Name", "Order Name", length=80),
        _lookup("AccountId", "Account", "Account", "Account ID", required=True),
        _lookup("Pricebook2Id", "Pricebook2", "Pricebook2", "Price Book ID"),
        _picklist("Status", ORDER_STATUSES, restricted=True, label="Status", required=True),
        Field("EffectiveDate", FieldType.DATE, "Order Start Date", required=True),
        # Set by the store when a save activates the order (see store.py).
        _derived("ActivatedDate", FieldType.DATETIME, "Activated Date"),
        Field(
            "ActivatedById",
            FieldType.REFERENCE,
            "Activated By ID",
            createable=False,
            updateable=False,
            reference_to="User",
        ),
        Field("Description", FieldType.TEXTAREA, "Description", length=32000),
        _derived("TotalAmount", FieldType.CURRENCY, "Order Amount"),
        _text("BillingStreet", "Billing Street"),
        _text("BillingCity", "Billing City", length=40),
        _text("BillingState", "Billing State/Province", length=80),
        _text("BillingPostalCode", "Billing Zip/Postal Code", length=20),
        _text("BillingCountry", "Billing Country", length=80),
        _picklist(
            "Activation_Status__c",
            ACTIVATION_STATUSES,
            restricted=True,
            label="Activation Status",
        ),
        _text("Activation_Error_Code__c", "Activation Error Code", length=64),
        Field(
            "Activation_Error_Message__c",
            FieldType.TEXTAREA,
            "Activation Error Message",
            length=32768,
        ),
        Field("Activation_Last_Attempt_At__c", FieldType.DATETIME, "Activation Last Attempt At"),
        _text("WHMCS_Order_ID__c", "WHMCS Order ID", length=20, external_id=True),
        _picklist("SIM_Type__c", ("eSIM", "Physical SIM"), restricted=True, label="SIM Type"),
        _text("EID__c", "EID", length=32),
        _text("SIM_Phone_Number__c", "SIM Phone Number", length=20),
        _text("MNP_Reservation_Number__c", "MNP Reservation Number", length=20),
        Field("MNP_Expiry_Date__c", FieldType.DATE, "MNP Expiry Date"),
        # The person the MNP reservation names: Freebit needs them to port the number in.
        _text("MNP_Last_Name_Kanji__c", "MNP Last Name (Kanji)", length=40),
        _text("MNP_First_Name_Kanji__c", "MNP First Name (Kanji)", length=40),
        _text("MNP_Last_Name_Kana__c", "MNP Last Name (Kana)", length=40),
        _text("MNP_First_Name_Kana__c", "MNP First Name (Kana)", length=40),
        _picklist("MNP_Gender__c", ("M", "F", "C"), restricted=True, label="MNP Gender"),
        Field("MNP_Birthday__c", FieldType.DATE, "MNP Birthday"),
    ),
    children=(ChildRelationship("OrderItems", "OrderItem", "OrderId"),),
    change_events=True,
    compounds=(_address("Billing"),),
)

ORDER_ITEM = SObject(
    "OrderItem",
    "802",
    "Order Product",
    (
        *_system_fields(),
        _derived("OrderItemNumber", FieldType.STRING, "Order Product Number"),
        _lookup("OrderId", "Order", "Order", "Order ID", required=True, updateable=False),
        _lookup("Product2Id", "Product2", "Product2", "Product ID", updateable=False),
        _lookup(
            "PricebookEntryId",
            "PricebookEntry",
            "PricebookEntry",
            "Price Book Entry ID",
            required=True,
            updateable=False,
        ),
        Field("Quantity", FieldType.DOUBLE, "Quantity", required=True),
        Field("UnitPrice", FieldType.CURRENCY, "Unit Price", required=True),
        _derived("ListPrice", FieldType.CURRENCY, "List Price"),
        _derived("TotalPrice", FieldType.CURRENCY, "Total Price"),
        Field("Description", FieldType.STRING, "Line Description", length=255),
        _text("WHMCS_Service_ID__c", "WHMCS Service ID", length=20, external_id=True),
    ),
    change_events=True,
)

ACCOUNT_ELIGIBILITY_UPDATE = SObject(
    "Account_Eligibility_Update__e",
    "e00",
    "Account Eligibility Update",
    (
        _derived("ReplayId", FieldType.STRING, "Replay ID"),
        _derived("CreatedDate", FieldType.DATETIME, "Created Date"),
        Field(
            "CreatedById",
            FieldType.REFERENCE,
            "Created By ID",
            createable=False,
            updateable=False,
            reference_to="User",
        ),
        _derived("EventUuid", FieldType.STRING, "Event UUID"),
        _text("Account_Id__c", "Account Id", length=18),
    ),
    platform_event=True,
)

OBJECTS: dict[str, SObject] = {
    o.name.lower(): o
    for o in (
        ACCOUNT,
        PRODUCT2,
        PRICEBOOK2,
        PRICEBOOK_ENTRY,
        ORDER,
        ORDER_ITEM,
        ACCOUNT_ELIGIBILITY_UPDATE,
    )
}
BY_PREFIX: dict[str, SObject] = {o.key_prefix: o for o in OBJECTS.values()}
USER_KEY_PREFIX = "005"
QUERY_LOCATOR_PREFIX = "01g"


def get_object(name: str) -> SObject | None:
    return OBJECTS.get(name.lower())


# ---- values ----------------------------------------------------------------------------------

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_JSON_KIND = {bool: "VALUE_TRUE", str: "VALUE_STRING", int: "VALUE_NUMBER_INT"}


def format_datetime(moment: datetime) -> str:
    """Salesforce's REST form of a date-time: milliseconds and a `+0000` offset."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def parse_datetime(text: str) -> datetime | None:
    """A date-time in any ISO 8601 form Salesforce accepts (`Z`, `+0000`, `+00:00`)."""
    candidate = text.strip()
    if candidate.endswith("Z"):
        candidate = candidate[:-1] + "+00:00"
    match = re.match(r"^(.*[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)([+-]\d{2})(\d{2})$", candidate)
    if match:
        candidate = f"{match.group(1)}{match.group(2)}:{match.group(3)}"
    try:
        moment = datetime.fromisoformat(candidate)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def parse_date(text: str) -> date | None:
    if not _DATE_RE.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _parser_error(kind: str, value: Any) -> ApiError:
    json_kind = "VALUE_NUMBER_FLOAT" if isinstance(value, float) else _JSON_KIND.get(type(value))
    json_kind = json_kind or "START_OBJECT"
    return ApiError(
        400,
        "JSON_PARSER_ERROR",
        f"Cannot deserialize instance of {kind} from {json_kind} value {value} "
        "or request may be missing a required field",
    )


def coerce(sobject: SObject, spec: Field, value: Any) -> Any:
    """The stored form of `value` for `spec`, or the error Salesforce gives for it."""
    if value is None:
        return False if spec.type is FieldType.BOOLEAN else None
    kind = spec.type
    if kind in TEXT_TYPES:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _parser_error("string", value)
        text = value if isinstance(value, str) else _number_text(value)
        if spec.length is not None and len(text) > spec.length:
            raise dml_error(
                "STRING_TOO_LONG",
                f"{spec.display}: data value too large: {text[:80]} (max length={spec.length})",
                [spec.name],
            )
        if kind is FieldType.PICKLIST and spec.restricted and text not in spec.picklist:
            raise dml_error(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{spec.display}: bad value for restricted picklist field: {text}",
                [spec.name],
            )
        return text if text != "" else None
    if kind is FieldType.BOOLEAN:
        if not isinstance(value, bool):
            raise _parser_error("boolean", value)
        return value
    if kind in NUMBER_TYPES:
        if isinstance(value, bool):
            raise _parser_error("double", value)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise _parser_error("double", value) from None
        raise _parser_error("double", value)
    if kind is FieldType.DATE:
        if isinstance(value, str):
            if parse_date(value) is not None:
                return value
            moment = parse_datetime(value)
            if moment is not None:
                return moment.date().isoformat()
        raise _parser_error("date", value)
    if kind is FieldType.DATETIME:
        if isinstance(value, str):
            moment = parse_datetime(value)
            if moment is not None:
                return format_datetime(moment)
        raise _parser_error("datetime", value)
    if kind in ID_TYPES:
        if not isinstance(value, str):
            raise _parser_error("id", value)
        normalized = ids.normalize(value)
        if normalized is None:
            raise dml_error(
                "MALFORMED_ID",
                f"{spec.display}: id value of incorrect type: {value}",
                [spec.name],
            )
        return normalized
    raise AssertionError(f"unhandled field type {kind}")


def _number_text(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def unknown_field_error(sobject: SObject, name: str) -> ApiError:
    return ApiError(
        400,
        "INVALID_FIELD",
        f"No such column '{name}' on sobject of type {sobject.name}",
        [],
    )
