"""Change events as a Streaming API subscriber receives them, for the REST writes that cause them.

Each test writes through simple-salesforce and reads what a CometD subscriber gets on the wire
(plain-HTTP Bayeux, replaying everything retained), against what production does that a
stand-in easily gets wrong: one event per record per transaction with the first change
type and the committed values; one event for the same change to several records; `changeOrigin`
with a client only when the call named one; nested compound address fields; nulled fields as
null in the body and no `nulledFields`/`diffFields` in the header.
"""

from __future__ import annotations

from typing import Any

from tests.fixtures.salesforce_emulator import SalesforceEmulatorHandle

ORDERS = "/data/OrderChangeEvent"
ORDER_ITEMS = "/data/OrderItemChangeEvent"
ALL_CHANGES = "/data/ChangeEvents"
V = "/services/data/v60.0"
ADDRESS = {
    "BillingStreet": "4-5-6 Minato",
    "BillingCity": "Minato-ku",
    "BillingState": "Tokyo",
    "BillingPostalCode": "105-0011",
    "BillingCountry": "Japan",
}


def header(event: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = event["data"]["payload"]["ChangeEventHeader"]
    return value


def body(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event["data"]["payload"].items() if k != "ChangeEventHeader"}


def salesforce(h: SalesforceEmulatorHandle) -> Any:
    """simple-salesforce, typed Any: its sObject attributes are dynamic."""
    return h.client()


def draft_order(ids: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "AccountId": ids["accounts"]["CUST-0002"],
        "Pricebook2Id": ids["pricebooks"]["portal"],
        "Status": "Draft",
        "EffectiveDate": "2025-02-01",
        **fields,
    }


def test_create_then_activate_in_one_composite_is_one_create_carrying_the_final_values(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    reply = salesforce(sf_emulator).restful(
        "composite",
        method="POST",
        json={
            "allOrNone": True,
            "compositeRequest": [
                {
                    "method": "POST",
                    "url": f"{V}/sobjects/Order",
                    "referenceId": "order",
                    "body": draft_order(ids),
                },
                {
                    "method": "PATCH",
                    "url": f"{V}/sobjects/Order/@{{order.id}}",
                    "referenceId": "activate",
                    "body": {"Status": "Activated"},
                },
            ],
        },
    )
    assert [r["httpStatusCode"] for r in reply["compositeResponse"]] == [201, 204]
    order_id = reply["compositeResponse"][0]["body"]["id"]

    [event] = sf_emulator.bayeux().retained(ORDERS)

    assert header(event)["changeType"] == "CREATE"
    assert header(event)["recordIds"] == [order_id]
    assert header(event)["changedFields"] == []
    assert body(event)["Status"] == "Activated"
    assert body(event)["AccountId"] == ids["accounts"]["CUST-0002"]


def test_two_updates_of_one_record_in_one_transaction_are_one_update_listing_both(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    order_id = ids["orders"]["internet"]
    salesforce(sf_emulator).restful(
        "composite",
        method="POST",
        json={
            "allOrNone": True,
            "compositeRequest": [
                {
                    "method": "PATCH",
                    "url": f"{V}/sobjects/Order/{order_id}",
                    "referenceId": "first",
                    "body": {"Description": "draft note", "Activation_Status__c": "Activating"},
                },
                {
                    "method": "PATCH",
                    "url": f"{V}/sobjects/Order/{order_id}",
                    "referenceId": "second",
                    "body": {"Description": "final note"},
                },
            ],
        },
    )

    [event] = sf_emulator.bayeux().retained(ORDERS)

    assert header(event)["changeType"] == "UPDATE"
    assert set(header(event)["changedFields"]) == {
        "Description",
        "Activation_Status__c",
        "LastModifiedDate",
    }
    assert body(event)["Description"] == "final note"
    assert body(event)["Activation_Status__c"] == "Activating"


def test_a_collection_update_making_the_same_change_to_two_orders_is_one_event_with_both_ids(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    first, second, third = (ids["orders"][k] for k in ("esim", "internet", "physical_sim"))
    results = salesforce(sf_emulator).restful(
        "composite/sobjects",
        method="PATCH",
        json={
            "allOrNone": True,
            "records": [
                {"attributes": {"type": "Order"}, "id": first, "Status": "Activated"},
                {"attributes": {"type": "Order"}, "id": third, "Description": "other change"},
                {"attributes": {"type": "Order"}, "id": second, "Status": "Activated"},
            ],
        },
    )
    assert [r["success"] for r in results] == [True, True, True]

    same, other = sf_emulator.bayeux().retained(ORDERS)

    assert header(same)["recordIds"] == [first, second]
    assert header(same)["changedFields"] == [
        "Status",
        "ActivatedDate",
        "ActivatedById",
        "LastModifiedDate",
    ]
    assert body(same)["Status"] == "Activated"
    assert header(other)["recordIds"] == [third]
    assert header(other)["changedFields"] == ["Description", "LastModifiedDate"]
    # Two events of one transaction: one key, numbered in order.
    assert header(same)["transactionKey"] == header(other)["transactionKey"]
    assert [header(same)["sequenceNumber"], header(other)["sequenceNumber"]] == [1, 2]


def test_deleting_an_order_deletes_its_items_in_one_event(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    sf = salesforce(sf_emulator)
    order_id = ids["orders"]["internet"]
    extra = sf.OrderItem.create(
        {
            "OrderId": order_id,
            "PricebookEntryId": ids["pricebook_entries"]["VPN-BASIC"],
            "Quantity": 1,
            "UnitPrice": 550,
        }
    )["id"]
    bayeux = sf_emulator.bayeux()
    bayeux.handshake()
    bayeux.subscribe(ALL_CHANGES, replay=-1)
    bayeux.connect()

    sf.Order.delete(order_id)
    events = [m for m in bayeux.connect() if m["channel"] == ALL_CHANGES]

    by_entity = {header(e)["entityName"]: e for e in events}
    assert len(events) == 2 and set(by_entity) == {"Order", "OrderItem"}
    deleted_items, deleted_order = by_entity["OrderItem"], by_entity["Order"]

    assert header(deleted_items)["entityName"] == "OrderItem"
    assert header(deleted_items)["changeType"] == "DELETE"
    assert sorted(header(deleted_items)["recordIds"]) == sorted(
        [ids["order_items"]["internet"], extra]
    )
    assert body(deleted_items) == {}
    assert header(deleted_order)["recordIds"] == [order_id]


def test_change_origin_names_a_client_only_when_the_call_sent_one(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    sf = salesforce(sf_emulator)
    sf.Order.update(ids["orders"]["esim"], {"Description": "no call options"})
    sf.Order.update(
        ids["orders"]["internet"],
        {"Description": "named"},
        headers={"Sforce-Call-Options": "client=order-fulfillment"},
    )
    sf.Order.update(
        ids["orders"]["physical_sim"],
        {"Description": "other options only"},
        headers={"Sforce-Call-Options": "defaultNamespace=acme"},
    )

    anonymous, named, other = sf_emulator.bayeux().retained(ORDERS)

    assert header(anonymous)["changeOrigin"] == "com/salesforce/api/rest/60.0"
    assert header(named)["changeOrigin"] == "com/salesforce/api/rest/60.0;client=order-fulfillment"
    assert header(other)["changeOrigin"] == "com/salesforce/api/rest/60.0"


def test_the_billing_address_is_nested_and_its_changes_are_listed_by_component(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    sf = salesforce(sf_emulator)
    order_id = sf.Order.create(draft_order(ids, **ADDRESS))["id"]
    sf.Order.update(order_id, {"BillingCity": "Chiyoda-ku", "BillingState": None})

    created, updated = sf_emulator.bayeux().retained(ORDERS)

    assert body(created)["BillingAddress"] == {
        "Street": "4-5-6 Minato",
        "City": "Minato-ku",
        "State": "Tokyo",
        "PostalCode": "105-0011",
        "Country": "Japan",
    }
    assert not set(ADDRESS) & set(body(created))
    assert header(updated)["changedFields"] == [
        "BillingAddress.City",
        "BillingAddress.State",
        "LastModifiedDate",
    ]
    assert body(updated)["BillingAddress"] == {"City": "Chiyoda-ku", "State": None}
    assert not set(ADDRESS) & set(body(updated))


def test_a_nulled_field_is_null_in_the_body_and_the_header_has_no_pub_sub_only_fields(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    order_id = ids["orders"]["esim"]
    salesforce(sf_emulator).Order.update(order_id, {"EID__c": None, "Description": "no eSIM"})

    [event] = sf_emulator.bayeux().retained(ORDERS)

    assert header(event)["changedFields"] == ["EID__c", "Description", "LastModifiedDate"]
    assert body(event)["EID__c"] is None and body(event)["Description"] == "no eSIM"
    assert "nulledFields" not in header(event) and "diffFields" not in header(event)


def test_a_create_carries_only_non_empty_fields_and_no_pub_sub_only_header_fields(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    salesforce(sf_emulator).Order.create(draft_order(ids))

    [event] = sf_emulator.bayeux().retained(ORDERS)

    assert all(value is not None for value in body(event).values())
    assert "BillingAddress" not in body(event) and "Description" not in body(event)
    assert set(header(event)) == {
        "entityName",
        "recordIds",
        "changeType",
        "changedFields",
        "changeOrigin",
        "transactionKey",
        "sequenceNumber",
        "commitTimestamp",
        "commitNumber",
        "commitUser",
    }
