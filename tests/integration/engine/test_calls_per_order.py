"""What one order costs in calls to the outside systems, counted in the emulators' request logs
(the org's daily API allowance counts Salesforce REST calls; OAuth token requests are not API
calls and are left out)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as redis

from cdc_listener.main import run_listener
from clients.cache import CacheKeys
from config.settings import Settings
from domain.fulfillment import FulfillmentStatus
from tests.fixtures.engine import Engine, worker_running

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


@pytest.mark.usefixtures("worker")
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


# -- the WHMCS product catalogue -------------------------------------------------------------------


def _get_products(engine: Engine) -> int:
    return sum(1 for r in engine.requests(engine.whmcs) if r["action"] == "GetProducts")


async def _fulfil(engine: Engine, order: str) -> None:
    result = await (await engine.start(engine.activate(order))).result()
    assert result.status is FulfillmentStatus.ACTIVATED


@asynccontextmanager
async def _listening(settings: Settings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_listener(settings, stop=stop, instance="calls-test"))
    try:
        yield
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task


@pytest.mark.usefixtures("worker")
async def test_orders_share_one_catalogue_read_until_a_product_changes(
    engine: Engine, redis_client: redis.Redis
) -> None:
    products_key = CacheKeys(engine.settings.cache_key_prefix).whmcs_products()
    await redis_client.unlink(products_key)  # an earlier test's, on the shared Redis
    _clear_request_logs(engine)

    await _fulfil(engine, "internet")
    await _fulfil(engine, "esim")
    assert _get_products(engine) == 1
    assert await redis_client.exists(products_key) == 1

    # A product changes in Salesforce: the listener drops the catalog group, this key with it.
    product = engine.sf.client().query("SELECT Id FROM Product2 LIMIT 1")["records"][0]["Id"]
    engine.sf.client().restful(
        f"sobjects/Product2/{product}", method="PATCH", json={"Name": "Renamed"}
    )
    listener = engine.settings.model_copy(
        update={"listener_metrics_port": 0, "cdc_lease_poll_seconds": 0.5}
    )
    async with _listening(listener):
        for _ in range(300):
            if not await redis_client.exists(products_key):
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("the listener never dropped the WHMCS product catalogue")

    await _fulfil(engine, "physical_sim")
    assert _get_products(engine) == 2


async def test_an_order_is_fulfilled_with_redis_down(engine: Engine) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    _clear_request_logs(engine)
    async with worker_running(engine.settings.model_copy(update={"redis_url": dead})):
        await _fulfil(engine, "internet")
    # Read from WHMCS itself: the cache is never a reason to fail an order.
    assert _get_products(engine) == 1
