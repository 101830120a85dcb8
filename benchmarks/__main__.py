"""`make bench` (`python -m benchmarks`): speed figures, measured in one run on this machine.

    python -m benchmarks [--seconds 5] [--warmup 1] [--connections 50] [--rounds 5]
                         [--orders 500] [--latency-orders 10] [--events 10000]
                         [NAME ...]

Runs the registered benchmarks (all, or those named), prints a table and writes every figure,
with the per-run details behind it, to `bench/results/latest.json` (not kept in git: figures
belong to the machine that made them). Each benchmark starts what it measures on its own
(embedded Postgres and Redis, the API as a process) and stops it; nothing outside is needed
or touched.

Benchmarks:
- `api_read`: the portal's cached read (`GET /api/orders/{id}/fulfillment` served from Redis)
  against a bare FastAPI route returning the same JSON (benchmarks/api_read.py).
- `fulfillment_throughput` (`--orders N`, 500) and `fulfillment_latency` (`--latency-orders N`,
  10): the real listener and worker from a Salesforce activation to the order written back
  Activated, against a bare workflow of as many no-op activities (benchmarks/fulfillment.py).
- `listener_ingest` (`--events N`, 10000): the real listener replaying a backlog of retained
  events from -2, events handled per second against a target of 500 (benchmarks/ingest.py).
- `order_costs`: calls to Salesforce, WHMCS and Freebit per internet and eSIM order (from the
  emulators' request logs), the eSIM order's latency, and the recovery after a worker SIGKILLed
  mid-AddOrder (benchmarks/costs.py).
- `billing_lookup`: the look for an earlier WHMCS order made before every AddOrder, for a client
  with 500 past services, against reading all of them (benchmarks/billing_lookup.py).

A new benchmark is a module with `run(options, say) -> BenchmarkResult`, added to `BENCHMARKS`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import api_read, billing_lookup, costs, fulfillment, ingest
from benchmarks.results import BenchmarkResult, Options

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "latest.json"

Benchmark = Callable[[Options, Callable[[str], None]], BenchmarkResult]
BENCHMARKS: dict[str, Benchmark] = {
    api_read.NAME: api_read.run,
    fulfillment.THROUGHPUT: fulfillment.run_throughput,
    fulfillment.LATENCY: fulfillment.run_latency,
    costs.NAME: costs.run,
    ingest.NAME: ingest.run,
    billing_lookup.NAME: billing_lookup.run,
}


def _say(line: str) -> None:
    print(line, flush=True)


def _table(results: list[BenchmarkResult]) -> str:
    rows = [("benchmark", "metric", "value", "unit")]
    for result in results:
        for metric in result.metrics:
            rows.append((result.name, metric.name, f"{metric.value:g}", metric.unit))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [row[2].rjust(widths[2]), row[3].ljust(widths[3])]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }


def _commit() -> dict[str, Any]:
    """The commit measured, and whether the tree differed from it (figures of a dirty tree
    belong to no commit)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"sha": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {sorted(BENCHMARKS)}")
    defaults = Options()
    parser.add_argument("--seconds", type=float, default=defaults.seconds)
    parser.add_argument("--warmup", type=float, default=defaults.warmup)
    parser.add_argument("--connections", type=int, default=defaults.connections)
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument(
        "--orders", type=int, default=500, help="orders in fulfillment_throughput (500)"
    )
    parser.add_argument(
        "--latency-orders", type=int, default=10, help="orders in fulfillment_latency (10)"
    )
    parser.add_argument(
        "--events", type=int, default=10_000, help="retained events in listener_ingest (10000)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON file ({RESULTS})")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {sorted(BENCHMARKS)}")
    options = Options(
        seconds=args.seconds,
        warmup=args.warmup,
        connections=args.connections,
        rounds=args.rounds,
    )
    fulfillment.configure(orders=args.orders, latency_orders=args.latency_orders)
    ingest.configure(events=args.events)
    results: list[BenchmarkResult] = []
    started = time.monotonic()
    for name in args.names or list(BENCHMARKS):
        _say(f"{name} …")
        results.append(BENCHMARKS[name](options, _say))
    _say("")
    _say(_table(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "took_seconds": round(time.monotonic() - started, 1),
        "machine": _machine(),
        "commit": _commit(),
        "options": vars(options),
        "benchmarks": {result.name: result.as_json() for result in results},
    }
    args.output.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    _say(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
