"""sObject CRUD, upsert, composite and Salesforce's write rules, through simple-salesforce."""

from typing import Any

import pytest
from simple_salesforce.exceptions import (
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceResourceNotFound,
)


def _standard_entry(sf: Any, code: str) -> str:
    query = (
        "SELECT Id FROM PricebookEntry WHERE Pricebook2.IsStandard = true "
        "AND Product2.ProductCode = '{}'"
    )
    return str(sf.query(query.format(code))["records"][0]["Id"])


def _error(caught: Any) -> dict[str, Any]:
    [error] = caught.value.content
    return dict(error)


def _events(h: Any, channel: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = h.control("GET", f"events?channel={channel}")["events"]
    return events


def test_create_get_update_delete(sf_emulator):
    sf = sf_emulator.client()
    created = sf.Account.create({"Name": "Acme KK", "Customer_Number__c": "C-100"})
    assert created["success"] is True and created["errors"] == []
    account_id = created["id"]
    assert len(account_id) == 18 and account_id.startswith("001")
    record = sf.Account.get(account_id[:15])
    assert record["attributes"] == {
        "type": "Account",
        "url": f"/services/data/v60.0/sobjects/Account/{account_id}",
    }
    assert record["Name"] == "Acme KK" and record["WH_Account__c"] is None
    assert record["CreatedDate"].endswith("+0000") and record["IsDeleted"] is False
    assert sf.Account.update(account_id, {"WH_Account__c": "42"}) == 204
    partial = sf.Account.get(account_id, params={"fields": "Name,WH_Account__c"})
    assert set(partial) == {"attributes", "Name", "WH_Account__c"}
    assert partial["WH_Account__c"] == "42"
    assert sf.Account.delete(account_id) == 204
    with pytest.raises(SalesforceResourceNotFound) as caught:
        sf.Account.get(account_id)
    assert _error(caught) == {
        "errorCode": "NOT_FOUND",
        "message": "The requested resource does not exist",
    }


def test_order_numbers_are_auto_numbered_and_read_only(sf_emulator):
    ids = sf_emulator.seed_demo()
    sf = sf_emulator.client()
    order = sf.Order.get(ids["orders"]["esim"])
    assert order["OrderNumber"] == "00000100"
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Order.update(order["Id"], {"OrderNumber": "1"})
    assert _error(caught)["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert _error(caught)["fields"] == ["OrderNumber"]


def test_upsert_by_external_id_creates_then_updates(sf_emulator):
    sf = sf_emulator.client()
    created = sf.Account.upsert("Customer_Number__c/C-7", {"Name": "Seven"}, raw_response=True)
    assert created.status_code == 201
    assert created.json()["created"] is True
    updated = sf.Account.upsert("Customer_Number__c/C-7", {"Name": "Seven KK"}, raw_response=True)
    assert updated.status_code == 200
    assert updated.json() == {
        "id": created.json()["id"],
        "success": True,
        "errors": [],
        "created": False,
    }
    assert sf.Account.get_by_custom_id("Customer_Number__c", "C-7")["Name"] == "Seven KK"
    with pytest.raises(SalesforceResourceNotFound) as caught:
        sf.Account.upsert("Name/Seven", {"Phone": "1"})
    assert "Provided external ID field does not exist" in _error(caught)["message"]


def test_upsert_matching_two_records_answers_300(sf_emulator):
    sf = sf_emulator.client()
    sf_emulator.control(
        "POST",
        "seed",
        {
            "records": [
                {"attributes": {"type": "Account"}, "Name": "A", "Customer_Number__c": "DUP"},
                {"attributes": {"type": "Account"}, "Name": "B", "Customer_Number__c": "DUP"},
            ]
        },
    )
    with pytest.raises(SalesforceMoreThanOneRecord) as caught:
        sf.Account.upsert("Customer_Number__c/DUP", {"Name": "C"})
    assert len(caught.value.content) == 2


def test_required_unknown_and_restricted_picklist_errors(sf_emulator):
    ids = sf_emulator.seed_demo()
    sf = sf_emulator.client()
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Order.create({"Status": "Draft"})
    assert _error(caught) == {
        "message": "Required fields are missing: [AccountId, EffectiveDate]",
        "errorCode": "REQUIRED_FIELD_MISSING",
        "fields": ["AccountId", "EffectiveDate"],
    }
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Account.create({"Name": "X", "Colour__c": "red"})
    assert _error(caught)["errorCode"] == "INVALID_FIELD"
    assert "No such column 'Colour__c' on sobject of type Account" in _error(caught)["message"]
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Order.update(ids["orders"]["esim"], {"Activation_Status__c": "Exploded"})
    assert _error(caught) == {
        "message": "Activation Status: bad value for restricted picklist field: Exploded",
        "errorCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        "fields": ["Activation_Status__c"],
    }


def test_an_order_item_must_come_from_the_orders_price_book(sf_emulator):
    ids = sf_emulator.seed_demo()
    sf = sf_emulator.client()
    item = {
        "OrderId": ids["orders"]["internet"],
        "PricebookEntryId": _standard_entry(sf, "VPN-BASIC"),
        "Quantity": 1,
        "UnitPrice": 550,
    }
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.OrderItem.create(item)
    error = _error(caught)
    assert error["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    assert "pricebook entry is in a different pricebook" in error["message"]
    item["PricebookEntryId"] = ids["pricebook_entries"]["VPN-BASIC"]
    created = sf.OrderItem.create(item)
    line = sf.OrderItem.get(created["id"])
    assert line["Product2Id"] == ids["products"]["VPN-BASIC"]
    assert line["TotalPrice"] == 550.0
    assert sf.Order.get(ids["orders"]["internet"])["TotalAmount"] == 4980.0 + 550.0


def test_a_custom_price_needs_a_standard_price_first(sf_emulator):
    ids = sf_emulator.seed_demo()
    sf = sf_emulator.client()
    product = sf.Product2.create({"Name": "New plan", "Product_Type__c": "SIM"})
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.PricebookEntry.create(
            {
                "Pricebook2Id": ids["pricebooks"]["portal"],
                "Product2Id": product["id"],
                "UnitPrice": 1,
            }
        )
    assert _error(caught)["errorCode"] == "STANDARD_PRICE_NOT_DEFINED"


def test_composite_with_references_commits_as_one_transaction(sf_emulator):
    ids = sf_emulator.seed_demo()
    sf = sf_emulator.client()
    reply = sf.restful(
        "composite",
        method="POST",
        json={
            "allOrNone": True,
            "compositeRequest": [
                {
                    "method": "POST",
                    "url": "/services/data/v60.0/sobjects/Order",
                    "referenceId": "newOrder",
                    "body": {
                        "AccountId": ids["accounts"]["CUST-0002"],
                        "Pricebook2Id": ids["pricebooks"]["portal"],
                        "Status": "Draft",
                        "EffectiveDate": "2025-02-01",
                    },
                },
                {
                    "method": "POST",
                    "url": "/services/data/v60.0/sobjects/OrderItem",
                    "referenceId": "line",
                    "body": {
                        "OrderId": "@{newOrder.id}",
                        "PricebookEntryId": ids["pricebook_entries"]["FIBER-1G"],
                        "Quantity": 1,
                        "UnitPrice": 4980,
                    },
                },
                {
                    "method": "GET",
                    "url": "/services/data/v60.0/query/?q=SELECT+Id,+(SELECT+Id+FROM+OrderItems)"
                    "+FROM+Order+WHERE+Id+=+'@{newOrder.id}'",
                    "referenceId": "check",
                },
            ],
        },
    )
    statuses = [r["httpStatusCode"] for r in reply["compositeResponse"]]
    assert statuses == [201, 201, 200]
    check = reply["compositeResponse"][2]["body"]
    assert check["records"][0]["OrderItems"]["totalSize"] == 1
    events = _events(sf_emulator, "/data/ChangeEvents")
    headers = [e["data"]["payload"]["ChangeEventHeader"] for e in events]
    assert [(h["entityName"], h["changeType"]) for h in headers] == [
        ("Order", "CREATE"),
        ("OrderItem", "CREATE"),
    ]
    assert len({h["transactionKey"] for h in headers}) == 1
    assert [h["sequenceNumber"] for h in headers] == [1, 2]


def test_composite_all_or_none_rolls_everything_back(sf_emulator):
    sf = sf_emulator.client()
    reply = sf.restful(
        "composite",
        method="POST",
        json={
            "allOrNone": True,
            "compositeRequest": [
                {
                    "method": "POST",
                    "url": "/services/data/v60.0/sobjects/Account",
                    "referenceId": "good",
                    "body": {"Name": "Kept?"},
                },
                {
                    "method": "POST",
                    "url": "/services/data/v60.0/sobjects/Account",
                    "referenceId": "bad",
                    "body": {"Phone": "no name"},
                },
            ],
        },
    )
    good, bad = reply["compositeResponse"]
    assert bad["httpStatusCode"] == 400
    assert bad["body"][0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert good["httpStatusCode"] == 400
    assert good["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert sf.query("SELECT Id FROM Account")["totalSize"] == 0
    assert _events(sf_emulator, "/data/ChangeEvents") == []


def test_composite_sobjects_creates_and_updates_in_batches(sf_emulator):
    sf = sf_emulator.client()
    created = sf.restful(
        "composite/sobjects",
        method="POST",
        json={
            "allOrNone": False,
            "records": [
                {"attributes": {"type": "Account"}, "Name": "One"},
                {"attributes": {"type": "Account"}, "Phone": "missing name"},
            ],
        },
    )
    assert created[0]["success"] is True
    assert created[1]["success"] is False
    assert created[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    updated = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={
            "records": [{"attributes": {"type": "Account"}, "Id": created[0]["id"], "Name": "Uno"}]
        },
    )
    assert updated == [{"id": created[0]["id"], "success": True, "errors": []}]
    assert sf.Account.get(created[0]["id"])["Name"] == "Uno"


def test_rest_changes_publish_change_events_with_the_salesforce_header(sf_emulator):
    ids = sf_emulator.seed_demo()
    sf = sf_emulator.client()
    order_id = ids["orders"]["physical_sim"]
    sf.Order.update(
        order_id, {"Status": "Activated"}, headers={"Sforce-Call-Options": "client=portal"}
    )
    sf.Account.update(ids["accounts"]["CUST-0001"], {"Phone": "0312345678"})
    [event] = _events(sf_emulator, "/data/OrderChangeEvent")
    payload = event["data"]["payload"]
    header = payload["ChangeEventHeader"]
    assert header["entityName"] == "Order"
    assert header["changeType"] == "UPDATE"
    assert header["recordIds"] == [order_id]
    assert header["changedFields"] == [
        "Status",
        "ActivatedDate",
        "ActivatedById",
        "LastModifiedDate",
    ]
    assert header["changeOrigin"] == "com/salesforce/api/rest/60.0;client=portal"
    assert header["commitUser"].startswith("005")
    assert isinstance(header["commitTimestamp"], int)
    assert payload["Status"] == "Activated"
    assert payload["LastModifiedDate"].endswith("Z")
    assert "BillingCity" not in payload
    assert _events(sf_emulator, "/data/AccountChangeEvent") == []


def test_platform_events_are_published_on_their_channel(sf_emulator):
    sf = sf_emulator.client()
    reply = sf.Account_Eligibility_Update__e.create({"Account_Id__c": "001000000000001AAA"})
    assert reply["success"] is True and reply["id"].startswith("e00")
    [event] = _events(sf_emulator, "/event/Account_Eligibility_Update__e")
    payload = event["data"]["payload"]
    assert payload["Account_Id__c"] == "001000000000001AAA"
    assert payload["CreatedById"].startswith("005")
    with pytest.raises(SalesforceMalformedRequest):
        sf.Account_Eligibility_Update__e.create({"Nope__c": "x"})


def test_a_record_read_has_the_flat_address_fields_and_the_compound_address(sf_emulator):
    ids = sf_emulator.seed_demo()
    sf = sf_emulator.client()
    order_id = ids["orders"]["esim"]

    order = sf.Order.get(order_id)
    only_address = sf.Order.get(order_id, params={"fields": "BillingAddress"})
    sf.Order.update(ids["orders"]["internet"], {f"Billing{p}": None for p in ("Street", "City")})
    sf.Order.update(
        ids["orders"]["internet"],
        {f"Billing{p}": None for p in ("State", "PostalCode", "Country")},
    )

    assert order["BillingStreet"] == "1-2-3 Shibuya" and order["BillingCity"] == "Shibuya-ku"
    assert order["BillingAddress"] == {
        "city": "Shibuya-ku",
        "country": "Japan",
        "geocodeAccuracy": None,
        "latitude": None,
        "longitude": None,
        "postalCode": "150-0002",
        "state": "Tokyo",
        "street": "1-2-3 Shibuya",
    }
    assert set(only_address) == {"attributes", "BillingAddress"}
    assert only_address["BillingAddress"] == order["BillingAddress"]
    assert sf.Order.get(ids["orders"]["internet"])["BillingAddress"] is None
