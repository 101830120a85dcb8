"""The operator commands as an operator runs them: `fulfillment status|retry|cancel|failed|cache
flush`, each its own process with the engine's environment, against the test's Postgres, Redis,
Temporal and the real worker (in this process, so the commands run without blocking it)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as redis

from clients.cache import CacheKeys
from domain.fulfillment import FulfillmentProgress, FulfillmentStatus
from domain.messages import PROGRESS_QUERY
from domain.reconciliation import ReconciliationInput
from tests.fixtures.api import OPS_TOKEN, Api
from tests.fixtures.engine import Engine
from workflows.reconciliation import FulfillmentReconciliation

REPO = Path(__file__).resolve().parents[2]
PAY_METHOD = {
    "records": {"paymethods": [{"clientid": 3, "type": "RemoteCreditCard", "gateway": "stripe"}]}
}


@dataclass
class Ran:
    status: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


async def fulfillment(engine: Engine, *args: str, env: dict[str, str] | None = None) -> Ran:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        *args,
        env=env if env is not None else engine.environment() | {"USER": "tester"},
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


async def parked(engine: Engine, key: str = "no_payment_method") -> tuple[str, Any]:
    order_id = engine.activate(key)
    handle = await engine.start(order_id)
    async with asyncio.timeout(60):
        while True:
            progress = await handle.query(PROGRESS_QUERY, result_type=FulfillmentProgress)
            if progress.waiting_for_operator:
                return order_id, handle
            await asyncio.sleep(0.1)


@pytest.mark.usefixtures("worker")
async def test_an_operator_finds_a_parked_order_retries_it_and_it_activates(
    engine: Engine, db: asyncpg.Connection
) -> None:
    order_id, handle = await parked(engine)

    failed = await fulfillment(engine, "failed")
    assert failed.status == 0, failed.stderr
    header, row = failed.stdout.splitlines()
    assert header.split() == ["ORDER", "ACCOUNT", "CODE", "STEP", "AGE", "TRIES", "MESSAGE"]
    assert row.split()[:4] == [
        order_id,
        engine.order(order_id)["AccountId"],
        "PAYMENT_METHOD_MISSING",
        "validate_payment_method",
    ]
    scripted = await fulfillment(engine, "failed", "--json", "--error-code", "INVALID_ORDER")
    assert scripted.json() == {"items": [], "next_cursor": None}

    status = await fulfillment(engine, "status", order_id)
    assert status.status == 0
    lines = dict(line.split(None, 1) for line in status.stdout.splitlines())
    assert (lines["status"], lines["step"]) == ("failed", "validate_payment_method")
    assert lines["error"].startswith("PAYMENT_METHOD_MISSING: ")
    assert (await fulfillment(engine, "status", order_id, "--json")).json()["attempts"] == 1

    engine.whmcs.http.post(f"{engine.whmcs.control_url}/seed", json=PAY_METHOD).raise_for_status()
    retry = ["retry", order_id, "--reason", "card added", "--as", "alice", "--request-id", "r-1"]
    first, again = await asyncio.gather(fulfillment(engine, *retry), fulfillment(engine, *retry))

    assert (first.status, again.status) == (0, 0), first.stderr + again.stderr
    assert first.stdout.startswith(f"retry of order {order_id} accepted (by alice, request r-1)"), (
        first.stdout
    )
    assert first.stderr == ""  # nothing but the answer
    assert (await handle.result()).status is FulfillmentStatus.ACTIVATED
    actions = await db.fetch(
        "SELECT requested_by, reason, outcome FROM operator_actions WHERE sf_order_id = $1",
        order_id,
    )
    assert [tuple(a) for a in actions] == [("alice", "card added", "accepted")]

    late = await fulfillment(engine, "retry", order_id, "--reason", "again")
    assert late.status == 1
    assert late.stdout == ""
    assert late.stderr == (
        "fulfillment retry: cannot retry: the fulfillment is activated and its workflow has ended\n"
    )
    scripted_late = await fulfillment(engine, "retry", order_id, "--reason", "again", "--json")
    assert scripted_late.status == 1
    assert scripted_late.json()["code"] == "conflict"
    assert (await fulfillment(engine, "failed")).stdout == "no parked fulfillments\n"


@pytest.mark.usefixtures("worker")
async def test_an_order_a_terminated_run_left_activating_is_listed_with_what_to_do(
    engine: Engine,
) -> None:
    order_id = engine.activate("internet")
    engine.fault(engine.whmcs, {"kind": "fail", "rate": 1.0, "status": 503})
    handle = await engine.start(order_id)
    async with asyncio.timeout(30):
        while engine.order(order_id)["Activation_Status__c"] != "Activating":  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    await handle.terminate("pressed Terminate in the Temporal UI")
    await engine.client.execute_workflow(
        FulfillmentReconciliation.run,
        ReconciliationInput(),
        id=f"reconcile-{order_id}",
        task_queue=engine.settings.temporal_task_queue,
    )

    failed = await fulfillment(engine, "failed")
    _, row = failed.stdout.splitlines()
    assert row.split()[:3] == [order_id, engine.order(order_id)["AccountId"], "-"]
    assert "Salesforce shows the order Activating" in row
    status = await fulfillment(engine, "status", order_id)
    lines = dict(line.split(None, 1) for line in status.stdout.splitlines())
    assert lines["status"] == "failed"
    assert "ended terminated" in lines["error"]
    assert "re-activate the order in Salesforce" in lines["error"]


@pytest.mark.usefixtures("worker")
async def test_cancel_from_the_command_line_ends_the_fulfillment_cancelled(
    engine: Engine, db: asyncpg.Connection
) -> None:
    order_id, handle = await parked(engine, "unmapped_product")

    ran = await fulfillment(engine, "cancel", order_id, "--reason", "product withdrawn", "--json")

    assert ran.status == 0, ran.stderr
    answer = ran.json()
    assert (answer["action"], answer["requested_by"], answer["outcome"]) == (
        "cancel",
        "tester",
        "accepted",
    )
    assert (await handle.result()).status is FulfillmentStatus.CANCELLED
    assert engine.order(order_id)["Activation_Status__c"] == "Cancelled"
    status = (await fulfillment(engine, "status", order_id, "--json")).json()
    assert status["status"] == "cancelled"


async def test_cache_flush_from_the_command_line(engine: Engine, redis_client: redis.Redis) -> None:
    keys = CacheKeys(engine.settings.cache_key_prefix)
    account = "001000000000001AAA"
    await redis_client.set(keys.orders_account(account), "cached")
    await redis_client.set(keys.services_catalog("book"), "cached")

    by_account = await fulfillment(
        engine, "cache", "flush", "--scope", "orders", "--account", account
    )
    assert by_account.status == 0, by_account.stderr
    assert by_account.stdout == f"flushed 1 key(s): orders of account {account}\n"
    everything = await fulfillment(engine, "cache", "flush", "--scope", "all", "--json")
    assert everything.json()["scope"] == "all" and everything.json()["deleted"] >= 1
    assert not await redis_client.exists(keys.services_catalog("book"))

    unnamed = await fulfillment(engine, "cache", "flush", "--scope", "orders")
    assert unnamed.status == 2
    assert unnamed.stderr == (
        "fulfillment cache flush: --account: name an account, or all, for the orders scope\n"
    )


async def test_failures_are_one_clear_line_and_a_non_zero_status(engine: Engine) -> None:
    unknown = await fulfillment(engine, "status", "801000000000001AAA")
    assert (unknown.status, unknown.stderr) == (
        1,
        "fulfillment status: no fulfillment for order 801000000000001AAA\n",
    )
    not_an_order = await fulfillment(engine, "retry", "001000000000001AAA", "--reason", "x")
    assert not_an_order.status == 2
    assert not_an_order.stderr.count("\n") == 1
    assert "ORDER_ID: not a Salesforce id of the expected object" in not_an_order.stderr

    nobody = engine.environment()
    nobody.pop("USER", None)
    anonymous = await fulfillment(
        engine, "retry", "801000000000001AAA", "--reason", "x", env=nobody
    )
    assert (anonymous.status, anonymous.stderr) == (
        2,
        "fulfillment retry: say who asks with --as (no $USER to default to)\n",
    )

    down = engine.environment() | {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    unreachable = await fulfillment(engine, "failed", env=down)
    assert unreachable.status == 1
    assert unreachable.stderr.count("\n") == 1
    assert unreachable.stderr.startswith("fulfillment failed: Postgres unavailable")
    assert "Traceback" not in unreachable.stderr

    unset = {k: v for k, v in engine.environment().items() if k != "DATABASE_URL"}
    missing = await fulfillment(engine, "failed", env=unset)
    assert missing.status == 2
    assert missing.stderr.count("\n") == 1 and "DATABASE_URL" in missing.stderr


@pytest.mark.usefixtures("worker")
async def test_an_operator_with_only_the_ops_token_works_through_the_api_the_same(
    engine: Engine, api: Api
) -> None:
    order_id, handle = await parked(engine)
    # A laptop: no database, Redis, Temporal or Salesforce settings, only the API and its token.
    laptop = {
        "PATH": os.environ.get("PATH", ""),
        "USER": "alice",
        "API_OPS_TOKEN": OPS_TOKEN,
        "FULFILLMENT_API_URL": api.base_url,
    }

    remote = await fulfillment(engine, "status", order_id, "--json", env=laptop)
    here = await fulfillment(engine, "status", order_id, "--json")
    assert remote.status == 0, remote.stderr
    assert remote.json() == here.json()
    failed = await fulfillment(engine, "failed", "--json", env=laptop)
    assert failed.json() == (await fulfillment(engine, "failed", "--json")).json()
    assert [item["sf_order_id"] for item in failed.json()["items"]] == [order_id]
    planned = await fulfillment(engine, "reconcile", "--dry-run", "--json", env=laptop)
    assert planned.status == 0, planned.stderr
    assert planned.json()["dry_run"] is True
    letters = await fulfillment(engine, "dead-letters", env=laptop)
    assert (letters.status, letters.stdout) == (0, "no dead letters\n")
    flushed = await fulfillment(
        engine, "cache", "flush", "--scope", "services", "--json", env=laptop
    )
    assert flushed.status == 0 and flushed.json()["scope"] == "services", flushed.stderr

    engine.whmcs.http.post(f"{engine.whmcs.control_url}/seed", json=PAY_METHOD).raise_for_status()
    retry = ["retry", order_id, "--reason", "card added", "--request-id", "laptop-1"]
    accepted = await fulfillment(engine, *retry, env=laptop)
    assert accepted.status == 0, accepted.stderr
    assert accepted.stdout.startswith(f"retry of order {order_id} accepted (by alice")
    assert (await handle.result()).status is FulfillmentStatus.ACTIVATED

    # The same refusals and exit codes as with the engine's own settings.
    late = await fulfillment(engine, "retry", order_id, "--reason", "again", env=laptop)
    assert (late.status, late.stderr) == (
        1,
        "fulfillment retry: cannot retry: the fulfillment is activated and its workflow has "
        "ended\n",
    )
    missing = await fulfillment(engine, "status", "801000000000001AAA", "--json", env=laptop)
    assert missing.status == 1 and missing.json()["code"] == "not_found"
    stranger = await fulfillment(
        engine, "failed", env=laptop | {"API_OPS_TOKEN": "not-the-token-but-long-enough-0123"}
    )
    assert (stranger.status, stranger.stderr) == (1, "fulfillment failed: unknown token\n")
