"""The business rules of fulfilment, as plain functions of domain values.

The workflow and the activities call these; unit tests cover them without any server. A rule
that refuses an order raises `OrderRejected` with the code an operator sees in Salesforce.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import date

from domain.billing import BillingLine, BillingOrder, PayMethod
from domain.errors import ErrorCode, OrderRejected
from domain.order import Account, ItemClass, OrderItem, OrderSnapshot, ProductType
from domain.sim import (
    EID_PATTERN,
    PHONE_NUMBER_PATTERN,
    ExistingLine,
    MnpTransfer,
    SimActivation,
    SimPhase,
    SimRequest,
    SimType,
)

# Salesforce `Billing_Cycle__c` picklist values -> WHMCS `billingcycle`. Compared case-folded
# and without spaces, hyphens or underscores, so "Semi-Annually" and "semiannually" agree.
_BILLING_CYCLES = {
    "free": "free",
    "onetime": "onetime",
    "monthly": "monthly",
    "quarterly": "quarterly",
    "semiannually": "semiannually",
    "annually": "annually",
    "yearly": "annually",
    "biennially": "biennially",
    "triennially": "triennially",
}
_REQUIRED_ADDRESS = (("street", "street"), ("city", "city"), ("postal_code", "postal code"))


def whmcs_billing_cycle(cycle: str | None) -> str | None:
    """The WHMCS billing cycle for a Salesforce one, or None when it has no WHMCS equivalent."""
    if not cycle:
        return None
    return _BILLING_CYCLES.get(re.sub(r"[\s_-]", "", cycle).casefold())


def needs_sim(item: OrderItem) -> bool:
    """A SIM product's service line needs a line at Freebit; its fees and add-ons do not."""
    product = item.product
    return product.product_type == ProductType.SIM and product.item_class in (
        None,
        ItemClass.SERVICE,
    )


def sim_items(order: OrderSnapshot) -> tuple[OrderItem, ...]:
    return tuple(item for item in order.items if needs_sim(item))


def order_problems(order: OrderSnapshot, *, today: date) -> list[tuple[ErrorCode, str]]:
    """Everything that keeps the order from being fulfilled, so an operator fixes it in one go.

    `today` is passed in (the workflow's deterministic clock) for the MNP expiry check.
    """
    problems: list[tuple[ErrorCode, str]] = []

    def refuse(code: ErrorCode, message: str) -> None:
        problems.append((code, message))

    if not order.items:
        refuse(ErrorCode.INVALID_ORDER, "the order has no items")
    if order.account is None:
        refuse(ErrorCode.INVALID_ORDER, "the order has no account")
    address = order.billing_address
    missing = [
        label for name, label in _REQUIRED_ADDRESS if not (getattr(address, name) or "").strip()
    ]
    if missing:
        refuse(ErrorCode.INVALID_ORDER, f"the billing address lacks {', '.join(missing)}")
    for item in order.items:
        label = f"item {item.product.name!r}"
        if item.quantity <= 0 or item.quantity != item.quantity.to_integral_value():
            refuse(ErrorCode.INVALID_ORDER, f"{label} has quantity {item.quantity}")
        if item.product.whmcs_product_id is None or item.product.whmcs_product_id <= 0:
            refuse(ErrorCode.PRODUCT_NOT_MAPPED, f"{label} has no WHMCS product id")
        if whmcs_billing_cycle(item.product.billing_cycle) is None:
            cycle = item.product.billing_cycle or "none"
            refuse(ErrorCode.PRODUCT_NOT_MAPPED, f"{label} has billing cycle {cycle!r}")
    problems.extend(_sim_problems(order, today=today))
    return problems


def check_fulfillable(order: OrderSnapshot, *, today: date) -> None:
    """Raise `OrderRejected` naming every problem; the code is that of the first kind found.

    Data errors of the order (`INVALID_ORDER`) come before mapping errors of the catalogue
    (`PRODUCT_NOT_MAPPED`): they are fixed by different people, and the order's own are first.
    """
    problems = order_problems(order, today=today)
    if not problems:
        return
    ranked = sorted(problems, key=lambda problem: problem[0] != ErrorCode.INVALID_ORDER)
    raise OrderRejected(ranked[0][0], "; ".join(message for _, message in ranked))


def _sim_problems(order: OrderSnapshot, *, today: date) -> list[tuple[ErrorCode, str]]:
    items = sim_items(order)
    if not items:
        return []
    problems: list[tuple[ErrorCode, str]] = []
    invalid = ErrorCode.INVALID_ORDER
    if len(items) > 1 or items[0].quantity != 1:
        problems.append((invalid, "a SIM order carries exactly one SIM line of quantity 1"))
    sim = order.sim
    if sim.sim_type not in tuple(SimType):
        problems.append((invalid, f"SIM type is {sim.sim_type or 'missing'}"))
    if not re.fullmatch(PHONE_NUMBER_PATTERN, sim.phone_number or ""):
        problems.append((invalid, "the SIM phone number is missing or not 11-14 digits"))
    if sim.sim_type == SimType.ESIM and not re.fullmatch(EID_PATTERN, sim.eid or ""):
        problems.append((invalid, "an eSIM order needs a 32-digit EID"))
    if not items[0].product.freebit_plan_code:
        problems.append(
            (ErrorCode.PRODUCT_NOT_MAPPED, f"item {items[0].product.name!r} has no Freebit plan")
        )
    if sim.mnp_reservation_number:
        if sim.mnp_expiry_date is None:
            problems.append((invalid, "the MNP reservation has no expiry date"))
        elif sim.mnp_expiry_date < today:
            problems.append(
                (invalid, f"the MNP reservation expired on {sim.mnp_expiry_date.isoformat()}")
            )
        person = sim.mnp_person
        absent = [name for name, value in person if value in (None, "")]
        if absent:
            problems.append((invalid, f"the MNP transfer lacks {', '.join(absent)}"))
        elif person.gender not in ("M", "F", "C"):
            problems.append((invalid, f"the MNP gender {person.gender!r} is not M, F or C"))
    return problems


