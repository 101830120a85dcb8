"""The Salesforce order as the engine sees it: one snapshot, read once per attempt.

Field names are the domain's, not Salesforce's: `clients.salesforce` maps the records (and their
quirks, such as id-like fields stored as numbers) onto these models.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from domain.sim import SimType

SF_ID_PATTERN = r"^[A-Za-z0-9]{15}([A-Za-z0-9]{3})?$"


class ActivationStatus(StrEnum):
    """`Activation_Status__c`: where the engine says the order stands."""

    PENDING = "Pending"
    ACTIVATING = "Activating"
    ACTIVATED = "Activated"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def is_final(self) -> bool:
        return self in (ActivationStatus.ACTIVATED, ActivationStatus.CANCELLED)


class ProductType(StrEnum):
    SIM = "SIM"
    INTERNET = "Internet"
    VPN = "VPN"
    OTHER = "Other"


class ItemClass(StrEnum):
    SERVICE = "Service"
    ACTIVATION = "Activation"
    INSTALLATION = "Installation"
    ADD_ON = "Add-on"


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Product(Model):
    sf_product_id: str
    name: str
    product_code: str | None = None
    is_active: bool = True
    whmcs_product_id: int | None = None
    # Kept as text: a picklist value the engine does not know must not make the order unreadable;
    # the rules decide what an unknown value means.
    product_type: str | None = None
    item_class: str | None = None
    billing_cycle: str | None = None
    freebit_plan_code: str | None = None


class OrderItem(Model):
    sf_order_item_id: str
    product: Product
    quantity: Decimal
    unit_price: Decimal | None = None
    pricebook_entry_id: str | None = None
    whmcs_service_id: int | None = None


class Account(Model):
    sf_account_id: str
    name: str
    customer_number: str | None = None
    # `WH_Account__c` is a text field; the rules decide whether it holds a usable WHMCS id.
    whmcs_account_field: str | None = None
    portal_status: str | None = None


class Address(Model):
    street: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


class MnpPerson(Model):
    """Who the number is ported for, as the carrier's MNP reservation names them."""

    last_name_kanji: str | None = None
    first_name_kanji: str | None = None
    last_name_kana: str | None = None
    first_name_kana: str | None = None
    gender: str | None = None
    birthday: date | None = None


class SimDetails(Model):
    """The order's SIM fields; all optional here, the rules decide what a SIM order needs."""

    sim_type: SimType | str | None = None
    eid: str | None = None
    phone_number: str | None = None
    mnp_reservation_number: str | None = None
    mnp_expiry_date: date | None = None
    mnp_person: MnpPerson = Field(default_factory=MnpPerson)


class OrderState(Model):
    """The few fields that say whether an order is (still) to be fulfilled."""

    sf_order_id: str
    status: str
    sf_account_id: str | None = None
    activation_status: str | None = None


class OrderSnapshot(Model):
    """An order with its account, address snapshot, SIM fields, items and their products."""

    sf_order_id: str = Field(pattern=SF_ID_PATTERN)
    order_number: str | None = None
    sf_account_id: str | None = None
    pricebook_id: str | None = None
    status: str
    effective_date: date | None = None
    activation_status: ActivationStatus | None = None
    activation_error_code: str | None = None
    whmcs_order_id: int | None = None
    billing_address: Address = Field(default_factory=Address)
    sim: SimDetails = Field(default_factory=SimDetails)
    account: Account | None = None
    items: tuple[OrderItem, ...] = ()
