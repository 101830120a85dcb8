"""What one order costs in calls to the outside systems, counted in the emulators' request logs
(the org's daily API allowance counts Salesforce REST calls; OAuth token requests are not API
calls and are left out)."""

from __future__ import annotations

from typing import Any

import pytest

from domain.fulfillment import FulfillmentStatus
from tests.fixtures.engine import Engine

pytestmark = pytest.mark.usefixtures("worker")

TOKEN_PATH = "/services/oauth2/token"


def _salesforce_api_calls(engine: Engine) -> list[tuple[str, str]]:
    return [
        (record["method"], record["path"])
        for record in engine.requests(engine.sf)
        if record["path"].startswith("/services/") and record["path"] != TOKEN_PATH
    ]


def _clear_request_logs(engine: Engine) -> None:
    for handle in (engine.sf, engine.whmcs, engine.freebit):
        _control_delete(handle)


def _control_delete(handle: Any) -> None:
    if callable(getattr(handle, "control", None)):
        handle.control("DELETE", "requests")
    else:
        handle.http.delete(f"{handle.control_url}/requests").raise_for_status()


@pytest.mark.parametrize("order", ["internet", "esim"])
async def test_an_order_costs_two_salesforce_calls(engine: Engine, order: str) -> None:
    order_id = engine.activate(order)
    _clear_request_logs(engine)

    result = await (await engine.start(order_id)).result()

    assert result.status is FulfillmentStatus.ACTIVATED
    # The read with the Activating write (one Composite call), then the write-back of the
    # WHMCS ids (one sObject Collections call).
    assert _salesforce_api_calls(engine) == [
        ("POST", "/services/data/v60.0/composite"),
        ("PATCH", "/services/data/v60.0/composite/sobjects"),
    ]
