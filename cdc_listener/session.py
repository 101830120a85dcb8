"""The listener's sessions: subscribe from the stored cursors, hand events to the pipeline, and
own reconnection, whatever the transport (`cdc_listener.transport`).

Every transport error ends the session: the listener backs off with jitter, authenticates again
and subscribes again from the cursors in Postgres. A watchdog ends a session that stopped
hearing from Salesforce (a silent stall), and a cursor Salesforce no longer retains falls back to
all retained events, never to new events only, and triggers reconciliation; an activation
before FULFILLMENT_CUTOVER_AT among them starts nothing (`domain.fulfillment.decide_activation`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError

from cdc_listener import metrics
from cdc_listener.decide import plan_for
from cdc_listener.dispatch import Dispatcher
from cdc_listener.events import MalformedEvent, parse_message
from cdc_listener.pipeline import Pipeline
from cdc_listener.store import Cursor, ListenerStore
from cdc_listener.transport import Keepalive, Session, Transport
from clients.errors import ClientError, TransientError
from config.logging import get_logger
from config.settings import Settings
from domain.events import ChangeEvent, Event

log = get_logger(__name__)
# Failures that mean an outside system is away or refusing us (Temporal's RPC errors and
# timeouts included): retried quietly. Anything else is retried too, logged as an error.
_OUTAGES = (TransientError, ClientError, OSError, RPCError, TimeoutError, WorkflowQueryFailedError)
# After this many failed tries (about a minute) an event counts as stuck: one alert, and the
# age of the oldest event in hand (`fulfillment_cdc_oldest_in_hand_seconds`) keeps growing.
_STUCK_ATTEMPTS = 6
# Salesforce retains events 72 hours; a cursor older than this is about to be lost.
RETENTION_ALERT = timedelta(hours=48)


class Listener:
    def __init__(
        self,
        settings: Settings,
        *,
        transport: Transport,
        store: ListenerStore,
        dispatcher: Dispatcher,
        reconcile: Callable[[], Awaitable[None]],
        instance: str,
    ) -> None:
        self._settings = settings
        self._transport = transport
        self._store = store
        self._dispatcher = dispatcher
        self._reconcile = reconcile
        self._instance = instance
        self._channels = settings.cdc_channel_list
        self.reconnects = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Sessions, one after another, until `stop` is set."""
        failures = 0
        while not stop.is_set():
            started = time.monotonic()
            reason = await self._session(stop)
            if stop.is_set():
                break
            self.reconnects += 1
            metrics.RECONNECTS.labels(reason).inc()
            # A session that ran a while resets the backoff: only quick failures back off far.
            failures = 1 if time.monotonic() - started > 60 else failures + 1
            delay = min(self._settings.cdc_reconnect_max_seconds, 0.5 * 2 ** min(failures, 8))
            delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter
            log.warning("cdc.reconnecting", reason=reason, delay_seconds=round(delay, 2))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    async def _session(self, stop: asyncio.Event) -> str:
        cursors = await self._safe(self._store.cursors(self._channels))
        if cursors is None:
            return "postgres_unavailable"
        self._check_retention(cursors)
        # A channel never handled starts where CDC_INITIAL_REPLAY says: new events only, by
        # default, because a first start against an org with history must not take the last
        # 72 hours of activations for new work (reconciliation covers the minutes before).
        session = self._transport.session(cursors, self._stale)
        pipeline = Pipeline(self._advancer(session), concurrency=self._settings.cdc_concurrency)
        metrics.OLDEST_IN_HAND.set_function(pipeline.oldest_in_hand)
        reason = "ended"
        try:
            await session.open()
            metrics.CONNECTED.set(1)
            await self._safe(self._report(connected=True))
            log.info(
                "cdc.subscribed",
                transport=self._store.transport,
                channels=self._channels,
                replay_ids={channel: cursor.replay_id for channel, cursor in cursors.items()},
            )
            heartbeat = asyncio.create_task(self._heartbeat())
            try:
                reason = await self._receive(session, pipeline, stop)
            finally:
                heartbeat.cancel()
        except Exception as error:
            reason = type(error).__name__
            log.warning("cdc.session_failed", error=str(error) or reason, kind=reason)
        finally:
            metrics.CONNECTED.set(0)
            await self._safe(self._report(connected=False))
            # Events in hand may finish (and move the cursor); the rest come again.
            await pipeline.drain(within=10)
            await pipeline.close()
            # What was in hand comes again from the cursor, in the next session (or replica).
            metrics.OLDEST_IN_HAND.set_function(lambda: 0.0)
            with contextlib.suppress(Exception):
                await session.close()
        return reason

    def _check_retention(self, cursors: dict[str, Cursor]) -> None:
        """Alert while there is still time: Salesforce keeps events for 72 hours, and a cursor
        older than that is lost (then only reconciliation finds what was missed)."""
        now = datetime.now(UTC)
        for cursor in cursors.values():
            seen = cursor.last_event_at or cursor.moved_at
            age = (now - seen).total_seconds()
            metrics.CURSOR_AGE.labels(cursor.channel).set(max(0.0, age))
            if age > RETENTION_ALERT.total_seconds():
                metrics.ALERTS.labels("cursor_near_retention").inc()
                log.error(
                    "cdc.cursor_near_retention",
                    channel=cursor.channel,
                    replay_id=cursor.replay_id,
                    age_hours=round(age / 3600, 1),
                )

    async def _stale(self, channel: str) -> None:
        """The cursor is outside Salesforce's retention: the transport takes every retained
        event (never only new ones), and reconciliation finds what was missed before them."""
        metrics.ALERTS.labels("stale_cursor").inc()
        log.error("cdc.stale_cursor", channel=channel, transport=self._store.transport)
        await self._store.forget(channel)
        await self._reconcile()

    async def _receive(self, session: Session, pipeline: Pipeline, stop: asyncio.Event) -> str:
        stopping = asyncio.create_task(stop.wait())
        try:
            while True:
                receive = asyncio.create_task(session.receive())
                watchdog = asyncio.create_task(self._stalled(session))
                done, _pending = await asyncio.wait(
                    {receive, stopping, watchdog}, return_when=asyncio.FIRST_COMPLETED
                )
                watchdog.cancel()
                if receive not in done:
                    receive.cancel()
                    with contextlib.suppress(BaseException):
                        await receive
                    if stopping in done:
                        return "stopped"
                    metrics.ALERTS.labels("watchdog").inc()
                    return "watchdog"
                received = receive.result()
                if isinstance(received, Keepalive):
                    await self._keepalive(received, pipeline)
                else:
                    await self._take(received.message, received.position, pipeline)
                if pipeline.failure is not None:
                    return "cursor_store_failed"
        finally:
            stopping.cancel()

    async def _stalled(self, session: Session) -> None:
        limit = self._settings.cdc_watchdog_seconds
        while True:
            # Each sign of life moves `last_alive`, so the wait is measured from the last.
            remaining = limit - (time.monotonic() - session.last_alive())
            if remaining <= 0:
                return
            await asyncio.sleep(remaining)

    async def _take(self, message: Any, position: int | None, pipeline: Pipeline) -> None:
        try:
            event = parse_message(message)
        except MalformedEvent as bad:
            channel, replay_id = bad.channel, bad.replay_id
            if channel is not None and replay_id is not None and position is not None:
                work = self._dead_letter(message, bad)
                await pipeline.submit(channel, replay_id, position, None, work)
            else:
                await self._dead_letter(message, bad)
            return
        if position is None:  # a transport gives every readable event a position
            raise AssertionError(f"event {event.replay_id} on {event.channel} has no position")
        event_at = event.commit_timestamp if isinstance(event, ChangeEvent) else event.created_date
        metrics.IN_FLIGHT.inc()
        work = self._handle(event)
        await pipeline.submit(event.channel, event.replay_id, position, event_at, work)

    async def _keepalive(self, keepalive: Keepalive, pipeline: Pipeline) -> None:
        """Salesforce has nothing newer: the cursor may move to the keepalive's replay id once
        what came before is handled, dated now, so a quiet channel's cursor age stays low."""

        async def nothing_to_handle() -> None:
            return None

        await pipeline.submit(
            keepalive.channel,
            keepalive.replay_id,
            keepalive.position,
            datetime.now(UTC),
            nothing_to_handle(),
        )

    async def _dead_letter(self, message: Any, bad: MalformedEvent) -> None:
        log.error(
            "cdc.malformed_event", channel=bad.channel, replay_id=bad.replay_id, reason=bad.reason
        )
        metrics.EVENTS.labels(bad.channel or "?", "malformed", "dead_letter").inc()
        metrics.ALERTS.labels("dead_letter").inc()
        await self._until_done(
            lambda: self._store.dead_letter(bad.channel, bad.replay_id, message, bad.reason)
        )

    async def handle_once(self, event: Event) -> None:
        """Handle one event now, raising what handling raised (a redriven dead letter)."""
        plan = plan_for(
            event,
            trigger_status=self._settings.sf_trigger_status,
            own_client=self._settings.sf_client_name,
        )
        await self._dispatcher.handle(event, plan)

    async def _handle(self, event: Event) -> None:
        change_type = event.change_type.value if isinstance(event, ChangeEvent) else "platform"
        attempts = 0
        # Every line written while handling the event names it.
        structlog.contextvars.bind_contextvars(channel=event.channel, replay_id=event.replay_id)
        try:
            while True:
                plan = plan_for(
                    event,
                    trigger_status=self._settings.sf_trigger_status,
                    own_client=self._settings.sf_client_name,
                )
                try:
                    handled = await self._dispatcher.handle(event, plan)
                    break
                except Exception as error:
                    # Never dropped, never dead-lettered: Temporal, Salesforce, Redis or
                    # Postgres away (or a failure nobody expected) holds this event, and with
                    # it the cursor, until it is handled. Dead letters are for messages that
                    # can never be read (see `_dead_letter`).
                    attempts += 1
                    expected = isinstance(error, _OUTAGES)
                    log.log(
                        logging.WARNING if expected else logging.ERROR,
                        "cdc.event_retry",
                        replay_id=event.replay_id,
                        attempt=attempts,
                        error=f"{type(error).__name__}: {error}",
                    )
                    if attempts == _STUCK_ATTEMPTS:
                        metrics.ALERTS.labels("event_stuck").inc()
                    await asyncio.sleep(min(30.0, 1.0 * 2 ** min(attempts, 5)))
            outcome = "ignored" if plan.empty else "handled"
            metrics.EVENTS.labels(event.channel, change_type, outcome).inc()
            for decision, count in handled.decisions.items():
                metrics.ACTIVATIONS.labels(decision).inc(count)
            if isinstance(event, ChangeEvent):
                lag = (datetime.now(UTC) - event.commit_timestamp).total_seconds()
                metrics.LAG.labels(event.channel).observe(max(0.0, lag))
        finally:
            metrics.IN_FLIGHT.dec()

    def _advancer(
        self, session: Session
    ) -> Callable[[str, str, int, datetime | None], Awaitable[None]]:
        async def advance(
            channel: str, replay_id: str, position: int, event_at: datetime | None
        ) -> None:
            await self._until_done(
                lambda: self._store.advance(channel, replay_id, position, event_at)
            )
            session.moved(channel, replay_id)
            if event_at is not None:
                age = (datetime.now(UTC) - event_at).total_seconds()
                metrics.CURSOR_AGE.labels(channel).set(max(0.0, age))

        return advance

    async def _until_done(self, write: Callable[[], Awaitable[None]]) -> None:
        """Postgres down must not lose a cursor move or a dead letter: retry until it is back."""
        delay = 0.5
        while True:
            try:
                await write()
                return
            except TransientError as error:
                log.warning("cdc.store_retry", error=str(error))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _heartbeat(self) -> None:
        """Keep the status row fresh while connected: the API counts a replica whose row is
        older than 120 s as gone (`GET /api/health/cdc`), and a quiet channel writes nothing."""
        while True:
            await asyncio.sleep(self._settings.cdc_status_heartbeat_seconds)
            await self._safe(self._report(connected=True))

    async def _report(self, *, connected: bool) -> None:
        await self._store.report(
            self._instance, active=True, connected=connected, reconnects=self.reconnects
        )

    async def _safe(self, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except TransientError as error:
            log.warning("cdc.store_unavailable", error=str(error))
            return None
