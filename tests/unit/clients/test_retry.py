"""The in-client retry: bounded, jittered, honouring an upstream's Retry-After."""

from __future__ import annotations

import time

import pytest

from clients.errors import OutcomeUnknownError, System, TransientError
from clients.retry import RetryPolicy


class Flaky:
    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_a_short_retry_after_is_waited_out_before_the_repeat() -> None:
    call = Flaky(TransientError(System.WHMCS, "busy", retry_after=0.3))
    started = time.monotonic()
    assert await RetryPolicy(attempts=2, initial_wait=0.0, max_wait=1.0).run(call) == "ok"
    assert time.monotonic() - started >= 0.3
    assert call.calls == 2


async def test_a_retry_after_beyond_the_clients_wait_goes_to_the_caller_at_once() -> None:
    # A long wait belongs to the activity's retry, not to a client holding a worker slot.
    call = Flaky(TransientError(System.SALESFORCE, "limit", retry_after=600))
    started = time.monotonic()
    with pytest.raises(TransientError):
        await RetryPolicy(attempts=3, max_wait=2.0).run(call)
    assert call.calls == 1 and time.monotonic() - started < 0.5


async def test_an_outcome_unknown_error_is_never_repeated_here() -> None:
    call = Flaky(OutcomeUnknownError(System.WHMCS, "reply lost"))
    with pytest.raises(OutcomeUnknownError):
        await RetryPolicy(attempts=3, initial_wait=0.0).run(call)
    assert call.calls == 1


async def test_attempts_are_bounded() -> None:
    call = Flaky(*(TransientError(System.WHMCS, "down") for _ in range(5)))
    with pytest.raises(TransientError):
        await RetryPolicy(attempts=3, initial_wait=0.0, max_wait=0.01).run(call)
    assert call.calls == 3
