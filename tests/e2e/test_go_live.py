"""Switching the engine on against an org with history, as an operator does it: the org has
hundreds of orders activated weeks ago that the engine never saw, one activated a quarter of an
hour ago whose change event was lost, and one activated a moment ago whose event is on its way
to the listener. `fulfillment reconcile --dry-run` must name only the lost one, and
`fulfillment reconcile` fulfil only it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.fulfillment import FulfillmentResult, FulfillmentStatus, workflow_id
from tests.e2e.test_cli_operators import fulfillment
from tests.fixtures.engine import Engine

OLD_ORDERS = 200


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def seed_history(engine: Engine, template: dict[str, Any], now: datetime) -> None:
    """Orders loaded as activated weeks ago, with their audit fields, and no change events."""
    records = [
        {
            "attributes": {"type": "Order", "referenceId": f"old{n}"},
            "AccountId": template["AccountId"],
            "Pricebook2Id": template["Pricebook2Id"],
            "EffectiveDate": (now - timedelta(days=60)).date().isoformat(),
            "Status": "Activated",
            "CreatedDate": iso(now - timedelta(days=60, hours=n % 24)),
            "ActivatedDate": iso(now - timedelta(days=14 + n % 30)),
        }
        for n in range(OLD_ORDERS)
    ]
    engine.sf.control("POST", "seed", {"records": records})


@pytest.mark.usefixtures("worker")
async def test_going_live_on_an_org_with_history_fulfils_only_the_recent_lost_activation(
    engine: Engine,
) -> None:
    now = datetime.now(UTC)
    lost = engine.demo["orders"]["internet"]
    seed_history(engine, engine.order(lost), now)
    # Activated 15 minutes ago while no listener ran: its event is not coming.
    engine.sf.control(
        "POST",
        "seed",
        {
            "updates": [
                {
                    "attributes": {"type": "Order"},
                    "id": lost,
                    "Status": "Activated",
                    "ActivatedDate": iso(now - timedelta(minutes=15)),
                }
            ]
        },
    )
    just_now = engine.activate("esim")
    # Production's bounds (the test engine shortens the minimum age to nothing).
    env = engine.environment() | {"USER": "golive", "RECONCILIATION_MIN_AGE_SECONDS": "120"}

    dry = await fulfillment(engine, "reconcile", "--dry-run", "--json", env=env)

    assert dry.status == 0, dry.stderr
    planned = dry.json()
    outcomes = {c["sf_order_id"]: (c["outcome"], c["reason"]) for c in planned["candidates"]}
    assert outcomes[lost][0] == "would_start"
    assert outcomes[just_now][0] == "left_alone"
    assert "RECONCILIATION_MIN_AGE_SECONDS" in outcomes[just_now][1]
    assert [c for c, (outcome, _) in outcomes.items() if outcome != "left_alone"] == [lost]
    assert planned["before_window"] == OLD_ORDERS
    assert engine.whmcs_orders() == []

    ran = await fulfillment(engine, "reconcile", env=env)

    assert ran.status == 0, ran.stderr
    assert any(line.split()[:2] == ["started", lost] for line in ran.stdout.splitlines())
    assert ran.stderr == ""  # the answer is the output
    assert f"1 started, 1 left alone, {OLD_ORDERS} unfinished orders activated before" in (
        ran.stdout
    )
    handle = engine.client.get_workflow_handle(workflow_id(lost), result_type=FulfillmentResult)
    assert (await handle.result()).status is FulfillmentStatus.ACTIVATED
    assert len(engine.whmcs_orders()) == 1

    again = await fulfillment(engine, "reconcile", "--json", env=env)
    assert [c for c in again.json()["candidates"] if c["outcome"] != "left_alone"] == []
    assert len(engine.whmcs_orders()) == 1
