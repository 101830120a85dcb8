"""What an order costs beyond throughput: calls to the outside systems per order, the wait of a
portal user on a SIM order, and the recovery after a worker dies mid-AddOrder.

Runs on the same local stack as benchmarks/fulfillment.py (real listener and worker processes,
the emulators in this process), one order at a time so that every request the emulators log in
an order's window is that order's:

- **Calls per order**, counted from the emulators' request logs (what the upstreams see, which
  is what counts against Salesforce's daily API allowance): each log is cleared, the order is
  activated as the portal does (one `PATCH sobjects/Order/<id>`, the first request of the window,
  not counted), and the logs are read once its fulfillment has closed in Temporal, before the
  benchmark asks Salesforce anything. Salesforce REST calls (`/services/data/…`) are counted;
  OAuth token requests are counted apart (they do not count against the allowance); the
  streaming transport's own traffic is the listener's, not the order's. Internet and eSIM
  orders (the eSIM's line activates at once), medians over `--latency-orders` orders each.
- **SIM order latency**: commit → `Activated` written back (SystemModstamp) for those eSIM
  orders, beside the bare workflow of the same activity shape.
- **Recovery after a worker kill**: WHMCS commits AddOrder 4 s after it arrives; the worker is
  SIGKILLed once AddOrder is out (its billing intent row exists, one second later), a new worker
  is started at once, and the figure is from the kill to the order's `Activated` write-back.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections import Counter
from datetime import date
from typing import Any

import asyncpg
import httpx

from benchmarks import fulfillment
from benchmarks.fulfillment import (
    Say,
    Stack,
    _activated,
    _bare,
    _collection,
    _create,
    _finished,
    _percentile,
    _query,
    _shape,
)
from benchmarks.results import BenchmarkResult, Metric, Options, median

NAME = "order_costs"
SYSTEMS = ("salesforce", "whmcs", "freebit")
KILL_LATE_COMMIT_MS = 4_000


async def _logs(stack: Stack, method: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    async with httpx.AsyncClient(verify=stack.ca_file, trust_env=False, timeout=30) as http:
        for system in SYSTEMS:
            reply = await http.request(method, f"{stack.controls[system]}/requests")
            reply.raise_for_status()
            found[system] = reply.json()["requests"] if method == "GET" else []
    return found


def _calls(logs: dict[str, list[dict[str, Any]]], order: str) -> dict[str, Any]:
    """The order's calls per system; the portal's activation PATCH is taken out."""
    salesforce = sorted(logs["salesforce"], key=lambda record: record["time"])
    rest = [r for r in salesforce if r["path"].startswith("/services/data/")]
    activation = rest[0] if rest else None
    if activation is None or not (
        activation["method"] == "PATCH" and activation["path"].endswith(f"/sobjects/Order/{order}")
    ):
        raise RuntimeError(f"the window does not start with the portal's activation: {rest[:1]}")
    rest = rest[1:]
    tokens = [r for r in salesforce if r["path"] == "/services/oauth2/token"]
    whmcs = [r for r in logs["whmcs"] if not r["path"].startswith("/__emulator__")]
    freebit = [r for r in logs["freebit"] if not r["path"].startswith("/__emulator__")]
    return {
        "salesforce": len(rest),
        "salesforce_tokens": len(tokens),
        "whmcs": len(whmcs),
        "freebit": len(freebit),
        "salesforce_calls": [f"{r['method']} {_short(r['path'])}" for r in rest],
        "whmcs_actions": dict(Counter(str(r["action"]) for r in whmcs)),
        "freebit_calls": [_short(r["path"]) for r in freebit],
    }


def _short(path: str) -> str:
    return path.split("/services/data/", 1)[-1].split("/", 1)[-1]


async def _activate_one(stack: Stack, order: str) -> float:
    """As the portal does: the order's Status alone; the moment just before the PATCH."""
    began = time.time()
    reply = await stack.sf.patch(f"sobjects/Order/{order}", json={"Status": "Activated"})
    reply.raise_for_status()
    return began


async def _esim_entry(stack: Stack) -> dict[str, Any]:
    return (
        await _query(
            stack.sf,
            "SELECT Id, Pricebook2Id, UnitPrice FROM PricebookEntry"
            " WHERE Product2.ProductCode = 'ESIM-DATA-20GB' AND Pricebook2.Name = 'Portal'",
        )
    )[0]


async def _create_esim(stack: Stack, entry: dict[str, Any], count: int) -> list[str]:
    """`count` Draft eSIM orders (a phone number and EID each) with one item each."""
    orders = [
        {
            "attributes": {"type": "Order"},
            "AccountId": stack.account,
            "Pricebook2Id": entry["Pricebook2Id"],
            "Status": "Draft",
            "EffectiveDate": date.today().isoformat(),
            "BillingStreet": "1-2-3 Shibuya",
            "BillingCity": "Shibuya-ku",
            "BillingState": "Tokyo",
            "BillingPostalCode": "150-0002",
            "BillingCountry": "Japan",
            "SIM_Type__c": "eSIM",
            "EID__c": "8904903200000100" + f"{secrets.randbelow(10**16):016d}",
            "SIM_Phone_Number__c": "070" + f"{secrets.randbelow(10**8):08d}",
        }
        for _ in range(count)
    ]
    created = await _collection(stack.sf, "POST", orders)
    items = [
        {
            "attributes": {"type": "OrderItem"},
            "OrderId": order,
            "PricebookEntryId": entry["Id"],
            "Quantity": 1,
            "UnitPrice": entry["UnitPrice"],
        }
        for order in created
    ]
    await _collection(stack.sf, "POST", items)
    return created


