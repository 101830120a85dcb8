"""The WHMCS order the engine creates for a Salesforce order, and what WHMCS made of it."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

# The product custom field that marks each WHMCS service with the Salesforce order item it was
# made for: the one durable marker WHMCS keeps, so an earlier AddOrder can be found after a
# lost reply (WHMCS has no idempotency key).
ORDER_ITEM_MARKER_FIELD = "Salesforce Order Item ID"


class PayMethod(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    # Text: WHMCS reports CreditCard, RemoteCreditCard (gateway-stored), BankAccount and
    # RemoteBankAccount, and a type it adds later is still a payment method.
    type: str
    description: str = ""
    gateway_name: str = ""


class BillingOrderStatus(StrEnum):
    PENDING = "Pending"
    ACTIVE = "Active"
    CANCELLED = "Cancelled"
    FRAUD = "Fraud"
    OTHER = "Other"


class BillingLine(BaseModel):
    """One WHMCS product line, marked with the Salesforce order item it bills."""

    model_config = ConfigDict(frozen=True)

    sf_order_item_id: str
    whmcs_product_id: int = Field(gt=0)
    billing_cycle: str
    quantity: int = Field(default=1, ge=1)
    price_override: Decimal | None = None


class BillingOrder(BaseModel):
    """What `create_billing_order` asks WHMCS for."""

    model_config = ConfigDict(frozen=True)

    sf_order_id: str
    whmcs_client_id: int = Field(gt=0)
    payment_method: str = Field(min_length=1)
    lines: tuple[BillingLine, ...] = Field(min_length=1)
    # An earlier create_billing_order of this fulfillment ran (an operator retried it): the
    # look for its order must be thorough (the workflow knows, whatever Postgres forgot).
    earlier_attempt: bool = False


class BillingOrderResult(BaseModel):
    """The WHMCS order made for a Salesforce order: ids, and each item's service."""

    model_config = ConfigDict(frozen=True)

    whmcs_order_id: int
    whmcs_invoice_id: int | None = None
    status: BillingOrderStatus = BillingOrderStatus.PENDING
    # Salesforce order item id -> WHMCS service id.
    service_ids: dict[str, int] = Field(default_factory=dict)
