"""An org with history: orders' activation stamps, and seeding records with a past.

Through simple-salesforce and the control API: the save that activates an order sets its
read-only `ActivatedDate` and `ActivatedById` and lists them in the change event; seeding (no
change events) may create records and update existing ones with audit fields (`CreatedDate`,
`LastModifiedDate`, an order's `ActivatedDate`), as a data load with "Set Audit Fields upon
Record Creation" does, and SOQL filters and counts by them.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from simple_salesforce.exceptions import SalesforceMalformedRequest

from tests.fixtures.salesforce_emulator import SalesforceEmulatorHandle

ORDERS = "/data/OrderChangeEvent"
V = "/services/data/v60.0"
ACTIVATED_SINCE = (
    "SELECT Id FROM Order WHERE Status = 'Activated' AND ActivatedDate >= 2026-11-30T10:00:00Z"
)


def salesforce(h: SalesforceEmulatorHandle) -> Any:
    """simple-salesforce, typed Any: its sObject attributes are dynamic."""
    return h.client()


def header(event: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = event["data"]["payload"]["ChangeEventHeader"]
    return value


def body(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event["data"]["payload"].items() if k != "ChangeEventHeader"}


def moment(text: str) -> datetime:
    """A date-time as REST reads give it (`…000+0000`)."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z")


def retained_events(h: SalesforceEmulatorHandle) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = h.control("GET", "events")["events"]
    return events


def seed(h: SalesforceEmulatorHandle, payload: dict[str, Any]) -> requests.Response:
    """POST a seed payload; the reply, whatever its status (refusals are under test)."""
    return h.http().post(f"{h.control_url}/seed", json=payload)


def seeded_order(ids: dict[str, Any], reference: str, **fields: Any) -> dict[str, Any]:
    return {
        "attributes": {"type": "Order", "referenceId": reference},
        "AccountId": ids["accounts"]["CUST-0001"],
        "Pricebook2Id": ids["pricebooks"]["portal"],
        "EffectiveDate": "2026-11-01",
        **fields,
    }


def order_update(order_id: str, **fields: Any) -> dict[str, Any]:
    return {"attributes": {"type": "Order"}, "id": order_id, **fields}


# ---- activation through the REST API ----------------------------------------------------------


