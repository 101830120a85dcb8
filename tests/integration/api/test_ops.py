"""Operators over real HTTP: retry and cancel parked fulfillments on the real worker, the audit
trail, repeated and racing requests, the list, and the cache flush."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import redis.asyncio as redis
from temporalio.client import WorkflowHandle

from api.services import open_services
from clients.cache import CacheGroup, CacheInvalidator, CacheKeys
from domain.errors import ErrorCode
from domain.fulfillment import FulfillmentProgress, FulfillmentStatus, OperatorRequest, Step
from domain.messages import PROGRESS_QUERY
from tests.fixtures.api import Api
from tests.fixtures.engine import Engine, worker_running
from tests.integration.api._support import Record, degraded_services, served, sf_id
from usecases.errors import UnavailableError
from usecases.operator_actions import Action, perform

PAY_METHOD = {
    "records": {"paymethods": [{"clientid": 3, "type": "RemoteCreditCard", "gateway": "stripe"}]}
}
# Freebit refuses the physical SIM's registration: parked at provision_sims with a pending
# WHMCS order, which cancelling must undo.
SIM_REFUSED = {
    "kind": "fail",
    "count": 1,
    "status": 200,
    "path": "/emptool/api/master/addAcnt/",
    "body": {"resultCode": "210", "status": {"statusCode": "400", "message": "plan unknown"}},
}


async def until(handle: WorkflowHandle[Any, Any], *, parked: bool = True) -> FulfillmentProgress:
    async with asyncio.timeout(60):
        while True:
            progress: FulfillmentProgress = await handle.query(
                PROGRESS_QUERY, result_type=FulfillmentProgress
            )
            if progress.waiting_for_operator == parked:
                return progress
            await asyncio.sleep(0.1)


async def audit(db: asyncpg.Connection, sf_order_id: str) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT request_id, action, reason, requested_by, outcome FROM operator_actions"
        " WHERE sf_order_id = $1 ORDER BY id",
        sf_order_id,
    )
    return [dict(r) for r in rows]


async def parked_without_payment_method(engine: Engine) -> tuple[str, WorkflowHandle[Any, Any]]:
    order_id = engine.activate("no_payment_method")
    handle = await engine.start(order_id)
    await until(handle)
    return order_id, handle


@pytest.mark.usefixtures("worker")
async def test_retry_of_a_parked_fulfillment_after_the_fix_activates_it_once(
    api: Api, engine: Engine, db: asyncpg.Connection
) -> None:
    order_id, handle = await parked_without_payment_method(engine)
    portal = (
        await api.http.get(f"/api/orders/{order_id}/fulfillment", headers=api.service())
    ).json()
    assert (portal["status"], portal["error_code"], portal["step"]) == (
        "failed",
        "PAYMENT_METHOD_MISSING",
        "validate_payment_method",
    )
    listed = (
        await api.http.get("/api/ops/fulfillments", params={"status": "failed"}, headers=api.ops())
    ).json()
    assert [i["sf_order_id"] for i in listed["items"]] == [order_id]

    engine.whmcs.http.post(f"{engine.whmcs.control_url}/seed", json=PAY_METHOD).raise_for_status()
    url = f"/api/ops/fulfillments/{order_id}/retry"
    headers = api.ops("alice@example.jp") | {"Idempotency-Key": "retry-after-card-1"}
    # The same request three times, two of them racing: recorded once, decided once.
    first, *repeats = await asyncio.gather(
        *(api.http.post(url, json={"reason": "card added"}, headers=headers) for _ in range(2))
    )
    repeats.append(await api.http.post(url, json={"reason": "again?"}, headers=headers))

    assert first.status_code == 202, first.text
    body = first.json()
    assert (body["action"], body["outcome"], body["request_id"]) == (
        "retry",
        "accepted",
        "retry-after-card-1",
    )
    assert (body["reason"], body["requested_by"]) == ("card added", "alice@example.jp")
    assert body["progress"]["attempt"] == 2
    assert body["progress"]["waiting_for_operator"] is False
    for repeat in repeats:
        assert repeat.status_code == 202, repeat.text
        again = repeat.json()
        assert {k: again[k] for k in ("request_id", "reason", "outcome", "recorded_at")} == {
            k: body[k] for k in ("request_id", "reason", "outcome", "recorded_at")
        }
    assert first.headers["cache-control"] == "private, no-store"

    result = await handle.result()
    assert result.status is FulfillmentStatus.ACTIVATED
    assert engine.order(order_id)["Activation_Status__c"] == "Activated"
    assert len(engine.whmcs_orders()) == 1
    assert await audit(db, order_id) == [
        {
            "request_id": "retry-after-card-1",
            "action": "retry",
            "reason": "card added",
            "requested_by": "alice@example.jp",
            "outcome": "accepted",
        }
    ]
    row = await db.fetchrow(
        "SELECT status, attempts FROM fulfillments WHERE sf_order_id = $1", order_id
    )
    assert row is not None and (row["status"], row["attempts"]) == ("activated", 2)

    # The same key once more, now that the workflow has ended: still the first answer.
    late = await api.http.post(url, json={"reason": "card added"}, headers=headers)
    assert late.status_code == 202
    assert (late.json()["request_id"], late.json()["progress"]) == ("retry-after-card-1", None)
    # A new request on the finished fulfillment is refused, and says why.
    finished = await api.http.post(url, json={"reason": "once more"}, headers=api.ops())
    assert finished.status_code == 409
    assert finished.json() == {
        "code": "conflict",
        "message": "cannot retry: the fulfillment is activated and its workflow has ended",
    }
    assert len(await audit(db, order_id)) == 2


@pytest.mark.usefixtures("worker")
async def test_cancel_of_a_parked_fulfillment_compensates_its_billing_order(
    api: Api, engine: Engine, db: asyncpg.Connection
) -> None:
    order_id = engine.activate("physical_sim")
    engine.fault(engine.freebit, SIM_REFUSED)
    handle = await engine.start(order_id)
    parked = await until(handle)
    assert parked.step is Step.PROVISION_SIMS
    assert parked.last_error is not None
    assert parked.last_error.code is ErrorCode.SIM_PROVISIONING_FAILED
    [pending] = engine.whmcs_orders()
    assert pending["status"] == "Pending"

    reply = await api.http.post(
        f"/api/ops/fulfillments/{order_id}/cancel",
        json={"reason": "customer withdrew"},
        headers=api.ops("bob@example.jp"),
    )

    assert reply.status_code == 202, reply.text
    assert reply.json()["action"] == "cancel"
    result = await handle.result()
    assert result.status is FulfillmentStatus.CANCELLED
    [cancelled] = engine.whmcs_orders()
    assert cancelled["status"] == "Cancelled"
    order = engine.order(order_id)
    assert order["Activation_Status__c"] == "Cancelled"
    assert "Cancelled by bob@example.jp: customer withdrew" in order["Activation_Error_Message__c"]
    [action] = await audit(db, order_id)
    assert (action["action"], action["outcome"]) == ("cancel", "accepted")
    portal = (
        await api.http.get(f"/api/orders/{order_id}/fulfillment", headers=api.service())
    ).json()
    assert portal["status"] == "cancelled"


@pytest.mark.usefixtures("worker")
async def test_a_fulfillment_that_is_not_parked_answers_409_with_the_validators_reason(
    api: Api, engine: Engine, db: asyncpg.Connection
) -> None:
    order_id = engine.activate("esim")
    # Freebit is slow: the fulfillment is busy provisioning while the operator asks.
    engine.fault(engine.freebit, {"kind": "latency", "ms": 1500, "path": "/emptool/"})
    handle = await engine.start(order_id)
    async with asyncio.timeout(60):
        while True:
            progress = await handle.query(PROGRESS_QUERY, result_type=FulfillmentProgress)
            if progress.step is Step.PROVISION_SIMS:
                break
            await asyncio.sleep(0.05)

    url = f"/api/ops/fulfillments/{order_id}/cancel"
    headers = api.ops() | {"Idempotency-Key": "too-early"}
    refused = await api.http.post(url, json={"reason": "too early"}, headers=headers)

    assert refused.status_code == 409
    assert refused.json() == {
        "code": "conflict",
        "message": "cannot cancel: the fulfillment is activating at provision_sims, "
        "not waiting for an operator",
    }
    [action] = await audit(db, order_id)
    assert action["outcome"].startswith("refused: cannot cancel")
    # Repeated, the refusal is the answer again, even once the state would allow nothing new.
    again = await api.http.post(url, json={"reason": "too early"}, headers=headers)
    assert again.json() == refused.json()
    assert (await handle.result()).status is FulfillmentStatus.ACTIVATED


@pytest.mark.usefixtures("worker")
async def test_an_idempotency_key_used_for_another_request_is_refused(
    api: Api, engine: Engine, db: asyncpg.Connection
) -> None:
    order_id, handle = await parked_without_payment_method(engine)
    other = engine.activate("unmapped_product")
    await until(await engine.start(other))
    headers = api.ops() | {"Idempotency-Key": "shared-key"}
    cancelled = await api.http.post(
        f"/api/ops/fulfillments/{other}/cancel", json={"reason": "dup"}, headers=headers
    )
    assert cancelled.status_code == 202

    reused = await api.http.post(
        f"/api/ops/fulfillments/{order_id}/retry", json={"reason": "x"}, headers=headers
    )
    wrong_action = await api.http.post(
        f"/api/ops/fulfillments/{other}/retry", json={"reason": "x"}, headers=headers
    )

    for reply in (reused, wrong_action):
        assert reply.status_code == 409
        assert reply.json()["code"] == "conflict"
        assert "Idempotency-Key already used" in reply.json()["message"]
    assert await audit(db, order_id) == []
    assert (
        await handle.query(PROGRESS_QUERY, result_type=FulfillmentProgress)
    ).waiting_for_operator


async def test_an_action_on_an_order_without_fulfillment_is_404(api: Api) -> None:
    reply = await api.http.post(
        f"/api/ops/fulfillments/{sf_id('801')}/retry", json={"reason": "x"}, headers=api.ops()
    )
    assert reply.status_code == 404
    assert reply.json()["code"] == "not_found"


async def test_actions_refuse_bad_requests_before_recording_anything(
    api: Api, engine: Engine, db: asyncpg.Connection
) -> None:
    order = sf_id("801")
    url = f"/api/ops/fulfillments/{order}/retry"
    cases: list[tuple[dict[str, str], Any]] = [
        ({}, {"reason": "x"}),  # no X-Requested-By
        ({"X-Requested-By": "ops"}, {"reason": "   "}),
        ({"X-Requested-By": "ops"}, {}),
        ({"X-Requested-By": "ops"}, {"reason": "x" * 501}),
        ({"X-Requested-By": "ops", "Idempotency-Key": "has space"}, {"reason": "x"}),
        ({"X-Requested-By": "ops", "Idempotency-Key": "legacy-1"}, {"reason": "x"}),
        ({"X-Requested-By": "ops", "Idempotency-Key": "k" * 201}, {"reason": "x"}),
    ]
    for extra, body in cases:
        headers = {"Authorization": api.ops()["Authorization"]} | extra
        reply = await api.http.post(url, json=body, headers=headers)
        assert reply.status_code in (404, 422), (extra, body)
        if "legacy-1" not in extra.values():
            assert reply.status_code == 422, (extra, body)
        assert reply.json()["code"] in ("invalid_request", "not_found")
    assert await db.fetchval("SELECT count(*) FROM operator_actions") == 0


async def test_invalid_order_ids_are_refused_before_any_use(api: Api, engine: Engine) -> None:
    async with (
        degraded_services(engine.settings, engine.client, postgres=False) as services,
        served(services) as http,
    ):
        for bad in ("801", sf_id("001"), sf_id("801")[:15] + "ZZZ"):
            for action in ("retry", "cancel"):
                reply = await http.post(
                    f"/api/ops/fulfillments/{bad}/{action}",
                    json={"reason": "x"},
                    headers=api.ops(),
                )
                assert reply.status_code == 422, (bad, action)
        bad_filter = await http.get(
            "/api/ops/fulfillments", params={"account": sf_id("801")}, headers=api.ops()
        )
        assert bad_filter.status_code == 422
        reached = await http.post(
            f"/api/ops/fulfillments/{sf_id('801')}/retry", json={"reason": "x"}, headers=api.ops()
        )
    assert reached.status_code == 503


async def test_operator_routes_need_the_ops_token(api: Api) -> None:
    calls = [
        ("POST", f"/api/ops/fulfillments/{sf_id('801')}/retry", {"reason": "x"}),
        ("POST", f"/api/ops/fulfillments/{sf_id('801')}/cancel", {"reason": "x"}),
        ("GET", "/api/ops/fulfillments", None),
        ("POST", "/api/ops/cache/flush", {"scope": "all"}),
    ]
    for method, url, body in calls:
        who = {"X-Requested-By": "ops"}
        missing = await api.http.request(method, url, json=body, headers=who)
        wrong = await api.http.request(
            method, url, json=body, headers=who | {"Authorization": "Bearer wrong"}
        )
        portal = await api.http.request(method, url, json=body, headers=who | api.service())
        assert (missing.status_code, wrong.status_code, portal.status_code) == (401, 401, 403)
        assert portal.json() == {
            "code": "forbidden",
            "message": "this token does not grant the ops scope",
        }


async def test_the_list_filters_and_pages_newest_first(api: Api, record: Record) -> None:
    account, other = sf_id("001"), sf_id("001")
    failed = [sf_id("801") for _ in range(3)]
    for order in failed:
        await record(
            order,
            account,
            status=FulfillmentStatus.FAILED,
            error_code=ErrorCode.PAYMENT_METHOD_MISSING,
        )
    unmapped = sf_id("801")
    await record(
        unmapped, other, status=FulfillmentStatus.FAILED, error_code=ErrorCode.PRODUCT_NOT_MAPPED
    )
    done = sf_id("801")
    await record(done, account, status=FulfillmentStatus.ACTIVATED)

    async def ids(**params: Any) -> list[str]:
        seen: list[str] = []
        cursor = None
        while True:
            query = params | {"limit": 2} | ({"cursor": cursor} if cursor else {})
            reply = await api.http.get("/api/ops/fulfillments", params=query, headers=api.ops())
            assert reply.status_code == 200, reply.text
            seen += [i["sf_order_id"] for i in reply.json()["items"]]
            cursor = reply.json()["next_cursor"]
            if cursor is None:
                return seen

    newest_failed = list(reversed(failed))
    assert await ids() == [done, unmapped, *newest_failed]
    assert await ids(status="failed") == [unmapped, *newest_failed]
    assert await ids(status="failed", error_code="PAYMENT_METHOD_MISSING") == newest_failed
    assert await ids(account=account) == [done, *newest_failed]
    assert await ids(account=other, error_code="PAYMENT_METHOD_MISSING") == []
    for bad in ({"status": "parked"}, {"error_code": "OOPS"}, {"limit": 0}, {"limit": 101}):
        reply = await api.http.get("/api/ops/fulfillments", params=bad, headers=api.ops())
        assert reply.status_code == 422, bad


async def test_cache_flush_by_scope_deletes_its_keys_and_nothing_else(
    api: Api, engine: Engine, record: Record, redis_client: redis.Redis
) -> None:
    keys = CacheKeys(engine.settings.cache_key_prefix)
    account, other = sf_id("001"), sf_id("001")
    orders = [sf_id("801"), sf_id("801")]
    for order in orders:
        await record(order, account)
    elsewhere = sf_id("801")
    await record(elsewhere, other)
    # Other tests share this Redis: start from no engine keys at all.
    flushed = await api.http.post("/api/ops/cache/flush", json={"scope": "all"}, headers=api.ops())
    assert flushed.status_code == 200

    mine = [keys.orders_account(account), *(keys.orders_detail(o) for o in orders)]
    theirs = [keys.orders_account(other), keys.orders_detail(elsewhere)]
    catalog = [keys.services_catalog("products"), keys.services_catalog("unindexed")]
    eligibility = [keys.services_eligibility(account)]
    whmcs = keys.for_whmcs_client(3)
    portal_own = [f"{keys.prefix}session:abc", "unprefixed:key"]
    for key in [*mine, *theirs, catalog[1], *eligibility, *whmcs, *portal_own]:
        await redis_client.set(key, "cached")
    await CacheInvalidator(redis_client, keys).write_in_group(
        CacheGroup.SERVICES_CATALOG, catalog[0], "cached", ttl_seconds=600
    )

    async def flush(body: dict[str, Any]) -> dict[str, Any]:
        reply = await api.http.post("/api/ops/cache/flush", json=body, headers=api.ops())
        assert reply.status_code == 200, reply.text
        result: dict[str, Any] = reply.json()
        return result

    assert await flush({"scope": "orders", "account": account}) == {
        "scope": "orders",
        "account": account,
        "deleted": 3,
    }
    assert await redis_client.exists(*mine) == 0
    assert await redis_client.exists(*theirs) == 2

    assert (await flush({"scope": "services"}))["deleted"] >= 3
    assert await redis_client.exists(*catalog, *eligibility) == 0
    assert not await redis_client.exists(keys.group_index(CacheGroup.SERVICES_CATALOG))
    assert await redis_client.exists(*theirs, *whmcs) == 5

    assert (await flush({"scope": "all"}))["deleted"] == 5
    assert await redis_client.exists(*theirs, *whmcs) == 0
    assert await redis_client.exists(*portal_own) == 2

    for bad in (
        {"scope": "services", "account": account},
        {"scope": "orders", "account": orders[0]},
        {"scope": "everything"},
        {},
    ):
        reply = await api.http.post("/api/ops/cache/flush", json=bad, headers=api.ops())
        assert reply.status_code == 422, bad
    missing_who = await api.http.post(
        "/api/ops/cache/flush",
        json={"scope": "all"},
        headers={"Authorization": api.ops()["Authorization"]},
    )
    assert missing_who.status_code == 422


async def test_cache_flush_answers_503_when_redis_is_unreachable(api: Api, engine: Engine) -> None:
    async with (
        degraded_services(engine.settings, engine.client, postgres=True) as services,
        served(services) as http,
    ):
        reply = await http.post("/api/ops/cache/flush", json={"scope": "all"}, headers=api.ops())
    assert reply.status_code == 503
    assert reply.json()["code"] == "unavailable"


@pytest.mark.usefixtures("worker")
async def test_a_repeated_retry_after_the_fulfillment_parked_again_is_not_a_second_retry(
    api: Api, engine: Engine, db: asyncpg.Connection
) -> None:
    # Retried without fixing the cause: the fulfillment parks again, at attempt 2. A lost reply's
    # repeat of that retry must not be taken as the next retry.
    order_id, handle = await parked_without_payment_method(engine)
    url = f"/api/ops/fulfillments/{order_id}/retry"
    headers = api.ops() | {"Idempotency-Key": "hasty-retry"}
    first = await api.http.post(url, json={"reason": "try again"}, headers=headers)
    assert first.status_code == 202
    async with asyncio.timeout(60):
        while True:
            progress = await handle.query(PROGRESS_QUERY, result_type=FulfillmentProgress)
            if progress.waiting_for_operator and progress.attempt == 2:
                break
            await asyncio.sleep(0.1)

    repeat = await api.http.post(url, json={"reason": "try again"}, headers=headers)

    assert repeat.status_code == 202
    assert repeat.json() == first.json()  # the first answer, kept by Temporal for the run
    progress = await handle.query(PROGRESS_QUERY, result_type=FulfillmentProgress)
    assert (progress.attempt, progress.waiting_for_operator) == (2, True)
    assert len(await audit(db, order_id)) == 1


@pytest.mark.usefixtures("worker")
async def test_a_repeated_cancel_never_reaches_a_fresh_run_of_the_order(
    api: Api, engine: Engine, db: asyncpg.Connection
) -> None:
    order_id, handle = await parked_without_payment_method(engine)
    url = f"/api/ops/fulfillments/{order_id}/cancel"
    headers = api.ops() | {"Idempotency-Key": "cancel-once"}
    first = await api.http.post(url, json={"reason": "withdrawn"}, headers=headers)
    assert first.status_code == 202
    assert (await handle.result()).status is FulfillmentStatus.CANCELLED
    # The order starts afresh under the same workflow id, and parks.
    fresh = await engine.start(order_id)
    await until(fresh)

    repeat = await api.http.post(url, json={"reason": "withdrawn"}, headers=headers)

    assert repeat.status_code == 202
    assert repeat.json() == first.json() | {"progress": None}
    assert (await fresh.query(PROGRESS_QUERY, result_type=FulfillmentProgress)).waiting_for_operator
    assert len(await audit(db, order_id)) == 1


async def test_a_retry_no_worker_answered_in_time_is_settled_by_its_repeat_once(
    api: Api, engine: Engine, db: asyncpg.Connection
) -> None:
    async with worker_running(engine.settings):
        order_id, handle = await parked_without_payment_method(engine)
    engine.whmcs.http.post(f"{engine.whmcs.control_url}/seed", json=PAY_METHOD).raise_for_status()
    request = OperatorRequest(reason="card added", requested_by="ops", request_id="unanswered")

    # No worker polls: the update cannot be answered, and the caller is told to repeat.
    async with open_services(engine.settings) as services:
        with pytest.raises(UnavailableError, match="repeat the request with the same"):
            await perform(
                services.pool,
                services.temporal,
                Action.RETRY,
                order_id,
                request,
                wait=timedelta(seconds=1),
            )
    [unanswered] = await audit(db, order_id)
    assert unanswered["outcome"] == "unavailable: the workflow did not answer in time"

    async with worker_running(engine.settings):
        repeat = await api.http.post(
            f"/api/ops/fulfillments/{order_id}/retry",
            json={"reason": "card added"},
            headers=api.ops() | {"Idempotency-Key": "unanswered"},
        )
        assert repeat.status_code == 202, repeat.text
        assert (await handle.result()).status is FulfillmentStatus.ACTIVATED
    [settled] = await audit(db, order_id)
    assert settled["outcome"] == "accepted"
    attempts = await db.fetchval(
        "SELECT attempts FROM fulfillments WHERE sf_order_id = $1", order_id
    )
    assert attempts == 2


@pytest.mark.usefixtures("worker")
async def test_a_retry_signal_from_the_temporal_ui_is_audited_like_an_api_retry(
    engine: Engine, db: asyncpg.Connection
) -> None:
    order_id, handle = await parked_without_payment_method(engine)
    engine.whmcs.http.post(f"{engine.whmcs.control_url}/seed", json=PAY_METHOD).raise_for_status()
    # What an operator sends from the Temporal UI's "Send signal": a reason, no id, no name.
    await handle.signal("retry", {"reason": "card added by phone"})
    assert (await handle.result()).status is FulfillmentStatus.ACTIVATED
    [row] = await audit(db, order_id)
    assert (row["action"], row["reason"], row["requested_by"], row["outcome"]) == (
        "retry",
        "card added by phone",
        "temporal-ui",
        "accepted",
    )
    assert row["request_id"].startswith("signal-")
