"""Which unfinished orders reconciliation may start, and how its counts add up across pages."""

from __future__ import annotations

import pytest

from domain.order import ActivationStatus
from domain.reconciliation import (
    MAX_LISTED_ORDERS,
    ReconciliationResult,
    StartedFulfillments,
    UnfinishedOrder,
    UnfinishedOrdersPage,
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
