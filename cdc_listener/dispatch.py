"""Doing what an event's plan asks: start (or retry) fulfillments, invalidate the portal's caches.

Everything here is safe to repeat: the listener stores its cursor only after `handle` returned,
so after a crash the same event is handled again, and a replayed event finds the fulfillment
it started and keys already gone. A transient failure raises, and the pipeline retries the
event; a Redis outage does not: the keys wait in the outbox.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from temporalio.client import Client

from cdc_listener.decide import Activation, Plan
from cdc_listener.parents import Parents
from clients.cache import CacheGroup, CacheInvalidator, CacheUnavailableError
from clients.fulfillment_store import FulfillmentStore
from clients.salesforce import SalesforceClient
from config.logging import get_logger
from config.settings import Settings
from domain.events import ChangeEvent, Event
from domain.fulfillment import ActivationDecision, FulfillmentInput, Trigger, TriggerSource
from domain.order import ActivationStatus
from usecases.fulfillments import activate_fulfillment

log = get_logger(__name__)
_FINAL = {status.value for status in ActivationStatus if status.is_final}
_NOT_STARTED = (
    ActivationDecision.IGNORE_RECORDED_FULFILLED,
    ActivationDecision.IGNORE_BEFORE_CUTOVER,
)


@dataclass
class Handled:
    """What handling one event did, for logs and metrics."""

    decisions: Counter[str] = field(default_factory=Counter)
    keys_invalidated: int = 0
    deferred: bool = False


class Dispatcher:
    def __init__(
        self,
        *,
        temporal: Client,
        settings: Settings,
        salesforce: SalesforceClient,
        cache: CacheInvalidator,
        store: FulfillmentStore,
        reconcile: Callable[[], Awaitable[None]],
    ) -> None:
        self._temporal = temporal
        self._settings = settings
        self._sf = salesforce
        self._cache = cache
        self._store = store
        self._reconcile = reconcile
        self._parents = Parents()

    async def handle(self, event: Event, plan: Plan) -> Handled:
        handled = Handled()
        self._parents.item_orders.remember(plan.known_item_orders)
        # A gap event says the orders changed, not how: what was known of them may be stale.
        self._parents.order_accounts.forget(plan.reread_orders)
        if isinstance(event, ChangeEvent) and plan.reread_orders:
            await self._reread(event, plan)
        self._parents.learn_accounts(plan.known_accounts)
        for activation in plan.activations:
            decision = await activate_fulfillment(
                self._temporal,
                self._settings,
                FulfillmentInput(
                    sf_order_id=activation.sf_order_id,
                    trigger=Trigger(
                        source=TriggerSource.CDC,
                        channel=event.channel,
                        replay_id=event.replay_id,
                        commit_timestamp=activation.activated_at,
                        transaction_key=getattr(event, "transaction_key", None),
                    ),
                ),
                activated_at=activation.activated_at,
                recorded_status=self._store.recorded_status,
            )
            handled.decisions[decision.value] += 1
            # Not started although Salesforce asks: worth an operator's look (an old order
            # activated again, or a replay reaching back past the cutover).
            level = log.warning if decision in _NOT_STARTED else log.info
            level(
                "cdc.activation",
                sf_order_id=activation.sf_order_id,
                replay_id=event.replay_id,
                channel=event.channel,
                decision=decision.value,
            )
        await self._invalidate(plan, handled)
        if plan.reconcile:
            await self._reconcile()
        return handled

    async def _reread(self, event: ChangeEvent, plan: Plan) -> None:
        """A gap event carries no values: decide from the orders as they are now."""
        for state in await self._sf.read_order_states(plan.reread_orders):
            if state.sf_account_id:
                plan.known_accounts[state.sf_order_id] = state.sf_account_id
            if (
                state.status == self._settings.sf_trigger_status
                and state.activation_status not in _FINAL
            ):
                plan.activations.append(Activation(state.sf_order_id, event.commit_timestamp))

    async def _invalidate(self, plan: Plan, handled: Handled) -> None:
        keys = self._cache.keys
        stale_orders = list(dict.fromkeys(plan.stale_orders))
        if plan.stale_order_items:
            parents = self._parents.item_orders.known(plan.stale_order_items)
            unseen = [item for item in plan.stale_order_items if item not in parents]
            if unseen:
                read = await self._sf.read_item_orders(unseen)
                self._parents.item_orders.remember(read)
                parents.update(read)
            stale_orders.extend(o for o in parents.values() if o not in stale_orders)
        names: list[str] = []
        if stale_orders:
            accounts = dict(plan.known_accounts)
            unknown = [order for order in stale_orders if order not in accounts]
            if unknown:
                accounts.update(self._parents.order_accounts.known(unknown))
            unknown = [order for order in stale_orders if order not in accounts]
            if unknown:
                accounts.update(await self._store.accounts_of(unknown))
            unknown = [order for order in stale_orders if order not in accounts]
            if unknown:
                read_accounts = {
                    state.sf_order_id: state.sf_account_id
                    for state in await self._sf.read_order_states(unknown)
                    if state.sf_account_id
                }
                self._parents.order_accounts.remember(read_accounts)
                accounts.update(read_accounts)
            for order in stale_orders:
                names.extend(keys.for_order(order, accounts.get(order)))
        names.extend(keys.services_eligibility(account) for account in plan.stale_eligibility)
        groups = [CacheGroup.SERVICES_CATALOG.value] if plan.stale_catalog else []
        try:
            if names:
                handled.keys_invalidated += await self._cache.delete(names)
            for group in groups:
                handled.keys_invalidated += await self._cache.invalidate_group(CacheGroup(group))
        except CacheUnavailableError as down:
            await self._store.defer_invalidation(names, "cdc event", groups=groups)
            handled.deferred = True
            log.warning("cdc.invalidation_deferred", keys=len(names), error=str(down))
        if plan.stale_all_orders:
            # Raises on a Redis outage: the event is retried rather than the sweep lost.
            handled.keys_invalidated += await self._cache.sweep(keys.orders_pattern())
