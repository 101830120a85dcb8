"""What an event means for the engine: plain decisions, no I/O.

The trigger (docs/design.md): an OrderChangeEvent whose `changedFields` include `Status` and whose
new `Status` is `SF_TRIGGER_STATUS`, for every id in `recordIds`, unless our own write-back made it
(its `changeOrigin` names our client). Every Order/OrderItem change makes the portal's views of
those orders stale; Product2/PricebookEntry changes the catalog; the eligibility platform event one
account's eligibility. A gap event names records without values (read them again before deciding);
an overflow names none (invalidate broadly, reconcile).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from domain.events import ChangeEvent, ChangeType, Event, PlatformEvent

ELIGIBILITY_EVENT = "Account_Eligibility_Update__e"
CATALOG_ENTITIES = frozenset({"Product2", "PricebookEntry"})


@dataclass(frozen=True)
class Activation:
    sf_order_id: str
    activated_at: datetime


@dataclass
class Plan:
    """Everything one event asks for; empty when the event means nothing to the engine."""

    activations: list[Activation] = field(default_factory=list)
    # Orders whose current state must be read before deciding (gap events).
    reread_orders: list[str] = field(default_factory=list)
    # Portal views to invalidate; accounts when the event names them, else looked up.
    stale_orders: list[str] = field(default_factory=list)
    stale_order_items: list[str] = field(default_factory=list)
    known_accounts: dict[str, str] = field(default_factory=dict)
    # Order items whose order the event names (a create carries every field).
    known_item_orders: dict[str, str] = field(default_factory=dict)
    stale_catalog: bool = False
    stale_eligibility: list[str] = field(default_factory=list)
    # An overflow: more changed than Salesforce could describe.
    stale_all_orders: bool = False
    reconcile: bool = False
    ignored_own_write: bool = False

    @property
    def empty(self) -> bool:
        return not (
            self.activations
            or self.reread_orders
            or self.stale_orders
            or self.stale_order_items
            or self.stale_catalog
            or self.stale_eligibility
            or self.stale_all_orders
            or self.reconcile
        )


def plan_for(event: Event, *, trigger_status: str, own_client: str) -> Plan:
    if isinstance(event, PlatformEvent):
        return _platform(event)
    plan = Plan()
    entity = event.entity
    if entity == "Order":
        _order(event, plan, trigger_status=trigger_status, own_client=own_client)
    elif entity == "OrderItem":
        if event.change_type is ChangeType.GAP_OVERFLOW:
            plan.stale_all_orders = True
        else:
            plan.stale_order_items.extend(event.record_ids)
            order_id = event.fields.get("OrderId")
            if isinstance(order_id, str):
                plan.stale_orders.append(order_id)
                plan.known_item_orders.update(dict.fromkeys(event.record_ids, order_id))
    elif entity in CATALOG_ENTITIES:
        plan.stale_catalog = True
    return plan


def _order(event: ChangeEvent, plan: Plan, *, trigger_status: str, own_client: str) -> None:
    change = event.change_type
    if change is ChangeType.GAP_OVERFLOW:
        plan.stale_all_orders = True
        plan.reconcile = True
        return
    plan.stale_orders.extend(event.record_ids)
    account = event.fields.get("AccountId")
    if isinstance(account, str):
        plan.known_accounts.update(dict.fromkeys(event.record_ids, account))
    if change.is_gap:
        if change is not ChangeType.GAP_DELETE:
            plan.reread_orders.extend(event.record_ids)
        return
    if change not in (ChangeType.CREATE, ChangeType.UPDATE, ChangeType.UNDELETE):
        return
    if not event.changed("Status") or event.fields.get("Status") != trigger_status:
        return
    if event.origin_client == own_client:
        # Our write-backs never change Status; if one ever did, it must not start anything.
        plan.ignored_own_write = True
        return
    plan.activations.extend(
        Activation(order_id, event.commit_timestamp) for order_id in event.record_ids
    )


def _platform(event: PlatformEvent) -> Plan:
    plan = Plan()
    if event.event_name == ELIGIBILITY_EVENT:
        account = event.fields.get("Account_Id__c")
        if isinstance(account, str) and account:
            plan.stale_eligibility.append(account)
    return plan
