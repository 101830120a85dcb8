"""The `fulfillments` read model the HTTP API serves (newer versions always win), and the audit
rows of the operator decisions the workflow accepted from signals."""

from __future__ import annotations

from temporalio import activity

from activities.errors import translated
from clients.fulfillment_store import FulfillmentStore
from domain.errors import WriteOutcome
from domain.steps import Activity, FulfillmentRecord, OperatorAction, Written


class ReadModelActivities:
    def __init__(self, store: FulfillmentStore) -> None:
        self._store = store

    @activity.defn(name=Activity.RECORD_FULFILLMENT.value)
    @translated
    async def record_fulfillment(self, record: FulfillmentRecord) -> Written:
        written = await self._store.record(record)
        # Not written: the same or a newer version is stored (a repeat, or a late write).
        return Written(outcome=WriteOutcome.APPLIED if written else WriteOutcome.ALREADY_DONE)

    @activity.defn(name=Activity.RECORD_OPERATOR_ACTION.value)
    @translated
    async def record_operator_action(self, action: OperatorAction) -> Written:
        written = await self._store.record_operator_action(action)
        return Written(outcome=WriteOutcome.APPLIED if written else WriteOutcome.ALREADY_DONE)