def test_activating_an_order_stamps_when_and_by_whom_in_the_same_save(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    sf = salesforce(sf_emulator)
    order_id = ids["orders"]["esim"]
    assert sf.Order.get(order_id)["ActivatedDate"] is None

    sf.Order.update(order_id, {"Status": "Activated"})

    order = sf.Order.get(order_id)
    assert abs((moment(order["ActivatedDate"]) - datetime.now(UTC)).total_seconds()) < 1
    assert order["ActivatedDate"] == order["LastModifiedDate"]
    assert order["ActivatedById"] == order["LastModifiedById"]
    assert order["ActivatedById"].startswith("005")
    [event] = sf_emulator.bayeux().retained(ORDERS)
    assert header(event)["changedFields"] == [
        "Status",
        "ActivatedDate",
        "ActivatedById",
        "LastModifiedDate",
    ]
    assert body(event)["ActivatedDate"] == body(event)["LastModifiedDate"]
    assert body(event)["ActivatedDate"].endswith("Z")
    assert body(event)["ActivatedById"] == order["ActivatedById"]


def test_a_later_update_leaves_the_stamps_and_a_reactivation_sets_a_newer_date(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    sf = salesforce(sf_emulator)
    order_id = ids["orders"]["internet"]
    sf.Order.update(order_id, {"Status": "Activated"})
    first = sf.Order.get(order_id)

    sf.Order.update(order_id, {"Activation_Status__c": "Activating"})
    sf.Order.update(order_id, {"Status": "Draft"})
    unchanged = sf.Order.get(order_id)
    # Stamps have millisecond resolution: let the re-activation fall on a later one.
    time.sleep(0.01)
    sf.Order.update(order_id, {"Status": "Activated"})
    again = sf.Order.get(order_id)

    assert (unchanged["ActivatedDate"], unchanged["ActivatedById"]) == (
        first["ActivatedDate"],
        first["ActivatedById"],
    )
    assert moment(again["ActivatedDate"]) > moment(first["ActivatedDate"])
    assert again["ActivatedById"] == first["ActivatedById"]
    _, write_back, draft, reactivation = sf_emulator.bayeux().retained(ORDERS)
    assert header(write_back)["changedFields"] == ["Activation_Status__c", "LastModifiedDate"]
    assert header(draft)["changedFields"] == ["Status", "LastModifiedDate"]
    # The same user activated it again: only the date is a changed value.
    assert header(reactivation)["changedFields"] == ["Status", "ActivatedDate", "LastModifiedDate"]


def test_an_order_activated_within_a_composite_create_carries_its_activation_in_the_create(
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
                    "body": {
                        "AccountId": ids["accounts"]["CUST-0002"],
                        "Pricebook2Id": ids["pricebooks"]["portal"],
                        "Status": "Draft",
                        "EffectiveDate": "2026-11-01",
                    },
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

    [event] = sf_emulator.bayeux().retained(ORDERS)

    assert header(event)["changeType"] == "CREATE"
    assert body(event)["ActivatedDate"] == body(event)["CreatedDate"]
    assert body(event)["ActivatedById"] == body(event)["CreatedById"]


@pytest.mark.parametrize(
    "fields",
    [{"ActivatedDate": "2026-10-01T00:00:00Z"}, {"ActivatedById": "0055g00000EmUlA"}],
    ids=["ActivatedDate", "ActivatedById"],
)
def test_a_rest_write_naming_an_activation_stamp_is_refused(
    sf_emulator: SalesforceEmulatorHandle, fields: dict[str, Any]
) -> None:
    ids = sf_emulator.seed_demo()
    sf = salesforce(sf_emulator)
    order_id = ids["orders"]["esim"]
    sf.Order.update(order_id, {"Status": "Activated"})
    before = sf.Order.get(order_id)

    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Order.update(order_id, fields)

    # simple-salesforce keeps the decoded JSON error list, whatever its annotation says.
    content: Any = caught.value.content
    [error] = content
    assert error["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert error["fields"] == list(fields)
    assert sf.Order.get(order_id) == before
    [described] = [f for f in sf.Order.describe()["fields"] if f["name"] in fields]
    assert (described["createable"], described["updateable"]) == (False, False)


# ---- seeding a past ------------------------------------------------------------------------


def test_seeded_audit_fields_are_kept_and_publish_no_events(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    reply = seed(
        sf_emulator,
        {
            "records": [
                seeded_order(
                    ids,
                    "dated",
                    Status="Activated",
                    CreatedDate="2026-11-01T09:00:00Z",
                    LastModifiedDate="2026-11-02T09:00:00.000+0000",
                    ActivatedDate="2026-11-01T09:30:00Z",
                ),
                seeded_order(
                    ids, "undated", Status="Activated", CreatedDate="2026-11-03T09:00:00Z"
                ),
            ]
        },
    )
    assert reply.status_code == 200, reply.text
    made = reply.json()["ids"]
    sf = salesforce(sf_emulator)

    dated, undated = sf.Order.get(made["dated"]), sf.Order.get(made["undated"])

    assert (dated["CreatedDate"], dated["LastModifiedDate"], dated["SystemModstamp"]) == (
        "2026-11-01T09:00:00.000+0000",
        "2026-11-02T09:00:00.000+0000",
        "2026-11-02T09:00:00.000+0000",
    )
    assert dated["ActivatedDate"] == "2026-11-01T09:30:00.000+0000"
    # Activated as it was created, by the seeding user.
    assert undated["ActivatedDate"] == undated["CreatedDate"] == "2026-11-03T09:00:00.000+0000"
    assert undated["LastModifiedDate"] == undated["CreatedDate"]
    assert dated["ActivatedById"] == undated["ActivatedById"] == undated["CreatedById"]
    assert retained_events(sf_emulator) == []


def test_soql_filters_and_counts_orders_by_their_activated_date(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    made = sf_emulator.control(
        "POST",
        "seed",
        {
            "records": [
                seeded_order(
                    ids, "early", Status="Activated", ActivatedDate="2026-11-01T09:00:00Z"
                ),
                seeded_order(ids, "late", Status="Activated", ActivatedDate="2026-12-01T10:00:00Z"),
                seeded_order(ids, "edge", Status="Activated", ActivatedDate="2026-11-30T10:00:00Z"),
            ]
        },
    )["ids"]
    sf = salesforce(sf_emulator)

    since = sf.query(ACTIVATED_SINCE + " ORDER BY ActivatedDate")
    count = sf.query(ACTIVATED_SINCE.replace("SELECT Id", "SELECT COUNT()"))
    before = sf.query("SELECT COUNT() FROM Order WHERE ActivatedDate <= 2026-11-30T09:59:59Z")
    never = sf.query("SELECT Id FROM Order WHERE ActivatedDate = null")

    assert [r["Id"] for r in since["records"]] == [made["edge"], made["late"]]
    assert (count["totalSize"], count["records"]) == (2, [])
    # The demo's orders were never activated: a null ActivatedDate is before nothing.
    assert before["totalSize"] == 1
    assert sorted(r["Id"] for r in never["records"]) == sorted(ids["orders"].values())


def test_seeded_updates_activate_existing_orders_in_the_past_without_events(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    ids = sf_emulator.seed_demo()
    past, now = ids["orders"]["esim"], ids["orders"]["internet"]
    reply = sf_emulator.control(
        "POST",
        "seed",
        {
            "records": [seeded_order(ids, "new", Status="Draft")],
            "updates": [
                order_update(
                    past,
                    Status="Activated",
                    ActivatedDate="2026-10-01T00:00:00Z",
                    LastModifiedDate="2026-10-01T00:05:00Z",
                    Activation_Status__c="Activated",
                ),
                order_update(now, Status="Activated"),
                order_update("@{new}", Description="created, then changed, in one seed"),
            ],
        },
    )
    sf = salesforce(sf_emulator)

    assert reply["updated"] == [past, now, reply["ids"]["new"]]
    activated = sf.Order.get(past)
    assert (activated["Status"], activated["Activation_Status__c"]) == ("Activated", "Activated")
    assert activated["ActivatedDate"] == "2026-10-01T00:00:00.000+0000"
    assert activated["LastModifiedDate"] == activated["SystemModstamp"]
    assert activated["LastModifiedDate"] == "2026-10-01T00:05:00.000+0000"
    assert activated["ActivatedById"].startswith("005")
    activated_now = sf.Order.get(now)["ActivatedDate"]
    assert abs((moment(activated_now) - datetime.now(UTC)).total_seconds()) < 1
    assert sf.Order.get(reply["ids"]["new"])["Description"] == "created, then changed, in one seed"
    assert sf.query("SELECT COUNT() FROM Order WHERE Status = 'Activated'")["totalSize"] == 2
    assert retained_events(sf_emulator) == []


@pytest.mark.parametrize(
    ("bad", "refusal"),
    [
        ({"id": "801000000000099AAA"}, "no Order with id 801000000000099AAA"),
        ({"Colour__c": "red"}, "INVALID_FIELD"),
        ({"ActivatedDate": "last Tuesday"}, "JSON_PARSER_ERROR"),
        ({"CreatedById": "0055g00000EmUlA"}, "INVALID_FIELD_FOR_INSERT_UPDATE"),
    ],
    ids=["unknown id", "unknown field", "bad value", "read-only field"],
)
def test_a_seed_with_a_bad_update_is_refused_as_a_whole(
    sf_emulator: SalesforceEmulatorHandle, bad: dict[str, Any], refusal: str
) -> None:
    ids = sf_emulator.seed_demo()
    good, other = ids["orders"]["esim"], ids["orders"]["internet"]

    reply = seed(
        sf_emulator,
        {
            "records": [{"attributes": {"type": "Account"}, "Name": "Not kept"}],
            "updates": [
                order_update(good, Status="Activated", ActivatedDate="2026-10-01T00:00:00Z"),
                {**order_update(other), **bad},
            ],
        },
    )

    assert reply.status_code == 400
    assert reply.json()["error"].startswith("updates[1]: ")
    assert refusal in reply.json()["error"]
    sf = salesforce(sf_emulator)
    order = sf.Order.get(good)
    assert (order["Status"], order["ActivatedDate"]) == ("Draft", None)
    assert sf.query("SELECT COUNT() FROM Account WHERE Name = 'Not kept'")["totalSize"] == 0
    assert retained_events(sf_emulator) == []


def test_a_seed_payload_without_records_or_updates_is_refused(
    sf_emulator: SalesforceEmulatorHandle,
) -> None:
    for payload in ({}, {"updates": {"id": "801000000000099AAA"}}):
        reply = seed(sf_emulator, payload)

        assert reply.status_code == 400
        assert '{"records": [...], "updates": [...]}' in reply.json()["error"]
