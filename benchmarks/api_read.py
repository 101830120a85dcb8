"""Cached API reads: `GET /api/orders/{id}/fulfillment` as the portal calls it, against a bare
FastAPI route returning the same JSON, in the same run on the same machine.

The real API runs as `fulfillment api` does in production (its own process, uvicorn, every
middleware, the bearer check, the id check, the Redis read) on an embedded Postgres and Redis
(devstack.services). One read-model row is seeded and the first call fills
`orders:detail:<id>`; after that every measured read is a Redis hit (checked through the API's
own cache metrics, not assumed). Temporal is never called on this path; the app's client is
lazy, pointed at a port nothing listens on. The baseline (`benchmarks.bare_app`) answers the
document the real API returned, from memory, through the same server and framework. Both run as
subprocesses; the load comes from this process (benchmarks.load). The two targets alternate
within each round, so drift on a shared machine hits both alike; figures are medians of rounds.

Two kinds of load, one after the other:

- closed loop (`--connections`, 50; `--seconds` each): the most each target answers, what the
  `api_read_rps` / `api_read_ratio` figures have always been;
- open loop (OPEN_SECONDS, 10 s each, after `--warmup`): the portal's steady rates (100 and 300
  requests/s) and 80 % of the API's closed-loop maximum of this run, each request timed from
  when it was due (benchmarks.load.drive_open), so a stall is charged to every request it held
  up. The p99 at 300 requests/s is the figure with a target (25 ms).

The load generator shares the machine's cores with the servers: its CPU share is reported per
phase, and the servers' CPU per request too (read from /proc).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import secrets
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.cpu import cpu_seconds
from benchmarks.load import LATE_AFTER_MS, LoadResult, OpenLoopResult, drive, drive_open
from benchmarks.results import BenchmarkResult, Metric, Options, median, work_directory
from clients.cache import CacheKeys, create_redis
from clients.fulfillment_store import FulfillmentStore
from clients.postgres import create_pool
from devstack.process import ChildProcess, free_port
from devstack.services import start_postgres, start_redis
from domain.fulfillment import FulfillmentStatus, Step
from domain.steps import FulfillmentRecord
from migrations.runner import apply_migrations

NAME = "api_read"
SERVICE_TOKEN = f"bench-{secrets.token_urlsafe(24)}"
OPS_TOKEN = f"bench-{secrets.token_urlsafe(24)}"
ORDER, ACCOUNT = "801000000000001AAA", "001000000000001AAA"
PATH = f"/api/orders/{ORDER}/fulfillment"
# Open loop: the portal's steady rates, then this share of the API's closed-loop maximum.
OPEN_RATES = (100, 300)
OPEN_SHARE_OF_MAX = 0.8
OPEN_SECONDS = 10.0
TARGET_P99_MS_AT_300 = 25.0


async def _seed(database_url: str) -> None:
    await apply_migrations(database_url, create_portal_tables=True)
    pool = await create_pool(database_url, max_size=2)
    try:
        await FulfillmentStore(pool).record(
            FulfillmentRecord(
                sf_order_id=ORDER,
                sf_account_id=ACCOUNT,
                workflow_id=f"order-fulfillment-{ORDER}",
                status=FulfillmentStatus.ACTIVATED,
                step=Step.INVALIDATE_CACHES,
                whmcs_order_id=4101,
                whmcs_invoice_id=8202,
                whmcs_service_ids=(9301, 9302),
                version=1,
            )
        )
    finally:
        await pool.close()


async def _cached(redis_url: str) -> bool:
    client = create_redis(redis_url)
    try:
        return bool(await client.exists(CacheKeys().orders_detail(ORDER)))
    finally:
        await client.aclose()


def _ready(process: ChildProcess, port: int, url: str) -> None:
    def answers() -> bool:
        try:
            return httpx.get(url, timeout=2.0, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    # Ours, not a stale server on the same port.
    process.wait_ready(lambda: process.listens_on(port) and answers(), timeout=60, what=url)


def _start_api(work: Path, database_url: str, redis_url: str) -> tuple[ChildProcess, str]:
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        # Lazy client, never used on this path: nothing listens there.
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "API_SERVICE_TOKEN": SERVICE_TOKEN,
        "API_OPS_TOKEN": OPS_TOKEN,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "WARNING",
    }
    process = ChildProcess(
        "api",
        [sys.executable, "-m", "cli", "api"],
        log_file=work / "api.log",
        env=env,
        # Away from any .env in the checkout: the figures must not depend on one.
        cwd=work,
    )
    base = f"http://127.0.0.1:{port}"
    _ready(process, port, f"{base}/api/health")
    return process, base


def _start_bare(work: Path, document: dict[str, Any]) -> tuple[ChildProcess, str]:
    port = free_port()
    path = work / "document.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    process = ChildProcess(
        "bare",
        [sys.executable, "-m", "benchmarks.bare_app", "--port", str(port), "--document", str(path)],
        log_file=work / "bare.log",
        env={"PATH": os.environ.get("PATH", "")},
        cwd=Path(__file__).resolve().parents[1],
    )
    base = f"http://127.0.0.1:{port}"
    _ready(process, port, f"{base}{PATH}")
    return process, base


def _cache_reads(base: str) -> dict[str, float]:
    """The API's own count of orders:detail reads by result (hit, miss, error)."""
    counts: dict[str, float] = {}
    text = httpx.get(f"{base}/metrics", timeout=5, trust_env=False).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "fulfillment_api_orders_cache_reads_total"
                and sample.labels.get("key") == "detail"
            ):
                counts[sample.labels["result"]] = sample.value
    return counts


