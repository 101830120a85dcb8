"""Whose records are whose, as the events told the listener: an order item's order, an order's
account.

Invalidating an order's portal views needs its account, and an order item's event names only the
item (an update carries the changed fields alone). Each of those lookups is a Salesforce query,
counted against the org's daily API allowance, and every fulfillment causes them: its write-back
updates the order and its items. A create event carries every field, and an update that moves an
order to another account carries the new one, so what the events already said is kept here, the
most recently used first, and Salesforce is asked only about records the listener has not seen
(after a restart, or once they fell out).

An item never changes order (Salesforce refuses to update `OrderItem.OrderId`), so that answer
cannot go stale. An order's account can: a gap event (values not sent) drops what was known, and
the order is read again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

# Each entry is two 18-character ids: 20,000 of each take a few MB and cover the orders of
# many hours of activity, which is when their items' write-backs come.
DEFAULT_CAPACITY = 20_000


class RecentMap:
    """A dict bounded to `capacity` entries; the least recently used one goes first."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._entries: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, pairs: Mapping[str, str]) -> None:
        for key, value in pairs.items():
            self._entries[key] = value
            self._entries.move_to_end(key)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def forget(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._entries.pop(key, None)

    def known(self, keys: Iterable[str]) -> dict[str, str]:
        """The values of the keys that are known (and now the most recent)."""
        found: dict[str, str] = {}
        for key in keys:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
                found[key] = value
        return found


class Parents:
    """An order item's order and an order's account, as last seen."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.item_orders = RecentMap(capacity)
        self.order_accounts = RecentMap(capacity)

    def learn_accounts(self, accounts: Mapping[str, str]) -> None:
        """Keep each order's account, unless it differs from the one kept: events are handled
        concurrently, so an older one may come last; the order is then looked up afresh."""
        kept = self.order_accounts.known(accounts)
        self.order_accounts.forget(
            order for order, account in kept.items() if account != accounts[order]
        )
        self.order_accounts.remember(
            {order: account for order, account in accounts.items() if order not in kept}
        )
