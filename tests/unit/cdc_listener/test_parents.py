"""What the listener keeps of whose records are whose: bounded, most recently used first, and an
order's account dropped when two events disagree on it."""

from __future__ import annotations

import pytest

from cdc_listener.parents import Parents, RecentMap


def test_the_least_recently_used_entry_goes_first() -> None:
    recent = RecentMap(capacity=2)
    recent.remember({"a": "1", "b": "2"})
    assert recent.known(["a"]) == {"a": "1"}  # "a" is now the most recent
    recent.remember({"c": "3"})
    assert len(recent) == 2
    assert recent.known(["a", "b", "c"]) == {"a": "1", "c": "3"}


def test_forgotten_and_unknown_keys_are_simply_absent() -> None:
    recent = RecentMap(capacity=10)
    recent.remember({"a": "1"})
    recent.forget(["a", "never-seen"])
    assert recent.known(["a", "never-seen"]) == {}


def test_a_capacity_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        RecentMap(capacity=0)


def test_an_order_whose_events_disagree_on_its_account_is_looked_up_afresh() -> None:
    parents = Parents(capacity=10)
    parents.learn_accounts({"order-1": "account-A", "order-2": "account-B"})
    parents.learn_accounts({"order-1": "account-A"})
    assert parents.order_accounts.known(["order-1"]) == {"order-1": "account-A"}
    # An older event handled after a newer one cannot say which is current: keep neither.
    parents.learn_accounts({"order-2": "account-C"})
    assert parents.order_accounts.known(["order-2"]) == {}
    parents.learn_accounts({"order-2": "account-C"})
    assert parents.order_accounts.known(["order-2"]) == {"order-2": "account-C"}
