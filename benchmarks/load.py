"""HTTP load generators, closed loop (`drive`) and open loop (`drive_open`).

Closed loop: N connections, each sending its next request as soon as the last one is answered,
for a fixed time after a warm-up whose requests are not counted. The figures describe the server
at that concurrency, not at an offered rate: throughput is what it answered, latency includes
its queueing. The client (httpx on one event loop) costs CPU too, so on a small machine it caps
the throughput of a fast server; compare two servers under the same client in one run rather
than against figures from elsewhere.

Open loop: requests are due at fixed times, t0 + i / rate, whatever the server does, as a caller
at a steady rate sends them. Each latency runs from the moment the request was due, not from
when it went out, so a server (or generator) that falls behind is charged for every request it
delayed: no coordinated omission. The connections (raw HTTP/1.1 keep-alive on asyncio streams,
far cheaper than httpx per request) are opened before the clock starts, more than the rate
needs; a request due while all are busy, or sent late because this process was slow, is counted
(`waited_for_connection`, `late`). The process's own CPU time over the measured phase, as a
share of the machine's cores, says how much of the machine the generator took from the server.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import deque
from contextlib import AsyncExitStack
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx


@dataclass(frozen=True)
class LoadResult:
    requests: int
    non_200: int
    seconds: float
    # Sorted, in milliseconds.
    latencies_ms: tuple[float, ...]
    # This process's CPU seconds over the measured phase (user + system, every thread).
    cpu_seconds: float = 0.0

    @property
    def cpu_share(self) -> float:
        """The generator's CPU over the measured phase, as a share of all the machine's cores."""
        return self.cpu_seconds / (self.seconds * (os.cpu_count() or 1))

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
        started, cpu = time.perf_counter(), time.process_time()
        latencies, non_200 = await _run_for(clients, url, seconds)
        # The last requests end a little after the deadline: divide by the time really taken.
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
    return LoadResult(len(latencies), non_200, elapsed, tuple(sorted(latencies)), cpu)


# -- open loop ------------------------------------------------------------------------------

# A send later than this after its due time counts as "not sent on time". The event loop sleeps
# in whole milliseconds (epoll), so sends are routinely up to ~1 ms late; the latency counts it.
LATE_AFTER_MS = 2.0


@dataclass(frozen=True)
class OpenLoopResult(LoadResult):
    rate: float = 0.0
    # Requests due in the measured phase (every one is sent and answered, or the run fails).
    due: int = 0
    # Sent more than LATE_AFTER_MS after their due time (this process was behind) ...
    late: int = 0
    # ... of which these found every connection busy and waited for one (a server behind).
    waited_for_connection: int = 0
    connections: int = 0
    # Connections the server had closed while idle, opened again (warm-up included).
    reopened: int = 0
    # Sorted, in milliseconds: how late each measured request went out (send - due).
    send_lag_ms: tuple[float, ...] = ()

    @property
    def send_lag_p99_ms(self) -> float:
        if not self.send_lag_ms:
            return 0.0
        return self.send_lag_ms[max(1, math.ceil(0.99 * len(self.send_lag_ms))) - 1]


class _Connection:
    """One HTTP/1.1 keep-alive connection: a GET written, its answer read (Content-Length)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def get(self, request: bytes) -> tuple[int, bool]:
        """The status, and whether the server keeps the connection open."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length: int | None = None
        keep = True
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                keep = False
            elif name == b"transfer-encoding":
                raise RuntimeError("chunked answers are not supported by this generator")
        if length is None:
            raise RuntimeError("an answer without Content-Length")
        await self.reader.readexactly(length)
        return status, keep

    def close(self) -> None:
        self.writer.close()


async def drive_open(
    url: str,
    *,
    rate: float,
    headers: dict[str, str] | None = None,
    seconds: float = 10.0,
    warmup: float = 1.0,
    connections: int | None = None,
) -> OpenLoopResult:
    """GET `url` at `rate` requests per second, open loop: `warmup` seconds not counted, then
    `seconds` measured. Every request due is sent; the run ends when the last one is answered.

    `connections` (default: enough for the rate at 100 ms each, at least 32) are opened first.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    size = connections or max(32, math.ceil(rate * 0.1))
    idle: deque[_Connection] = deque(
        await asyncio.gather(*(_Connection.open(host, port) for _ in range(size)))
    )
    waiters: deque[asyncio.Future[None]] = deque()
    # Per measured request: (due, sent, done) in perf_counter seconds, and its status.
    timings: list[tuple[float, float, float]] = []
    non_200 = 0
    waited = 0
    reopened = 0

    async def one(due: float, counted: bool) -> None:
        nonlocal non_200, waited, reopened
        if not idle:
            if counted:
                waited += 1
            while not idle:
                waiter = asyncio.get_running_loop().create_future()
                waiters.append(waiter)
                await waiter
        # Oldest first, so every connection is used every size / rate seconds and none sits
        # idle long enough for the server's keep-alive timeout (uvicorn's is 5 s).
        connection = idle.popleft()
        sent = time.perf_counter()
        try:
            try:
                if connection.reader.at_eof():
                    raise ConnectionResetError("closed while idle")
                status, keep = await connection.get(request)
            except (asyncio.IncompleteReadError, ConnectionError):
                # The server closed an idle connection (as a client pool would, open another
                # and send again; the time it takes is in this request's latency).
                connection.close()
                reopened += 1
                connection = await _Connection.open(host, port)
                status, keep = await connection.get(request)
        except BaseException:
            connection.close()
            raise
        done = time.perf_counter()
        if keep:
            idle.append(connection)
        else:
            connection.close()
            idle.append(await _Connection.open(host, port))
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break
        if counted:
            timings.append((due, sent, done))
            if status != 200:
                non_200 += 1

    tasks: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []

    def finished(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            failures.append(task.exception())  # type: ignore[arg-type]

    total = math.floor((warmup + seconds) * rate)
    first_measured = math.ceil(warmup * rate)
    try:
        t0 = time.perf_counter() + 0.01
        cpu_at_start: float | None = None
        for index in range(total):
            due = t0 + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if index == first_measured:
                cpu_at_start = time.process_time()
            task = asyncio.create_task(one(due, index >= first_measured))
            tasks.add(task)
            task.add_done_callback(finished)
            if failures:
                raise failures[0]
        while tasks:
            await asyncio.wait(set(tasks), timeout=30)
            if failures:
                raise failures[0]
        cpu_seconds = time.process_time() - (cpu_at_start or time.process_time())
    finally:
        for task in tasks:
            task.cancel()
        for connection in idle:
            connection.close()
    measured_start = t0 + first_measured / rate
    elapsed = max(done for _, _, done in timings) - measured_start
    lags = [(sent - due) * 1000.0 for due, sent, _ in timings]
    return OpenLoopResult(
        requests=len(timings),
        non_200=non_200,
        seconds=elapsed,
        latencies_ms=tuple(sorted((done - due) * 1000.0 for due, _, done in timings)),
        cpu_seconds=cpu_seconds,
        rate=rate,
        due=total - first_measured,
        late=sum(1 for lag in lags if lag > LATE_AFTER_MS),
        waited_for_connection=waited,
        connections=size,
        reopened=reopened,
        send_lag_ms=tuple(sorted(lags)),
    )