def _figures(run: LoadResult) -> dict[str, float]:
    figures: dict[str, float] = {
        "requests": run.requests,
        "seconds": round(run.seconds, 3),
        "rps": round(run.rps, 1),
        "p50_ms": round(run.p50_ms, 2),
        "p99_ms": round(run.p99_ms, 2),
        "max_ms": round(run.latencies_ms[-1], 2),
        "generator_cpu_share": round(run.cpu_share, 3),
    }
    if isinstance(run, OpenLoopResult):
        figures |= {
            "rate": run.rate,
            "due": run.due,
            "late": run.late,
            "waited_for_connection": run.waited_for_connection,
            "send_lag_p99_ms": round(run.send_lag_p99_ms, 2),
            "connections": run.connections,
            "reopened": run.reopened,
        }
    return figures


def _rate_label(rate: float, share: bool) -> str:
    return f"{round(OPEN_SHARE_OF_MAX * 100)}pct" if share else f"{rate:g}rps"


def run(options: Options, say: Any = print) -> BenchmarkResult:
    headers = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    with work_directory("bench-api-read-") as work, ExitStack() as stack:
        postgres = start_postgres(work / "postgres", durable=False, log_file=work / "pg.log")
        stack.callback(postgres.stop)
        redis = start_redis(port=None, data_dir=work / "redis", persist=False)
        stack.callback(redis.stop)
        asyncio.run(_seed(postgres.url))
        api, api_base = _start_api(work, postgres.url, redis.url)
        stack.callback(api.stop)

        first = httpx.get(f"{api_base}{PATH}", headers=headers, timeout=10, trust_env=False)
        if first.status_code != 200:
            raise RuntimeError(f"the API answered {first.status_code}: {first.text}")
        if not asyncio.run(_cached(redis.url)):
            raise RuntimeError("the first read did not fill orders:detail in Redis")
        bare, bare_base = _start_bare(work, first.json())
        stack.callback(bare.stop)
        same = httpx.get(f"{bare_base}{PATH}", timeout=10, trust_env=False).json()
        if same != first.json():
            raise RuntimeError("the baseline does not answer the API's document")

        targets = {"api": (f"{api_base}{PATH}", headers), "bare": (f"{bare_base}{PATH}", None)}
        pids = {"api": api.popen.pid, "bare": bare.popen.pid}
        runs: dict[str, list[LoadResult]] = {"api": [], "bare": []}
        reads_before = _cache_reads(api_base)
        for round_ in range(options.rounds):
            order = ["api", "bare"] if round_ % 2 == 0 else ["bare", "api"]
            for name in order:
                url, target_headers = targets[name]
                result = asyncio.run(
                    drive(
                        url,
                        headers=target_headers,
                        connections=options.connections,
                        seconds=options.seconds,
                        warmup=options.warmup,
                    )
                )
                if result.non_200:
                    raise RuntimeError(f"{name}: {result.non_200} answers were not 200")
                runs[name].append(result)
                say(
                    f"  {NAME} round {round_ + 1}/{options.rounds} {name:4}: "
                    f"{result.rps:8.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
                    f"p99 {result.p99_ms:6.2f} ms  (client CPU {result.cpu_share:.0%} of cores)"
                )

        api_rps = median([r.rps for r in runs["api"]])
        bare_rps = median([r.rps for r in runs["bare"]])
        # (rate, label): the steady rates, then a share of this run's own API maximum.
        rates = [(float(rate), _rate_label(rate, False)) for rate in OPEN_RATES]
        rates.append((round(OPEN_SHARE_OF_MAX * api_rps), _rate_label(0, True)))
        open_runs: dict[str, dict[str, list[OpenLoopResult]]] = {
            label: {"api": [], "bare": []} for _, label in rates
        }
        # Server CPU microseconds per request sent (warm-up included), per label and target.
        server_us: dict[str, dict[str, list[float]]] = {
            label: {"api": [], "bare": []} for _, label in rates
        }
        for round_ in range(options.rounds):
            for step, (rate, label) in enumerate(rates):
                order = ["api", "bare"] if (round_ + step) % 2 == 0 else ["bare", "api"]
                for name in order:
                    url, target_headers = targets[name]
                    before = cpu_seconds(pids[name])
                    opened = asyncio.run(
                        drive_open(
                            url,
                            rate=rate,
                            headers=target_headers,
                            seconds=OPEN_SECONDS,
                            warmup=options.warmup,
                        )
                    )
                    sent = math.floor((options.warmup + OPEN_SECONDS) * rate)
                    server_us[label][name].append((cpu_seconds(pids[name]) - before) / sent * 1e6)
                    if opened.non_200:
                        raise RuntimeError(f"{name}: {opened.non_200} answers were not 200")
                    open_runs[label][name].append(opened)
                    say(
                        f"  {NAME} round {round_ + 1}/{options.rounds} {name:4} at "
                        f"{rate:5.0f}/s: p50 {opened.p50_ms:6.2f} ms  p99 {opened.p99_ms:7.2f} ms"
                        f"  (late sends {opened.late}, waited {opened.waited_for_connection};"
                        f" client CPU {opened.cpu_share:.0%} of cores;"
                        f" server {server_us[label][name][-1]:.0f} µs CPU/request)"
                    )
                    # Let the server's last answers and timers settle before the next phase.
                    time.sleep(0.2)
        reads_after = _cache_reads(api_base)

    hits = reads_after.get("hit", 0.0) - reads_before.get("hit", 0.0)
    misses = reads_after.get("miss", 0.0) - reads_before.get("miss", 0.0)
    errors = reads_after.get("error", 0.0) - reads_before.get("error", 0.0)
    reads = hits + misses + errors
    metrics = [
        Metric("api_read_rps", round(api_rps, 1), "req/s", "API, cached read, median of rounds"),
        Metric(
            "api_read_p50_ms", round(median([r.p50_ms for r in runs["api"]]), 2), "ms", "API p50"
        ),
        Metric(
            "api_read_p99_ms", round(median([r.p99_ms for r in runs["api"]]), 2), "ms", "API p99"
        ),
        Metric("bare_read_rps", round(bare_rps, 1), "req/s", "bare FastAPI route, same JSON"),
        Metric(
            "bare_read_p50_ms",
            round(median([r.p50_ms for r in runs["bare"]]), 2),
            "ms",
            "bare route p50",
        ),
        Metric(
            "bare_read_p99_ms",
            round(median([r.p99_ms for r in runs["bare"]]), 2),
            "ms",
            "bare route p99",
        ),
        Metric(
            "api_read_ratio",
            # Per round, then the median: the two runs of a round are next to each other in
            # time, so a neighbour's load on a shared machine weighs on both sides of a ratio.
            round(
                median([a.rps / b.rps for a, b in zip(runs["api"], runs["bare"], strict=True)]), 3
            ),
            "x",
            "API throughput / bare route throughput, median of rounds (1.0 = no cost over "
            "FastAPI itself)",
        ),
        Metric(
            "api_read_max_ratio",
            round(api_rps / bare_rps, 3),
            "x",
            "API closed-loop maximum / the bare route's (medians of rounds; target >= 0.75)",
        ),
        Metric(
            "api_read_cache_hit_ratio",
            round(hits / reads, 4) if reads else 0.0,
            "",
            "orders:detail reads that Redis answered, warm-ups included",
        ),
        Metric(
            "load_generator_cpu_share_closed",
            round(median([r.cpu_share for r in runs["api"] + runs["bare"]]), 3),
            "",
            f"the closed-loop client's CPU (httpx, {options.connections} connections) as a share "
            "of all cores, median of runs",
        ),
    ]
    for rate, label in rates:
        where = f"open loop at {rate:g} requests/s" + (
            f" ({OPEN_SHARE_OF_MAX:.0%} of the API's closed-loop maximum)" if "pct" in label else ""
        )
        if "pct" in label:
            metrics.append(Metric(f"api_read_rate_at_{label}", rate, "req/s", f"the rate {where}"))
        for name, who in (("api", "API"), ("bare", "bare route")):
            results = open_runs[label][name]
            for stat in ("p50", "p99"):
                metrics.append(
                    Metric(
                        f"{name}_read_{stat}_ms_at_{label}",
                        round(median([getattr(r, f"{stat}_ms") for r in results]), 2),
                        "ms",
                        f"{who} {stat}, {where}, from each request's due time; median of rounds"
                        + (
                            f" (target < {TARGET_P99_MS_AT_300:g} ms)"
                            if stat == "p99" and name == "api" and label == "300rps"
                            else ""
                        ),
                    )
                )
            metrics.append(
                Metric(
                    f"{name}_read_cpu_us_per_request_at_{label}",
                    round(median(server_us[label][name]), 1),
                    "µs",
                    f"the {who} process's CPU per request, {where}; median of rounds",
                )
            )
    shares = {
        label: median([r.cpu_share for name in ("api", "bare") for r in open_runs[label][name]])
        for _, label in rates
    }
    every_open = [r for label in open_runs.values() for results in label.values() for r in results]
    metrics += [
        Metric(
            "load_generator_cpu_share",
            round(max(shares.values()), 3),
            "",
            "the open-loop generator's CPU as a share of all cores, at the heaviest rate "
            "(median of its runs); per rate in details",
        ),
        Metric(
            "load_generator_late_sends",
            sum(r.late for r in every_open),
            "requests",
            f"open-loop requests sent more than {LATE_AFTER_MS:g} ms after they were due (their "
            "latency counts the delay), over every open-loop run",
        ),
        Metric(
            "load_generator_waited_for_connection",
            sum(r.waited_for_connection for r in every_open),
            "requests",
            "open-loop requests due while every connection was busy, over every open-loop run",
        ),
    ]
    return BenchmarkResult(
        NAME,
        f"GET {PATH.replace(ORDER, '{id}')} from Redis vs a bare FastAPI route: closed loop, "
        f"{options.connections} connections, {options.seconds:g} s per run; open loop at "
        f"{', '.join(f'{rate:g}' for rate, _ in rates)} requests/s, {OPEN_SECONDS:g} s per run",
        metrics,
        {
            "runs": {name: [_figures(r) for r in results] for name, results in runs.items()},
            "open_loop": {
                label: {
                    name: [
                        _figures(r) | {"server_cpu_us_per_request": round(us, 1)}
                        for r, us in zip(results, server_us[label][name], strict=True)
                    ]
                    for name, results in by_target.items()
                }
                for label, by_target in open_runs.items()
            },
            "load_generator_cpu_share_by_rate": {k: round(v, 3) for k, v in shares.items()},
            "cache_reads": {"hit": hits, "miss": misses, "error": errors},
            "document_bytes": len(first.content),
        },
    )
