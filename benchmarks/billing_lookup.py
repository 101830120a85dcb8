"""`billing_lookup`: what the look for an earlier WHMCS order costs, made before every AddOrder.

A client with 500 past services, against the WHMCS emulator over loopback HTTP. A first attempt
looks by domain (each service carries its Salesforce item id as its domain, which
`GetClientsProducts domain=` filters by: one call per line); a retry's thorough look also reads
the client's services of the ordered product (`GetClientsProducts pid=`, WHMCS cannot filter by
the marker custom field) and checks the marker on each. Measured for a miss (the common case:
no earlier attempt) when the 500 services are of other products and when all are of the ordered
product, each against reading every service of the client (the unbounded read it replaces).
Figures are the median of `rounds` x 20 lookups; calls are WHMCS requests per lookup.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
from pydantic import SecretStr

from benchmarks.results import BenchmarkResult, Metric, Options, median
from clients.whmcs import WhmcsClient
from domain.billing import BillingLine, BillingOrder
from emulators.common.server import ThreadedServer
from emulators.whmcs import demo
from emulators.whmcs.app import API_PATH, create_app

NAME = "billing_lookup"
HISTORY = 500
LOOKUPS = 20
_IDENTIFIER, _SECRET = "bench-identifier", "bench-secret"


def _order(sf_order_id: str, item: str, product: int) -> BillingOrder:
    line = BillingLine(
        sf_order_item_id=item,
        whmcs_product_id=product,
        billing_cycle="monthly",
        price_override=Decimal("990"),
    )
    return BillingOrder(
        sf_order_id=sf_order_id,
        whmcs_client_id=demo.CLIENT_WITH_CARD,
        payment_method="stripe",
        lines=(line,),
    )


async def _measure(
    client: WhmcsClient, base: str, history_product: int, rounds: int
) -> dict[str, float]:
    http = httpx.AsyncClient(base_url=base)
    try:
        await http.post("/__emulator__/reset", json={"seed": 1})
        await http.post("/__emulator__/seed", json={"dataset": "demo"})
        for n in range(HISTORY):
            await client.add_order(_order("801BENCH00000000AA", f"802H{n:014d}", history_product))
        wanted = _order("801BENCH00000001AA", "802NEW0000000001AA", demo.PRODUCT_FIBER_INTERNET)

        async def timed(lookup: Callable[[], Any]) -> tuple[float, float]:
            await http.delete("/__emulator__/requests")
            samples = []
            for _ in range(LOOKUPS):
                started = time.perf_counter()
                await lookup()
                samples.append((time.perf_counter() - started) * 1000)
            calls = (await http.get("/__emulator__/requests")).json()["count"]
            return median(samples), calls / LOOKUPS

        first, bounded, full = [], [], []
        calls_first = calls_bounded = calls_full = 0.0
        for _ in range(rounds):
            ms, calls_first = await timed(lambda: client.find_billing_order(wanted, thorough=False))
            first.append(ms)
            ms, calls_bounded = await timed(lambda: client.find_billing_order(wanted))
            bounded.append(ms)
            ms, calls_full = await timed(
                lambda: client.get_clients_products(wanted.whmcs_client_id)
            )
            full.append(ms)
        return {
            "first_ms": median(first),
            "first_calls": calls_first,
            "bounded_ms": median(bounded),
            "bounded_calls": calls_bounded,
            "full_ms": median(full),
            "full_calls": calls_full,
        }
    finally:
        await http.aclose()


async def _run(base: str, rounds: int) -> dict[str, dict[str, float]]:
    client = WhmcsClient(f"{base}{API_PATH}", _IDENTIFIER, SecretStr(_SECRET))
    async with client:
        return {
            "other_products": await _measure(client, base, demo.PRODUCT_VPN_BASIC, rounds),
            "same_product": await _measure(client, base, demo.PRODUCT_FIBER_INTERNET, rounds),
        }


def run(options: Options, say: Any = print) -> BenchmarkResult:
    app = create_app(seed=1, settings={"identifier": _IDENTIFIER, "secret": _SECRET})
    with ThreadedServer(app) as server:
        figures = asyncio.run(_run(server.base_url, options.rounds))
    metrics = []
    for history, found in figures.items():
        label = history.replace("_", " ")
        say(
            f"  500 past services of {label}: first attempt {found['first_ms']:.1f} ms in "
            f"{found['first_calls']:g} calls; thorough {found['bounded_ms']:.1f} ms in "
            f"{found['bounded_calls']:g} calls; reading them all {found['full_ms']:.1f} ms in "
            f"{found['full_calls']:g} calls"
        )
        metrics += [
            Metric(
                f"first_lookup_ms_{history}",
                round(found["first_ms"], 2),
                "ms",
                f"median first-attempt lookup (by domain, a miss), 500 past services of {label}",
            ),
            Metric(
                f"first_lookup_calls_{history}",
                found["first_calls"],
                "calls",
                f"WHMCS requests per first-attempt lookup, 500 past services of {label}",
            ),
            Metric(
                f"lookup_ms_{history}",
                round(found["bounded_ms"], 2),
                "ms",
                f"median thorough lookup (a retry's, a miss), 500 past services of {label}",
            ),
            Metric(
                f"lookup_calls_{history}",
                found["bounded_calls"],
                "calls",
                f"WHMCS requests per lookup, 500 past services of {label}",
            ),
            Metric(
                f"lookup_ratio_{history}",
                round(found["bounded_ms"] / found["full_ms"], 3),
                "x",
                "lookup time / reading every service of the client",
            ),
        ]
    return BenchmarkResult(
        name=NAME,
        description="the look for an earlier WHMCS order before AddOrder, client with history",
        metrics=metrics,
        details=figures,
    )
