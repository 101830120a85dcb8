"""The in-client retry for calls that are safe and cheap to repeat (reads, token fetches).

Writes are never retried here: Temporal retries the activity, and retrying a write in two layers
would multiply attempts (and, for WHMCS AddOrder, create duplicate orders). Only one layer of a
call is ever wrapped in a policy, so attempts (and token requests) never multiply.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from clients.errors import OutcomeUnknownError, TransientError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Jittered exponential backoff with a small bound; only `TransientError` is retried.

    An upstream's `retry_after` is honoured: the wait is at least that long, and when it is
    longer than `max_wait` the error is raised at once, so that the activity's retry policy (not
    a sleeping client holding a worker slot) does the long wait.
    """

    attempts: int = 3
    initial_wait: float = 0.2
    max_wait: float = 2.0

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return await call()
            except OutcomeUnknownError:
                raise
            except TransientError as exc:
                if attempt >= self.attempts:
                    raise
                ceiling = min(self.max_wait, self.initial_wait * 2 ** (attempt - 1))
                delay = random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography
                if exc.retry_after is not None:
                    if exc.retry_after > self.max_wait:
                        raise
                    delay = max(delay, exc.retry_after)
                await asyncio.sleep(delay)
        raise AssertionError("the loop returns or raises")


NO_RETRY = RetryPolicy(attempts=1)