async def _order_cost(stack: Stack, order: str) -> tuple[dict[str, Any], float]:
    """The order's calls, and commit → Activated written back, in ms."""
    await _logs(stack, "DELETE")
    committed = await _activate_one(stack, order)
    await _finished(stack.client, order, within=120)
    calls = _calls(await _logs(stack, "GET"), order)
    written = (await _activated(stack, [order], within=60))[order]
    return calls, (written - committed) * 1000


async def _recovery(stack: Stack, say: Say) -> float:
    """Seconds from a worker SIGKILLed mid-AddOrder to that order written back Activated."""
    assert stack.start_worker is not None
    (order,) = await _create(stack, 1)
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        fault = {"kind": "late_commit", "ms": KILL_LATE_COMMIT_MS, "count": 1}
        reply = await http.post(
            f"{stack.controls['whmcs']}/faults", json=fault | {"action": "AddOrder"}
        )
        reply.raise_for_status()
    await _activate_one(stack, order)
    database_url = stack.settings.database_url or ""
    connection = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + 60
        while not await connection.fetchval(
            "SELECT count(*) FROM billing_order_intents WHERE sf_order_id = $1", order
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"order {order} never reached AddOrder")
            await asyncio.sleep(0.05)
    finally:
        await connection.close()
    await asyncio.sleep(1)  # past the lookup: AddOrder is out, not yet committed
    stack.worker.popen.send_signal(signal.SIGKILL)
    stack.worker.popen.wait(timeout=10)
    killed = time.time()
    stack.worker = stack.start_worker()
    written = (await _activated(stack, [order], within=300))[order]
    seconds = written - killed
    say(f"  worker SIGKILLed mid-AddOrder: order Activated {seconds:.1f} s after the kill")
    return seconds


async def _measure(stack: Stack, say: Say) -> BenchmarkResult:
    count = max(3, fulfillment._settings["latency_orders"])
    internet = await _create(stack, count)
    esim_entry = await _esim_entry(stack)
    esims = await _create_esim(stack, esim_entry, count + 1)
    # The first eSIM order warms the SIM path and gives the bare shape of a SIM fulfillment.
    warm, esims = esims[0], esims[1:]
    await _order_cost(stack, warm)
    sim_shape = await _shape(stack.client, warm)
    internet_costs = [await _order_cost(stack, order) for order in internet]
    sim_costs = [await _order_cost(stack, order) for order in esims]
    sim_bare: list[float] = []
    for _ in range(count):
        sim_bare += await _bare(stack.client, sim_shape, 1)
    recovery = await _recovery(stack, say)

    def per_order(costs: list[tuple[dict[str, Any], float]], key: str) -> float:
        return median([float(calls[key]) for calls, _ in costs])

    sim_p50 = _percentile([ms for _, ms in sim_costs], 0.5)
    bare_p50 = _percentile(sim_bare, 0.5) * 1000
    say(f"  internet order calls: {internet_costs[0][0]}")
    say(f"  eSIM order calls: {sim_costs[0][0]}")
    metrics = [
        Metric(
            "sf_calls_per_order",
            per_order(internet_costs, "salesforce"),
            "calls",
            f"Salesforce REST calls per internet order, median of {count} (target <= 2;"
            " token requests apart)",
        ),
        Metric(
            "sf_calls_per_sim_order",
            per_order(sim_costs, "salesforce"),
            "calls",
            f"Salesforce REST calls per eSIM order, median of {count} (target <= 2)",
        ),
        Metric(
            "sf_token_requests_per_order",
            per_order(internet_costs, "salesforce_tokens"),
            "calls",
            "OAuth token requests per internet order (not counted against the allowance)",
        ),
        Metric(
            "whmcs_calls_per_order",
            per_order(internet_costs, "whmcs"),
            "calls",
            f"WHMCS API calls per internet order, median of {count}",
        ),
        Metric(
            "whmcs_calls_per_sim_order",
            per_order(sim_costs, "whmcs"),
            "calls",
            f"WHMCS API calls per eSIM order, median of {count}",
        ),
        Metric(
            "freebit_calls_per_sim_order",
            per_order(sim_costs, "freebit"),
            "calls",
            f"Freebit calls per eSIM order whose line activates at once, median of {count}",
        ),
        Metric(
            "sim_e2e_latency_p50_ms",
            round(sim_p50, 1),
            "ms",
            f"eSIM order: commit -> Salesforce Activated, p50 of {count}",
        ),
        Metric(
            "bare_sim_e2e_latency_p50_ms",
            round(bare_p50, 1),
            "ms",
            f"bare workflow of a SIM fulfillment's shape {list(sim_shape)}: start -> result",
        ),
        Metric(
            "sim_e2e_latency_ratio_p50",
            round(sim_p50 / bare_p50, 2),
            "ratio",
            "eSIM order e2e p50 / bare p50",
        ),
        Metric(
            "recovery_after_worker_kill_s",
            round(recovery, 1),
            "s",
            f"worker SIGKILLed while AddOrder was out (WHMCS committing it"
            f" {KILL_LATE_COMMIT_MS / 1000:g} s after it arrived) -> order Activated (target < 30)",
        ),
    ]
    return BenchmarkResult(
        NAME,
        "calls to the outside systems per order, eSIM order latency, recovery after a worker kill",
        metrics,
        {
            "internet_orders": [calls for calls, _ in internet_costs],
            "sim_orders": [calls for calls, _ in sim_costs],
            "sim_e2e_ms": [round(ms, 1) for _, ms in sim_costs],
            "sim_bare_e2e_ms": [round(v * 1000, 1) for v in sim_bare],
            "sim_shape": list(sim_shape),
        },
    )


def run(options: Options, say: Say) -> BenchmarkResult:
    del options  # Sized by --latency-orders.
    result: BenchmarkResult = asyncio.run(fulfillment._run(say, _measure))
    return result
