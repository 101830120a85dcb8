"""The retry policy for calls that are safe and cheap to repeat (idempotent reads, token fetches).

Writes are never retried here: Temporal retries the activity, and retrying a write in two layers
would multiply attempts (and, for WHMCS AddOrder, create duplicate orders).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from clients.errors import TransientError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Jittered exponential backoff with a small bound; only `TransientError` is retried."""

    attempts: int = 3
    initial_wait: float = 0.2
    max_wait: float = 2.0

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_random_exponential(multiplier=self.initial_wait, max=self.max_wait),
            retry=retry_if_exception_type(TransientError),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await call()
        raise AssertionError("tenacity ends with a result or the last exception")


NO_RETRY = RetryPolicy(attempts=1)
