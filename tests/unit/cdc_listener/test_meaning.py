"""What events mean: parsing the Streaming API's messages and deciding what to do, no I/O."""

from __future__ import annotations

from typing import Any

import pytest

from cdc_listener.decide import plan_for
from cdc_listener.events import MalformedEvent, parse_message
from domain.events import ChangeEvent, ChangeType, PlatformEvent

ORDER_A = "801000000000001AAA"
ORDER_B = "801000000000002AAA"
ACCOUNT = "001000000000001AAA"


def change(
    entity: str = "Order",
    change_type: str = "UPDATE",
    record_ids: tuple[str, ...] = (ORDER_A,),
    changed: tuple[str, ...] = ("Status", "LastModifiedDate"),
    origin: str = "com/salesforce/api/rest/60.0;client=portal",
    replay_id: int = 7,
    **fields: Any,
) -> dict[str, Any]:
    header = {
        "entityName": entity,
        "recordIds": list(record_ids),
        "changeType": change_type,
        "changedFields": list(changed),
        "changeOrigin": origin,
        "transactionKey": "tx-1",
        "sequenceNumber": 1,
        "commitTimestamp": 1_795_000_000_000,
        "commitNumber": 1,
        "commitUser": "005000000000001AAA",
    }
    return {
        "channel": f"/data/{entity}ChangeEvent",
        "data": {
            "schema": "s",
            "event": {"replayId": replay_id},
            "payload": {"ChangeEventHeader": header, **fields},
        },
    }


def plan(message: dict[str, Any]) -> Any:
    return plan_for(
        parse_message(message), trigger_status="Activated", own_client="order-fulfillment"
    )


def test_an_order_update_to_the_trigger_status_activates_every_record_it_names() -> None:
    event = parse_message(change(record_ids=(ORDER_A, ORDER_B), Status="Activated"))
    assert isinstance(event, ChangeEvent)
    assert event.origin_client == "portal"
    result = plan_for(event, trigger_status="Activated", own_client="order-fulfillment")
    assert [a.sf_order_id for a in result.activations] == [ORDER_A, ORDER_B]
    assert result.activations[0].activated_at == event.commit_timestamp
    assert result.stale_orders == [ORDER_A, ORDER_B]


def test_a_create_carrying_the_trigger_status_activates_too() -> None:
    # Create-then-activate in one transaction is one CREATE with the committed values.
    created = change(change_type="CREATE", changed=(), Status="Activated", AccountId=ACCOUNT)
    result = plan(created)
    assert [a.sf_order_id for a in result.activations] == [ORDER_A]
    assert result.known_accounts == {ORDER_A: ACCOUNT}


@pytest.mark.parametrize(
    "message",
    [
        change(Status="Draft"),  # another status
        change(changed=("Activation_Status__c",), Activation_Status__c="Failed"),  # not Status
        change(change_type="DELETE", changed=()),
    ],
)
def test_changes_that_are_not_an_activation_start_nothing(message: dict[str, Any]) -> None:
    assert plan(message).activations == []


def test_our_own_write_backs_never_trigger() -> None:
    ours = change(
        origin="com/salesforce/api/rest/60.0;client=order-fulfillment", Status="Activated"
    )
    result = plan(ours)
    assert result.activations == [] and result.ignored_own_write
    # ...but the portal's views of the order are still refreshed.
    assert result.stale_orders == [ORDER_A]


def test_a_gap_event_asks_to_read_the_orders_again() -> None:
    result = plan(change(change_type="GAP_UPDATE", changed=()))
    assert result.reread_orders == [ORDER_A] and result.activations == []


def test_an_overflow_invalidates_broadly_and_reconciles() -> None:
    result = plan(change(change_type="GAP_OVERFLOW", record_ids=(), changed=()))
    assert result.stale_all_orders and result.reconcile


def test_catalog_and_order_item_changes_name_what_went_stale() -> None:
    assert plan(change(entity="Product2", changed=("Name",), Name="x")).stale_catalog
    assert plan(change(entity="PricebookEntry", changed=("UnitPrice",), UnitPrice=1)).stale_catalog
    item = plan(
        change(
            entity="OrderItem",
            change_type="CREATE",
            record_ids=("802000000000001AAA",),
            OrderId=ORDER_A,
        )
    )
    assert (item.stale_order_items, item.stale_orders) == (["802000000000001AAA"], [ORDER_A])
    # Remembered, so the item's later updates (which name no order) need no lookup.
    assert item.known_item_orders == {"802000000000001AAA": ORDER_A}
    update = plan(
        change(entity="OrderItem", record_ids=("802000000000001AAA",), changed=("Quantity",))
    )
    assert (update.stale_order_items, update.known_item_orders) == (["802000000000001AAA"], {})


def test_an_eligibility_event_names_its_account() -> None:
    message = {
        "channel": "/event/Account_Eligibility_Update__e",
        "data": {
            "event": {"replayId": 3},
            "payload": {"Account_Id__c": ACCOUNT, "CreatedDate": "2026-11-27T03:00:00.000Z"},
        },
    }
    event = parse_message(message)
    assert isinstance(event, PlatformEvent)
    assert plan(message).stale_eligibility == [ACCOUNT]


@pytest.mark.parametrize(
    ("message", "replay_id"),
    [
        ("not even an object", None),
        ({"channel": "/data/OrderChangeEvent", "data": {}}, None),
        ({"channel": "/data/OrderChangeEvent", "data": {"event": {"replayId": 9}}}, "9"),
        # A Pub/Sub replay id, as its client writes it (hex of the opaque bytes).
        (
            {"channel": "/data/OrderChangeEvent", "data": {"event": {"replayId": "00af3c"}}},
            "00af3c",
        ),
        (change(change_type="SHRUG"), "7"),
        (
            {
                "channel": "/data/OrderChangeEvent",
                "data": {
                    "event": {"replayId": 8},
                    "payload": {"ChangeEventHeader": {"entityName": "Order"}},
                },
            },
            "8",
        ),
    ],
)
def test_a_malformed_message_is_refused_naming_its_replay_id(
    message: Any, replay_id: str | None
) -> None:
    with pytest.raises(MalformedEvent) as refused:
        parse_message(message)
    assert refused.value.replay_id == replay_id
    assert refused.value.reason


def test_compound_address_fields_arrive_nested() -> None:
    message = change(
        changed=("BillingAddress.City", "LastModifiedDate"),
        BillingAddress={"City": "Shibuya-ku", "Street": None},
    )
    event = parse_message(message)
    assert isinstance(event, ChangeEvent)
    assert event.fields["BillingAddress"]["City"] == "Shibuya-ku"
    assert event.change_type is ChangeType.UPDATE
    assert plan(message).activations == []


def test_a_record_id_that_is_no_salesforce_id_makes_the_event_malformed() -> None:
    with pytest.raises(MalformedEvent) as refused:
        parse_message(change(record_ids=("801' OR Id != '",)))
    assert "recordIds" in refused.value.reason or "record_ids" in refused.value.reason
