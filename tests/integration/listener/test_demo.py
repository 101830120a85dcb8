"""`fulfillment demo order`'s scenarios, end to end: made and activated through Salesforce REST,
started by the listener, fulfilled (or parked) by the worker, followed live."""

from __future__ import annotations

from typing import Any

import pytest

from cli.demo import DemoLinks, demo_order
from domain.errors import ErrorCode
from domain.fulfillment import FulfillmentStatus
from tests.fixtures.engine import Engine
from tests.integration.listener.test_listener import listener_settings, listening

pytestmark = pytest.mark.usefixtures("worker")


def links(engine: Engine) -> DemoLinks:
    return DemoLinks(
        temporal_ui="http://127.0.0.1:8233",
        api="http://127.0.0.1:8000",
        freebit_control=engine.freebit.control_url,
    )


@pytest.mark.parametrize(
    ("options", "status", "code"),
    [
        ({}, FulfillmentStatus.ACTIVATED, None),
        ({"sim": "esim"}, FulfillmentStatus.ACTIVATED, None),
        ({"sim": "physical"}, FulfillmentStatus.ACTIVATED, None),
        ({"no_payment_method": True}, FulfillmentStatus.FAILED, ErrorCode.PAYMENT_METHOD_MISSING),
        (
            {"sim": "esim", "fail_sim": True},
            FulfillmentStatus.FAILED,
            ErrorCode.SIM_PROVISIONING_FAILED,
        ),
    ],
    ids=["internet", "esim", "physical", "no-payment-method", "fail-sim"],
)
async def test_a_demo_order_flows_through_the_engine_by_itself(
    engine: Engine, options: dict[str, Any], status: FulfillmentStatus, code: ErrorCode | None
) -> None:
    lines: list[str] = []
    async with listening(listener_settings(engine)):
        outcome = await demo_order(
            engine.settings, links(engine), say=lines.append, within=90, **options
        )
    assert outcome.status is status, lines
    assert outcome.progress is not None
    if code is not None:
        assert outcome.progress.last_error is not None
        assert outcome.progress.last_error.code is code
        assert any("parked" in line for line in lines)
    else:
        assert engine.order(outcome.sf_order_id)["Activation_Status__c"] == "Activated"
    assert any("/workflows/order-fulfillment-" in line for line in lines)
    assert any(f"/api/orders/{outcome.sf_order_id}/fulfillment" in line for line in lines)
