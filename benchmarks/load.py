"""A closed-loop HTTP load generator: N connections, each sending its next request as soon as
the last one is answered, for a fixed time after a warm-up whose requests are not counted.

Closed loop means the figures describe the server at that concurrency, not at an offered rate:
throughput is what it answered, latency includes its queueing. The client (httpx on one event
loop) costs CPU too, so on a small machine it caps the throughput of a fast server; compare two
servers under the same client in one run rather than against figures from elsewhere.
"""

from __future__ import annotations

import asyncio
import math
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class LoadResult:
    requests: int
    non_200: int
    seconds: float
    # Sorted, in milliseconds.
    latencies_ms: tuple[float, ...]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, fraction: float) -> float:
        """Nearest-rank percentile of the latencies (0 < fraction <= 1)."""
        rank = max(1, math.ceil(fraction * len(self.latencies_ms)))
        return self.latencies_ms[rank - 1]

    @property
    def p50_ms(self) -> float:
        return self.percentile(0.50)

    @property
    def p99_ms(self) -> float:
        return self.percentile(0.99)


async def _run_for(
    clients: list[httpx.AsyncClient], url: str, seconds: float
) -> tuple[list[float], int]:
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    non_200 = 0

    async def connection(http: httpx.AsyncClient) -> None:
        nonlocal non_200
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            response = await http.get(url)
            latencies.append((time.perf_counter() - started) * 1000.0)
            if response.status_code != 200:
                non_200 += 1

    await asyncio.gather(*(connection(http) for http in clients))
    return latencies, non_200


async def drive(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    connections: int = 50,
    seconds: float = 5.0,
    warmup: float = 1.0,
) -> LoadResult:
    """GET `url` over `connections` kept-alive connections: `warmup` seconds, then `seconds`."""
    # One client per connection, not one client with a pool of them: httpcore's shared pool
    # degrades badly with many concurrent requests (measured on this 2-core machine against
    # the bare route: 50 connections through one pool, 240 req/s; 50 one-connection clients,
    # 1,550 req/s; one connection alone, 1,100), which would measure the pool, not the server.
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    headers=headers,
                    limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                    timeout=30.0,
                    trust_env=False,
                )
            )
            for _ in range(connections)
        ]
        # Opens every connection and lets the server reach its steady state (caches filled,
        # code paths warm) before anything is counted.
        await _run_for(clients, url, warmup)
        started = time.perf_counter()
        latencies, non_200 = await _run_for(clients, url, seconds)
        # The last requests end a little after the deadline: divide by the time really taken.
        elapsed = time.perf_counter() - started
    return LoadResult(len(latencies), non_200, elapsed, tuple(sorted(latencies)))
