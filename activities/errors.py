"""From the client taxonomy to what Temporal understands: retryable or not, and when.

- `BusinessError` / `OrderRejected` -> a non-retryable `ApplicationError` whose `type` is the
  `ErrorCode` and whose details carry the `Failure` (the workflow parks with it);
- `ConfigurationError` -> retryable, after its long `retry_after` (`next_retry_delay`);
- `TransientError` (never sent, outcome unknown, unrecognised) -> retryable, its `type` the kind,
  after the upstream's `retry_after` when it gave one.

Messages are the taxonomy's own (never secrets); the payload codec encrypts them in history, as
they may quote customer data.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import ParamSpec, TypeVar

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from clients.errors import BusinessError, ClientError
from domain.errors import OrderRejected
from domain.fulfillment import WORKFLOW_ID_PREFIX

P = ParamSpec("P")
T = TypeVar("T")


def application_error(error: ClientError | OrderRejected) -> ApplicationError:
    failure = error.to_failure()
    if isinstance(error, OrderRejected | BusinessError):
        return ApplicationError(
            failure.summary(),
            failure.model_dump(mode="json"),
            type=failure.code.value,
            non_retryable=True,
        )
    delay = timedelta(seconds=error.retry_after) if error.retry_after else None
    return ApplicationError(
        failure.summary(),
        failure.model_dump(mode="json"),
        type=failure.kind.value,
        next_retry_delay=delay,
    )


def translated(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Raise the taxonomy's errors of an activity as `ApplicationError`s, put the order, the
    workflow and the step on every log line the activity (and its clients) write, and keep
    the activity heartbeating while it runs (`activities.heartbeat`)."""

    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        with structlog.contextvars.bound_contextvars(**_log_context()):
            try:
                async with heartbeating():
                    return await fn(*args, **kwargs)
            except (ClientError, OrderRejected) as error:
                raise application_error(error) from None

    return run


def _log_context() -> dict[str, object]:
    if not activity.in_activity():
        return {}
    info = activity.info()
    context: dict[str, object] = {
        "workflow_id": info.workflow_id,
        "step": info.activity_type,
        "attempt": info.attempt,
    }
    if info.workflow_id and info.workflow_id.startswith(WORKFLOW_ID_PREFIX):
        context["sf_order_id"] = info.workflow_id.removeprefix(WORKFLOW_ID_PREFIX)
    return context
