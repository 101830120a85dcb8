"""The reconciliation schedule: kept in place by the listener, triggered when events were lost.

One Temporal Schedule per task queue runs the `FulfillmentReconciliation` workflow every
`RECONCILIATION_INTERVAL_SECONDS` (see `workflows/reconciliation.py`). Its id is
`fulfillment-reconciliation` on the default task queue, `fulfillment-reconciliation-<queue>` on
any other, so deployments (or tests) sharing a namespace never share one.

- `ensure_reconciliation_schedule` creates it, or brings its interval, action and policies to
  what the settings say; every listener replica calls it at start, so it is idempotent and
  safe to race (replicas write the same schedule). An operator's pause and note are kept.
- `reconcile_now` runs it at once, for a stale cursor or an overflow event.

Overlap policy SKIP: a tick that finds a reconciliation still running is dropped, so a slow run
is never doubled. Catch-up covers one interval, so after Temporal was down one run makes up for
the ticks it missed.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from config.logging import get_logger
from config.settings import Settings
from domain.reconciliation import RECONCILIATION_WORKFLOW_TYPE, ReconciliationInput

log = get_logger(__name__)

SCHEDULE_ID = "fulfillment-reconciliation"
_DEFAULT_TASK_QUEUE = Settings.model_fields["temporal_task_queue"].default
# Temporal refuses a catch-up window under ten seconds.
_MIN_CATCHUP = timedelta(seconds=10)
# Create, or find it and update it: a schedule deleted between the two is created again.
_ATTEMPTS = 3


def reconciliation_schedule_id(settings: Settings) -> str:
    """The schedule's id; also the prefix of its runs' workflow ids (Temporal adds the time)."""
    queue = settings.temporal_task_queue
    return SCHEDULE_ID if queue == _DEFAULT_TASK_QUEUE else f"{SCHEDULE_ID}-{queue}"


def reconciliation_schedule(settings: Settings) -> Schedule:
    """The schedule as the settings want it (unpaused)."""
    interval = timedelta(seconds=settings.reconciliation_interval_seconds)
    return Schedule(
        action=ScheduleActionStartWorkflow(
            RECONCILIATION_WORKFLOW_TYPE,
            # Empty: the batch size and the fulfillments' options are the worker's at run time.
            ReconciliationInput(),
            id=reconciliation_schedule_id(settings),
            task_queue=settings.temporal_task_queue,
            static_summary="Start the fulfillment of activated orders that have none",
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=interval)]),
        policy=SchedulePolicy(
            overlap=ScheduleOverlapPolicy.SKIP,
            catchup_window=max(interval, _MIN_CATCHUP),
        ),
    )


async def ensure_reconciliation_schedule(client: Client, settings: Settings) -> None:
    """Create the schedule if missing; update it where it differs from the settings."""
    schedule_id = reconciliation_schedule_id(settings)
    wanted = reconciliation_schedule(settings)
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            await client.create_schedule(schedule_id, wanted)
        except ScheduleAlreadyRunningError:
            pass
        else:
            log.info(
                "reconciliation.schedule_created",
                schedule_id=schedule_id,
                interval_seconds=settings.reconciliation_interval_seconds,
            )
            return
        try:
            await client.get_schedule_handle(schedule_id).update(
                lambda current: _update(current, wanted, schedule_id)
            )
        except RPCError as error:
            if error.status is not RPCStatusCode.NOT_FOUND or attempt == _ATTEMPTS:
                raise
            continue
        return


async def reconcile_now(client: Client, settings: Settings) -> None:
    """Run a reconciliation now, or right after the one running (then one, however often asked).

    BUFFER_ONE rather than the schedule's SKIP: a run already under way may have read past
    orders whose events were just found lost, so one more run follows it.
    """
    handle = client.get_schedule_handle(reconciliation_schedule_id(settings))
    try:
        await handle.trigger(overlap=ScheduleOverlapPolicy.BUFFER_ONE)
    except RPCError as error:
        if error.status is not RPCStatusCode.NOT_FOUND:
            raise
        await ensure_reconciliation_schedule(client, settings)
        await handle.trigger(overlap=ScheduleOverlapPolicy.BUFFER_ONE)
    log.info("reconciliation.triggered", schedule_id=handle.id)


def _update(
    current: ScheduleUpdateInput, wanted: Schedule, schedule_id: str
) -> ScheduleUpdate | None:
    schedule = current.description.schedule
    if _same(schedule, wanted):
        return None
    log.info(
        "reconciliation.schedule_updated",
        schedule_id=schedule_id,
        interval_seconds=_intervals(wanted.spec),
    )
    # The state is the operator's: a paused schedule stays paused, its note kept.
    return ScheduleUpdate(schedule=dataclasses.replace(wanted, state=schedule.state))


def _same(schedule: Schedule, wanted: Schedule) -> bool:
    """Whether what the settings decide is already so (the input is always the empty one)."""
    action, want = schedule.action, wanted.action
    assert isinstance(want, ScheduleActionStartWorkflow)
    spec = schedule.spec
    return (
        isinstance(action, ScheduleActionStartWorkflow)
        and (action.workflow, action.id, action.task_queue)
        == (want.workflow, want.id, want.task_queue)
        and _intervals(spec) == _intervals(wanted.spec)
        and not (spec.calendars or spec.cron_expressions or spec.skip)
        and (schedule.policy.overlap, schedule.policy.catchup_window)
        == (wanted.policy.overlap, wanted.policy.catchup_window)
    )


def _intervals(spec: ScheduleSpec) -> list[tuple[float, float]]:
    return [
        (interval.every.total_seconds(), (interval.offset or timedelta(0)).total_seconds())
        for interval in spec.intervals
    ]
