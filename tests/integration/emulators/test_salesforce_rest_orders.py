"""Salesforce's Order activation rules, through simple-salesforce.

An Order is inserted as Draft only; the update that activates it may change only `Status`; an
activated order cannot be deleted, but it can be set back to Draft (the design re-activates
orders).
"""

from __future__ import annotations

from typing import Any

import pytest
from simple_salesforce.exceptions import SalesforceMalformedRequest

from tests.fixtures.salesforce_emulator import SalesforceEmulatorHandle

ORDERS = "/data/OrderChangeEvent"
V = "/services/data/v60.0"


def salesforce(h: SalesforceEmulatorHandle) -> Any:
    """simple-salesforce, typed Any: its sObject attributes are dynamic."""
    return h.client()


def error_of(caught: pytest.ExceptionInfo[SalesforceMalformedRequest]) -> dict[str, Any]:
    # simple-salesforce keeps the decoded JSON error list, whatever its annotation says.
    content: Any = caught.value.content
    [error] = content
    return dict(error)


def order_fields(ids: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "AccountId": ids["accounts"]["CUST-0001"],
        "Pricebook2Id": ids["pricebooks"]["portal"],
        "Status": status,
        "EffectiveDate": "2025-03-01",
    }


def test_an_order_is_inserted_as_draft_only(sf_emulator: SalesforceEmulatorHandle) -> None:
    ids = sf_emulator.seed_demo()
    sf = salesforce(sf_emulator)

    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Order.create(order_fields(ids, "Activated"))

    assert error_of(caught)["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    assert error_of(caught)["fields"] == ["Status"]
    assert sf.query("SELECT Id FROM Order")["totalSize"] == len(ids["orders"])
    assert sf.Order.create(order_fields(ids, "Draft"))["success"] is True


def test_the_activating_update_may_change_only_the_status(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    sf = salesforce(sf_emulator)
    order_id = ids["orders"]["esim"]

    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Order.update(order_id, {"Status": "Activated", "Activation_Status__c": "Activating"})

    assert error_of(caught)["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    assert error_of(caught)["fields"] == ["Activation_Status__c"]
    order = sf.Order.get(order_id)
    assert (order["Status"], order["Activation_Status__c"]) == ("Draft", "Pending")
    assert sf_emulator.bayeux().retained(ORDERS) == []
    # A field sent with the value it already has is no change: the activation goes through.
    assert sf.Order.update(order_id, {"Status": "Activated", "Activation_Status__c": "Pending"})
    # Once activated, the order's other fields are written separately (the engine's write-back).
    assert sf.Order.update(order_id, {"Activation_Status__c": "Activating"}) == 204


def test_an_activating_collection_update_refuses_only_the_records_that_change_more(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    sf = salesforce(sf_emulator)
    plain, extra = ids["orders"]["esim"], ids["orders"]["internet"]

    results = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={
            "allOrNone": False,
            "records": [
                {"attributes": {"type": "Order"}, "id": plain, "Status": "Activated"},
                {
                    "attributes": {"type": "Order"},
                    "id": extra,
                    "Status": "Activated",
                    "Description": "and a note",
                },
            ],
        },
    )

    assert results[0] == {"id": plain, "success": True, "errors": []}
    assert results[1]["success"] is False
    assert results[1]["errors"][0]["statusCode"] == "FIELD_INTEGRITY_EXCEPTION"
    assert results[1]["errors"][0]["fields"] == ["Description"]
    assert [sf.Order.get(i)["Status"] for i in (plain, extra)] == ["Activated", "Draft"]


def test_an_activated_order_cannot_be_deleted_but_a_draft_one_can(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    sf = salesforce(sf_emulator)
    activated, draft = ids["orders"]["esim"], ids["orders"]["internet"]
    sf.Order.update(activated, {"Status": "Activated"})

    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Order.delete(activated)

    assert error_of(caught)["errorCode"] == "DELETE_FAILED"
    assert sf.Order.get(activated)["Status"] == "Activated"
    assert sf.OrderItem.get(ids["order_items"]["esim"])["OrderId"] == activated
    assert sf.Order.delete(draft) == 204


def test_an_activated_order_can_be_set_back_to_draft_and_activated_again(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    sf = salesforce(sf_emulator)
    order_id = ids["orders"]["physical_sim"]
    sf.Order.update(order_id, {"Status": "Activated"})

    assert sf.Order.update(order_id, {"Status": "Draft", "Description": "fix the SIM number"})
    assert sf.Order.update(order_id, {"Status": "Activated"}) == 204

    statuses = [e["data"]["payload"].get("Status") for e in sf_emulator.bayeux().retained(ORDERS)]
    assert statuses == ["Activated", "Draft", "Activated"]


def test_every_demo_order_is_a_draft_that_a_status_only_update_activates(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    sf = salesforce(sf_emulator)

    for order_id in ids["orders"].values():
        assert sf.Order.get(order_id)["Status"] == "Draft"
        assert sf.Order.update(order_id, {"Status": "Activated"}) == 204
