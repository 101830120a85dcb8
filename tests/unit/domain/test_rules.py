"""The business rules, on plain domain values: no server, no client."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from domain.billing import BillingLine, PayMethod
from domain.errors import ErrorCode, OrderRejected
from domain.order import Account, Address, MnpPerson, OrderItem, OrderSnapshot, Product, SimDetails
from domain.rules import (
    billing_order,
    check_fulfillable,
    existing_line,
    has_payment_method,
    needs_sim,
    payment_gateway,
    resolve_whmcs_client_id,
    services_by_item,
    sim_request,
    whmcs_billing_cycle,
)
from domain.sim import ExistingLine, SimActivation, SimPhase, SimRequest, SimType

TODAY = date(2026, 11, 27)
ORDER_ID = "801000000000001AAA"
EID = "89049032000001000000012345678901"


def product(**overrides: Any) -> Product:
    fields: dict[str, Any] = {
        "sf_product_id": "01t000000000001AAA",
        "name": "Fibre 1G",
        "whmcs_product_id": 11,
        "product_type": "Internet",
        "item_class": "Service",
        "billing_cycle": "Monthly",
    }
    return Product(**(fields | overrides))


def sim_product(**overrides: Any) -> Product:
    return product(
        **{
            "name": "SIM 20GB",
            "whmcs_product_id": 21,
            "product_type": "SIM",
            "freebit_plan_code": "PLAN20G",
        }
        | overrides
    )


def item(prod: Product, index: int = 1, quantity: str = "1") -> OrderItem:
    return OrderItem(
        sf_order_item_id=f"802000000000{index:03d}AAA",
        product=prod,
        quantity=Decimal(quantity),
        unit_price=Decimal("4980"),
    )


def order(*items: OrderItem, sim: SimDetails | None = None, **overrides: Any) -> OrderSnapshot:
    fields: dict[str, Any] = {
        "sf_order_id": ORDER_ID,
        "status": "Activated",
        "account": Account(
            sf_account_id="001000000000001AAA", name="Yamada Taro", whmcs_account_field="42"
        ),
        "billing_address": Address(
            street="1-2-3 Shibuya", city="Shibuya-ku", state="Tokyo", postal_code="150-0002"
        ),
        "items": items or (item(product()),),
        "sim": sim or SimDetails(),
    }
    return OrderSnapshot(**(fields | overrides))


def esim(**overrides: Any) -> SimDetails:
    return SimDetails(
        **({"sim_type": "eSIM", "eid": EID, "phone_number": "09012345678"} | overrides)
    )


MNP_PERSON = MnpPerson(
    last_name_kanji="山田",
    first_name_kanji="太郎",
    last_name_kana="ヤマダ",
    first_name_kana="タロウ",
    gender="M",
    birthday=date(1990, 4, 1),
)


def rejection(snapshot: OrderSnapshot) -> OrderRejected:
    with pytest.raises(OrderRejected) as info:
        check_fulfillable(snapshot, today=TODAY)
    return info.value


def test_a_complete_internet_order_is_fulfillable_and_needs_no_sim() -> None:
    snapshot = order()
    check_fulfillable(snapshot, today=TODAY)
    assert sim_request(snapshot) is None


def test_an_order_without_items_is_invalid() -> None:
    snapshot = order().model_copy(update={"items": ()})
    assert rejection(snapshot).code == ErrorCode.INVALID_ORDER


def test_every_problem_is_named_at_once_and_order_data_comes_before_mapping() -> None:
    unmapped = item(product(whmcs_product_id=None))
    snapshot = order(unmapped, billing_address=Address(city="Shibuya-ku"))
    error = rejection(snapshot)
    assert error.code == ErrorCode.INVALID_ORDER
    assert "street" in error.message and "postal code" in error.message
    assert "no WHMCS product id" in error.message


def test_an_item_without_a_whmcs_product_or_a_known_cycle_is_not_mapped() -> None:
    assert rejection(order(item(product(whmcs_product_id=None)))).code == (
        ErrorCode.PRODUCT_NOT_MAPPED
    )
    error = rejection(order(item(product(billing_cycle="Fortnightly"))))
    assert error.code == ErrorCode.PRODUCT_NOT_MAPPED
    assert "Fortnightly" in error.message


@pytest.mark.parametrize(
    ("salesforce", "whmcs"),
    [
        ("Monthly", "monthly"),
        ("Onetime", "onetime"),
        ("One-time", "onetime"),
        ("Semi-Annually", "semiannually"),
        ("Annually", "annually"),
        ("Fortnightly", None),
        (None, None),
    ],
)
def test_billing_cycles_map_spelling_insensitively(
    salesforce: str | None, whmcs: str | None
) -> None:
    assert whmcs_billing_cycle(salesforce) == whmcs


def test_only_a_sim_products_service_line_needs_a_sim() -> None:
    assert needs_sim(item(sim_product()))
    assert needs_sim(item(sim_product(item_class=None)))
    assert not needs_sim(item(sim_product(item_class="Activation")))
    assert not needs_sim(item(product()))


def test_an_esim_order_becomes_one_freebit_request_with_its_eid_and_plan() -> None:
    snapshot = order(item(sim_product()), item(sim_product(item_class="Activation"), 2), sim=esim())
    check_fulfillable(snapshot, today=TODAY)
    request = sim_request(snapshot)
    assert request is not None
    assert (request.sim_type, request.eid, request.plan_code, request.phone_number) == (
        SimType.ESIM,
        EID,
        "PLAN20G",
        "09012345678",
    )
    assert request.mnp is None


@pytest.mark.parametrize(
    ("sim", "phrase"),
    [
        (esim(eid=None), "32-digit EID"),
        (esim(eid="8904903200000100000001234567890"), "32-digit EID"),
        (esim(phone_number="090-1234-5678"), "phone number"),
        # Full-width digits look like a number to `\d` but not to Freebit.
        (esim(phone_number="".join(chr(0xFF10 + int(d)) for d in "09012345678")), "phone number"),
        (esim(sim_type=None), "SIM type"),
    ],
)
def test_a_sim_order_without_the_sim_data_it_needs_is_invalid(sim: SimDetails, phrase: str) -> None:
    error = rejection(order(item(sim_product()), sim=sim))
    assert error.code == ErrorCode.INVALID_ORDER
    assert phrase in error.message


def test_a_physical_sim_needs_no_eid() -> None:
    snapshot = order(item(sim_product()), sim=esim(sim_type="Physical SIM", eid=None))
    check_fulfillable(snapshot, today=TODAY)
    request = sim_request(snapshot)
    assert request is not None and request.eid is None and request.sim_type == SimType.PHYSICAL


def test_a_sim_order_carries_exactly_one_line() -> None:
    two = order(item(sim_product()), item(sim_product(), 2), sim=esim())
    assert "exactly one SIM line" in rejection(two).message
    double = order(item(sim_product(), quantity="2"), sim=esim())
    assert "exactly one SIM line" in rejection(double).message


def test_a_sim_product_without_a_freebit_plan_is_not_mapped() -> None:
    error = rejection(order(item(sim_product(freebit_plan_code=None)), sim=esim()))
    assert error.code == ErrorCode.PRODUCT_NOT_MAPPED


def test_an_mnp_transfer_needs_an_unexpired_reservation_and_the_person() -> None:
    mnp = esim(
        mnp_reservation_number="1234567890",
        mnp_expiry_date=date(2026, 12, 10),
        mnp_person=MNP_PERSON,
    )
    snapshot = order(item(sim_product()), sim=mnp)
    check_fulfillable(snapshot, today=TODAY)
    request = sim_request(snapshot)
    assert request is not None and request.mnp is not None
    assert request.mnp.reservation_number == "1234567890"
    assert request.mnp.first_name_kana == "タロウ"

    expired = mnp.model_copy(update={"mnp_expiry_date": date(2026, 11, 26)})
    assert "expired on 2026-11-26" in rejection(order(item(sim_product()), sim=expired)).message
    anonymous = mnp.model_copy(update={"mnp_person": MnpPerson(gender="M")})
    message = rejection(order(item(sim_product()), sim=anonymous)).message
    assert "last_name_kana" in message and "birthday" in message


@pytest.mark.parametrize(
    ("mapped", "field", "expected"),
    [(7, "42", 7), (None, "42", 42), (None, " 42.0 ", 42), (0, "42", 42)],
)
def test_the_portal_mapping_wins_over_the_account_field(
    mapped: int | None, field: str, expected: int
) -> None:
    account = Account(sf_account_id="001000000000001AAA", name="A", whmcs_account_field=field)
    assert resolve_whmcs_client_id(mapped, account) == expected


@pytest.mark.parametrize("field", [None, "", "abc", "0", "-3", "12a"])
def test_an_account_without_a_usable_whmcs_id_is_not_linked(field: str | None) -> None:
    account = Account(sf_account_id="001000000000001AAA", name="A", whmcs_account_field=field)
    with pytest.raises(OrderRejected) as info:
        resolve_whmcs_client_id(None, account)
    assert info.value.code == ErrorCode.BILLING_CLIENT_NOT_LINKED
    assert "001000000000001AAA" in info.value.message


@pytest.mark.parametrize(
    "kind", ["CreditCard", "RemoteCreditCard", "BankAccount", "RemoteBankAccount"]
)
def test_every_kind_of_pay_method_counts(kind: str) -> None:
    assert has_payment_method([PayMethod(id=1, type=kind)])
    assert not has_payment_method([])


def test_add_order_uses_the_gateway_that_holds_the_clients_method() -> None:
    stored = [PayMethod(id=1, type="RemoteCreditCard", gateway_name="stripe")]
    assert payment_gateway(stored, "banktransfer") == "stripe"
    assert payment_gateway([PayMethod(id=2, type="BankAccount")], "banktransfer") == "banktransfer"


def test_each_item_becomes_a_marked_billing_line_priced_as_sold() -> None:
    snapshot = order(item(product()), item(sim_product(billing_cycle="Onetime"), 2), sim=esim())
    billing = billing_order(snapshot, 42, "stripe")
    assert [
        (line.sf_order_item_id, line.whmcs_product_id, line.billing_cycle) for line in billing.lines
    ] == [
        ("802000000000001AAA", 11, "monthly"),
        ("802000000000002AAA", 21, "onetime"),
    ]
    assert billing.lines[0].price_override == Decimal("4980")


def test_services_match_items_only_when_every_item_has_its_marked_service() -> None:
    lines = [
        BillingLine(sf_order_item_id="A", whmcs_product_id=1, billing_cycle="monthly"),
        BillingLine(sf_order_item_id="B", whmcs_product_id=2, billing_cycle="monthly"),
    ]
    assert services_by_item(lines, [(10, "A"), (11, "B"), (12, None)]) == {"A": 10, "B": 11}
    # A service of another order (or of half an earlier attempt) is not taken for this one.
    assert services_by_item(lines, [(10, "A"), (12, "C")]) is None


_FAILED = SimPhase.FAILED
_ACTIVE = SimPhase.ACTIVE


@pytest.mark.parametrize(
    ("request_type", "request_eid", "line_type", "line_eid", "phase", "decision"),
    [
        # An earlier attempt's line, its reply lost: done.
        (SimType.ESIM, "1" * 32, SimType.ESIM, "1" * 32, SimPhase.IN_PROGRESS, ExistingLine.OURS),
        (SimType.PHYSICAL, None, SimType.PHYSICAL, None, _ACTIVE, ExistingLine.OURS),
        # Its activation failed: re-issue it, on the EID the order names now.
        (SimType.ESIM, "1" * 32, SimType.ESIM, "1" * 32, _FAILED, ExistingLine.REISSUE),
        (SimType.ESIM, "2" * 32, SimType.ESIM, "1" * 32, _FAILED, ExistingLine.REISSUE),
        (SimType.PHYSICAL, None, SimType.PHYSICAL, None, _FAILED, ExistingLine.REISSUE),
        # Another SIM's line: a type or a live EID of its own.
        (SimType.ESIM, "1" * 32, SimType.PHYSICAL, None, _ACTIVE, ExistingLine.CONFLICT),
        (SimType.ESIM, "1" * 32, SimType.PHYSICAL, None, _FAILED, ExistingLine.CONFLICT),
        (SimType.ESIM, "2" * 32, SimType.ESIM, "1" * 32, _ACTIVE, ExistingLine.CONFLICT),
    ],
)
def test_a_registered_number_is_ours_reissued_or_another_sims_by_its_line_detail(
    request_type: SimType,
    request_eid: str | None,
    line_type: SimType,
    line_eid: str | None,
    phase: SimPhase,
    decision: ExistingLine,
) -> None:
    request = SimRequest(
        sf_order_id="801000000000001AAA",
        sim_type=request_type,
        phone_number="09012345678",
        plan_code="PASI_10G",
        eid=request_eid,
    )
    line = SimActivation(
        phone_number="09012345678", phase=phase, state=phase.value, sim_type=line_type, eid=line_eid
    )
    assert existing_line(request, line) is decision
