"""Per-client rate limits for public routes: GCRA (a token bucket kept as one timestamp).

A client may make `limit` requests at once and then one every `period / limit` seconds; the
state is one number per client, the "theoretical arrival time" (TAT) of its next request, so a
check is one Redis round trip (a Lua script, atomic across API replicas, timed by Redis' own
clock so that replicas with skewed clocks agree) and the key expires when the bucket is full
again.

When Redis does not answer, each process limits in memory with the same rule: the limit then
holds per process (N replicas let N times as much through), which is still a cap, and the
public route keeps answering. After a Redis failure the process stays in memory for a few
seconds rather than paying a connect timeout on every request.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as redis
from redis.exceptions import RedisError

from config.logging import get_logger

log = get_logger(__name__)

# How long a process limits in memory after Redis failed, before it tries Redis again.
REDIS_COOLDOWN_SECONDS = 5.0
# Clients remembered in memory at most; the least recently seen are forgotten first (a
# forgotten client starts with a full bucket, which errs on the side of answering).
MEMORY_CLIENTS = 100_000
# Addresses come from uvicorn (the peer, or X-Forwarded-For from a trusted proxy); a bound on
# the key keeps a strange header from making a huge one.
_MAX_ADDRESS = 100


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    # Seconds until a request would be allowed again (0 when this one was).
    retry_after: float
    # Requests still allowed right now after this one.
    remaining: int

    @property
    def retry_after_header(self) -> str:
        """`Retry-After` in whole seconds, never 0: a client told 0 would retry at once."""
        return str(max(1, math.ceil(self.retry_after)))


def gcra(tat: float | None, now: float, *, limit: int, period: float) -> tuple[Verdict, float]:
    """Decide one request; returns the verdict and the TAT to keep (unchanged when refused).

    `tat` is the stored TAT (None for a client never seen); times are seconds on any clock.
    """
    interval = period / limit
    tat = now if tat is None or tat < now else tat
    next_tat = tat + interval
    allow_at = next_tat - period
    if now < allow_at:
        return Verdict(False, allow_at - now, 0), tat
    # The epsilon keeps float rounding from reporting one request fewer than is left.
    remaining = math.floor((now - allow_at) / interval + 1e-9)
    return Verdict(True, 0.0, remaining), next_tat


class MemoryLimiter:
    """GCRA per key in this process, bounded to `capacity` keys."""

    def __init__(
        self,
        *,
        limit: int,
        period: float,
        capacity: int = MEMORY_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.period = period
        self._capacity = capacity
        self._clock = clock
        self._tats: OrderedDict[str, float] = OrderedDict()

    def hit(self, key: str) -> Verdict:
        now = self._clock()
        verdict, tat = gcra(self._tats.get(key), now, limit=self.limit, period=self.period)
        self._tats[key] = tat
        self._tats.move_to_end(key)
        while len(self._tats) > self._capacity:
            self._tats.popitem(last=False)
        return verdict

    def __len__(self) -> int:
        return len(self._tats)


# The same rule as `gcra`, in integer microseconds on Redis' clock. Returns {allowed,
# retry_after_us, remaining}. '%.0f': Lua would print a 16-digit number as 1.7e+15.
_GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next_tat = tat + interval
local allow_at = next_tat - period
if now < allow_at then
    return {0, allow_at - now, 0}
end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX',
    math.ceil((next_tat - now) / 1000))
return {1, 0, math.floor((now - allow_at) / interval)}
"""


class RateLimiter:
    """GCRA per client address in Redis, in memory while Redis is unavailable."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        key_prefix: str,
        limit: int,
        period: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = client
        self._key_prefix = key_prefix
        self._interval_us = max(1, round(period * 1_000_000 / limit))
        self._period_us = round(period * 1_000_000)
        self._clock = clock
        self._script = client.register_script(_GCRA_SCRIPT)
        self.memory = MemoryLimiter(limit=limit, period=period, clock=clock)
        self._redis_down_until = 0.0

    def key(self, address: str) -> str:
        return f"{self._key_prefix}{address[:_MAX_ADDRESS]}"

    async def hit(self, address: str) -> Verdict:
        if self._clock() >= self._redis_down_until:
            try:
                allowed, retry_us, remaining = await self._script(
                    keys=[self.key(address)], args=[self._interval_us, self._period_us]
                )
            except (RedisError, OSError) as exc:
                self._redis_down_until = self._clock() + REDIS_COOLDOWN_SECONDS
                log.warning("ratelimit.redis_unavailable", error=type(exc).__name__)
            else:
                return Verdict(bool(allowed), int(retry_us) / 1_000_000, int(remaining))
        return self.memory.hit(address)
