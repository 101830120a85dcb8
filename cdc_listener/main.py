"""The listener process (`fulfillment listener`): the only way orders enter the engine.

Several replicas may run; exactly one is active (it holds a Postgres advisory lock, the lease),
the others wait as hot standbys and take over within `CDC_LEASE_POLL_SECONDS` when the active
one dies (its connection, and so its lock, goes with it). The active replica keeps the
reconciliation schedule in place, subscribes, and turns events into fulfillments and cache
invalidations. Metrics on `LISTENER_METRICS_PORT`; state for `/api/health/cdc` in Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from contextlib import AsyncExitStack

from prometheus_client import start_http_server
from temporalio.client import Client

from cdc_listener import metrics
from cdc_listener.cometd import CometdTransport
from cdc_listener.dispatch import Dispatcher
from cdc_listener.pubsub import PubsubTransport
from cdc_listener.reconciliation import ensure_reconciliation_schedule, reconcile_now
from cdc_listener.redrive import redrive_requested
from cdc_listener.session import Listener
from cdc_listener.store import Lease, ListenerStore
from cdc_listener.transport import Transport
from clients.cache import CacheInvalidator, CacheKeys, create_redis
from clients.fulfillment_store import FulfillmentStore
from clients.postgres import create_pool
from clients.salesforce import SalesforceClient
from clients.salesforce_auth import SalesforceAuth
from clients.salesforce_pubsub import PubSubClient
from config.logging import get_logger
from config.settings import Settings, SettingsError
from temporal_connection.connection import connect_temporal

log = get_logger(__name__)
# How often the active replica looks for dead letters an operator asked to redrive.
REDRIVE_POLL_SECONDS = 2.0


async def run_listener(
    settings: Settings, *, stop: asyncio.Event | None = None, instance: str | None = None
) -> None:
    """Run until `stop` is set (or SIGTERM/SIGINT when `stop` is None)."""
    assert settings.database_url is not None and settings.redis_url is not None
    stop = stop or _stop_on_signals()
    instance = instance or f"listener@{socket.gethostname()}:{os.getpid()}"
    try:
        server, _thread = start_http_server(settings.listener_metrics_port)
    except OSError as error:
        raise SettingsError(
            f"configuration error: LISTENER_METRICS_PORT {settings.listener_metrics_port}"
            f" cannot be served: {error.strerror or error}"
        ) from None
    async with AsyncExitStack() as stack:
        stack.callback(server.shutdown)
        temporal = await connect_temporal(settings)
        pool = await create_pool(settings.database_url, max_size=8)
        stack.push_async_callback(pool.close)
        redis = create_redis(settings.redis_url)
        stack.push_async_callback(redis.aclose)
        auth = SalesforceAuth.from_settings(settings)
        stack.push_async_callback(auth.aclose)
        salesforce = SalesforceClient.from_settings(settings, auth=auth)
        stack.push_async_callback(salesforce.aclose)
        store = ListenerStore(pool, settings.cdc_transport)
        transport: Transport
        if settings.cdc_transport == "pubsub":
            pubsub = PubSubClient.from_settings(settings, auth=auth)
            stack.push_async_callback(pubsub.aclose)
            transport = PubsubTransport(settings, pubsub)
        else:
            transport = CometdTransport(settings, auth)

        async def reconcile() -> None:
            await reconcile_now(temporal, settings)

        listener = Listener(
            settings,
            transport=transport,
            store=store,
            dispatcher=Dispatcher(
                temporal=temporal,
                settings=settings,
                salesforce=salesforce,
                cache=CacheInvalidator(redis, CacheKeys(settings.cache_key_prefix)),
                store=FulfillmentStore(pool),
                reconcile=reconcile,
            ),
            reconcile=reconcile,
            instance=instance,
        )
        lease = Lease(settings.database_url)
        stack.push_async_callback(lease.release)
        log.info(
            "listener.started",
            instance=instance,
            transport=settings.cdc_transport,
            channels=settings.cdc_channel_list,
        )
        while not stop.is_set():
            if await _acquire(lease):
                await _lead(settings, temporal, listener, lease, store, instance, stop)
                # A replica that just lost its lease (its connection failed) sits out one poll
                # before competing again, so a healthy standby takes over rather than it.
            else:
                with contextlib.suppress(Exception):
                    await store.report(instance, active=False, connected=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=settings.cdc_lease_poll_seconds)
        with contextlib.suppress(Exception):
            await store.report(instance, active=False, connected=False)
    log.info("listener.stopped", instance=instance)


async def _acquire(lease: Lease) -> bool:
    try:
        return await lease.try_acquire()
    except (OSError, Exception) as error:
        log.warning("listener.lease_unavailable", error=str(error))
        return False


async def _lead(
    settings: Settings,
    temporal: Client,
    listener: Listener,
    lease: Lease,
    store: ListenerStore,
    instance: str,
    stop: asyncio.Event,
) -> None:
    """Be the active replica until `stop`, or until the lease is lost."""
    metrics.ACTIVE.set(1)
    log.info("listener.active", instance=instance)
    try:
        await ensure_reconciliation_schedule(temporal, settings)
    except Exception as error:
        # Events still flow; the schedule is set up again at the next takeover.
        log.warning("listener.schedule_unavailable", error=str(error))
    session_stop = asyncio.Event()

    async def keep_lease() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=settings.cdc_lease_poll_seconds)
            if stop.is_set() or not await lease.held():
                break
        if not stop.is_set():
            log.error("listener.lease_lost", instance=instance)
        session_stop.set()

    async def redrive() -> None:
        # Dead letters an operator asked for are handled by the active replica only.
        while not session_stop.is_set():
            try:
                await redrive_requested(store, listener.handle_once)
            except Exception as error:
                log.warning("listener.redrive_unavailable", error=str(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session_stop.wait(), timeout=REDRIVE_POLL_SECONDS)

    keeper = asyncio.create_task(keep_lease())
    redriver = asyncio.create_task(redrive())
    try:
        await listener.run(session_stop)
    finally:
        for task in (keeper, redriver):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        metrics.ACTIVE.set(0)
        await lease.release()
        with contextlib.suppress(Exception):
            await store.report(instance, active=False, connected=False)


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
