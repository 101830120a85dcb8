"""Which unfinished orders reconciliation may start, and how its counts add up across pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.order import ActivationStatus
from domain.reconciliation import (
    MAX_LISTED_ORDERS,
    ActivationWindow,
    ReconciliationResult,
    StartedFulfillments,
    UnfinishedOrder,
    UnfinishedOrdersPage,
    left_alone_by_salesforce,
    never_fulfilled,
)


def order(number: int, activation_status: str | None = None) -> UnfinishedOrder:
    return UnfinishedOrder(
        sf_order_id=f"801{number:012d}AAA",
        order_number=f"{number:08d}",
        activation_status=activation_status,
    )


@pytest.mark.parametrize("status", [None, ActivationStatus.PENDING.value])
def test_an_order_no_fulfillment_has_written_to_is_a_candidate(status: str | None) -> None:
    assert never_fulfilled(order(1, status))


@pytest.mark.parametrize(
    "status",
    [s.value for s in ActivationStatus if s is not ActivationStatus.PENDING] + ["On Hold", ""],
)
def test_an_order_a_fulfillment_has_written_to_or_someone_else_marked_is_left_alone(
    status: str,
) -> None:
    # Every status a fulfillment writes means one ran, whether or not Temporal still keeps it.
    assert not never_fulfilled(order(1, status))


def test_counts_add_up_over_pages_and_the_listed_ids_are_bounded_but_the_count_is_not() -> None:
    result = ReconciliationResult()
    number = 0
    for _ in range(3):
        orders = tuple(order(number + n) for n in range(MAX_LISTED_ORDERS // 2 + 1))
        number += len(orders)
        page = UnfinishedOrdersPage(orders=orders, next_after=orders[-1].order_number)
        started = tuple(o.sf_order_id for o in orders[:-1])
        result = result.plus(
            page, StartedFulfillments(started=started, already_present=(orders[-1].sf_order_id,))
        )
    assert result.found == number
    assert result.started + result.already_present == result.found
    assert (result.already_present, result.pages) == (3, 3)
    assert result.started == 3 * (MAX_LISTED_ORDERS // 2)
    assert len(result.started_order_ids) == MAX_LISTED_ORDERS
    assert result.started_order_ids[0] == order(0).sf_order_id


def test_a_page_whose_orders_were_all_handled_counts_them_present() -> None:
    page = UnfinishedOrdersPage(orders=(order(1, "Failed"), order(2, "Activating")))
    result = ReconciliationResult().plus(page, StartedFulfillments())
    assert (result.found, result.started, result.already_present) == (2, 0, 2)


NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
BOUNDS = {"min_age": timedelta(minutes=2), "lookback": timedelta(hours=168)}


def test_the_window_is_the_lookback_unless_the_cutover_is_later_and_ends_at_the_minimum_age() -> (
    None
):
    window = ActivationWindow.at(NOW, cutover=None, **BOUNDS)
    assert (window.start, window.end) == (NOW - timedelta(days=7), NOW - timedelta(minutes=2))
    recent_cutover = NOW - timedelta(days=1)
    assert ActivationWindow.at(NOW, cutover=recent_cutover, **BOUNDS).start == recent_cutover
    old_cutover = NOW - timedelta(days=30)
    assert ActivationWindow.at(NOW, cutover=old_cutover, **BOUNDS).start == window.start


def activated(at: datetime | None, status: str | None = None) -> UnfinishedOrder:
    return order(1, status).model_copy(update={"activated_at": at})


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        (activated(NOW - timedelta(days=8)), "before the window"),
        (activated(None), "before the window"),
        (activated(NOW - timedelta(seconds=30)), "30 s ago, under RECONCILIATION_MIN_AGE"),
        (activated(NOW - timedelta(hours=1), "Activating"), "Activation_Status__c = Activating"),
    ],
)
def test_what_salesforce_shows_keeps_reconciliation_away_and_says_why(
    candidate: UnfinishedOrder, reason: str
) -> None:
    window = ActivationWindow.at(NOW, cutover=None, **BOUNDS)
    said = left_alone_by_salesforce(candidate, window, NOW)
    assert said is not None and reason in said


def test_an_order_activated_in_the_window_that_nobody_touched_is_started() -> None:
    window = ActivationWindow.at(NOW, cutover=None, **BOUNDS)
    assert left_alone_by_salesforce(activated(NOW - timedelta(hours=1)), window, NOW) is None