def sim_request(order: OrderSnapshot) -> SimRequest | None:
    """The Freebit line an order needs, or None; call after `check_fulfillable` passed."""
    items = sim_items(order)
    if not items:
        return None
    sim = order.sim
    mnp: MnpTransfer | None = None
    if sim.mnp_reservation_number:
        person = sim.mnp_person
        mnp = MnpTransfer.model_validate(
            {
                "reservation_number": sim.mnp_reservation_number,
                "expiry_date": sim.mnp_expiry_date,
                **person.model_dump(),
            }
        )
    return SimRequest(
        sf_order_id=order.sf_order_id,
        sim_type=SimType(sim.sim_type or ""),
        phone_number=sim.phone_number or "",
        plan_code=items[0].product.freebit_plan_code or "",
        eid=sim.eid if sim.sim_type == SimType.ESIM else None,
        mnp=mnp,
    )


def resolve_whmcs_client_id(mapped: int | None, account: Account | None) -> int:
    """The WHMCS client: the portal's id mapping first, else the account's `WH_Account__c`."""
    if mapped is not None and mapped > 0:
        return mapped
    field = (account.whmcs_account_field or "").strip() if account else ""
    # Some orgs define the field as a number, so "1234.0" arrives too.
    match = re.fullmatch(r"([0-9]+)(?:\.0+)?", field)
    if match and int(match.group(1)) > 0:
        return int(match.group(1))
    who = account.sf_account_id if account else "the order's account"
    detail = f"WH_Account__c is {field!r}" if field else "WH_Account__c is empty"
    raise OrderRejected(
        ErrorCode.BILLING_CLIENT_NOT_LINKED, f"no WHMCS client is linked to {who} ({detail})"
    )


def has_payment_method(methods: Sequence[PayMethod]) -> bool:
    """Any pay method WHMCS lists counts, local or gateway-stored, card or bank account."""
    return len(methods) > 0


def payment_gateway(methods: Sequence[PayMethod], default: str) -> str:
    """AddOrder's `paymentmethod`: the gateway that holds the client's method, else ours."""
    for method in methods:
        if method.gateway_name:
            return method.gateway_name
    return default


def billing_lines(order: OrderSnapshot) -> tuple[BillingLine, ...]:
    """One WHMCS line per order item, marked with its Salesforce id and priced as sold."""
    lines = []
    for item in order.items:
        cycle = whmcs_billing_cycle(item.product.billing_cycle)
        if item.product.whmcs_product_id is None or cycle is None:
            raise OrderRejected(
                ErrorCode.PRODUCT_NOT_MAPPED, f"item {item.product.name!r} is not mapped to WHMCS"
            )
        lines.append(
            BillingLine(
                sf_order_item_id=item.sf_order_item_id,
                whmcs_product_id=item.product.whmcs_product_id,
                billing_cycle=cycle,
                quantity=int(item.quantity),
                price_override=item.unit_price,
            )
        )
    return tuple(lines)


def billing_order(order: OrderSnapshot, whmcs_client_id: int, payment_method: str) -> BillingOrder:
    return BillingOrder(
        sf_order_id=order.sf_order_id,
        whmcs_client_id=whmcs_client_id,
        payment_method=payment_method,
        lines=billing_lines(order),
    )


def services_by_item(
    lines: Sequence[BillingLine], services: Iterable[tuple[int, str | None]]
) -> dict[str, int] | None:
    """Match WHMCS services (id, marker field) to the order's items.

    None unless every line has a service marked with its item id: a partial match means the
    services found are not (all) of this order, and must not be taken for it.
    """
    by_marker: dict[str, int] = {}
    for service_id, marker in services:
        if marker and marker not in by_marker:
            by_marker[marker] = service_id
    matched = {line.sf_order_item_id: by_marker.get(line.sf_order_item_id) for line in lines}
    if any(service_id is None for service_id in matched.values()):
        return None
    return {item: service_id for item, service_id in matched.items() if service_id is not None}


def existing_line(request: SimRequest, line: SimActivation) -> ExistingLine:
    """What to do when Freebit says the number of `request` is already registered.

    Judged on what the line detail reports: its SIM type and, for an eSIM, its EID. A line of
    another type, or an eSIM line on another EID that has not failed, is another SIM's. A failed
    line of the same type is re-issued (Freebit re-registers a line that FAILED activation; it is
    not registered again as new), on the EID the order names now (an operator may have corrected
    it). Anything else is the line an earlier attempt registered.
    """
    if line.sim_type is not None and line.sim_type is not request.sim_type:
        return ExistingLine.CONFLICT
    if line.phase is SimPhase.FAILED:
        return ExistingLine.REISSUE
    if request.sim_type is SimType.ESIM and line.eid and request.eid and line.eid != request.eid:
        return ExistingLine.CONFLICT
    return ExistingLine.OURS
