"""The worker process (`fulfillment worker`): hosts the fulfillment and reconciliation workflows
and their activities.

It builds one client per outside system from the settings, registers the workflow and the
activities on `TEMPORAL_TASK_QUEUE`, serves `/metrics` on `WORKER_METRICS_PORT`, drains the
cache-invalidation outbox, and on SIGTERM/SIGINT stops polling and lets running activities
finish within `WORKER_SHUTDOWN_GRACE_SECONDS`. Workers are stateless: run as many as load needs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities.billing import BillingActivities
from activities.caches import CacheActivities, run_outbox_drainer
from activities.read_model import ReadModelActivities
from activities.reconciliation import ReconciliationActivities
from activities.salesforce import SalesforceActivities
from activities.sims import SimActivities
from clients.cache import CachedInGroup, CacheGroup, CacheInvalidator, CacheKeys, create_redis
from clients.freebit import FreebitClient
from clients.fulfillment_store import FulfillmentStore
from clients.postgres import create_pool
from clients.salesforce import SalesforceClient
from clients.whmcs import WhmcsClient
from config.logging import get_logger
from config.settings import Settings
from temporal_connection.connection import connect_temporal
from workers.metrics import MetricsServer, sdk_runtime
from workers.versioning import build_id, deployment_config
from workflows.order_fulfillment import OrderFulfillment
from workflows.reconciliation import FulfillmentReconciliation

log = get_logger(__name__)


@dataclass(frozen=True)
class Upstreams:
    """The engine's clients, one per outside system, as the activities use them."""

    salesforce: SalesforceClient
    whmcs: WhmcsClient
    freebit: FreebitClient
    store: FulfillmentStore
    cache: CacheInvalidator


@asynccontextmanager
async def open_upstreams(settings: Settings) -> AsyncIterator[Upstreams]:
    assert settings.database_url is not None and settings.redis_url is not None
    async with AsyncExitStack() as stack:
        # One connection per running activity at most, plus the local read-model writes and
        # the outbox drainer: no activity ever waits for a connection another one holds.
        pool = await create_pool(
            settings.database_url, max_size=settings.worker_max_concurrent_activities + 4
        )
        stack.push_async_callback(pool.close)
        redis = create_redis(settings.redis_url)
        stack.push_async_callback(redis.aclose)
        cache = CacheInvalidator(redis, CacheKeys(settings.cache_key_prefix))
        salesforce = SalesforceClient.from_settings(settings)
        stack.push_async_callback(salesforce.aclose)
        # The WHMCS product catalogue is kept with the portal's catalog (its group is dropped
        # on Product2/PricebookEntry change events), not read again for every order.
        catalogue = CachedInGroup(
            redis,
            cache,
            CacheGroup.SERVICES_CATALOG,
            cache.keys.whmcs_products(),
            ttl_seconds=settings.services_cache_safety_ttl_seconds,
        )
        whmcs = WhmcsClient.from_settings(settings, catalogue=catalogue)
        stack.push_async_callback(whmcs.aclose)
        freebit = FreebitClient.from_settings(settings)
        stack.push_async_callback(freebit.aclose)
        yield Upstreams(
            salesforce=salesforce,
            whmcs=whmcs,
            freebit=freebit,
            store=FulfillmentStore(pool),
            cache=cache,
        )


def activities(upstreams: Upstreams, settings: Settings) -> Sequence[Any]:
    """Every activity implementation, under the names `domain.steps.Activity` gives them."""
    salesforce = SalesforceActivities(
        upstreams.salesforce, settle=timedelta(seconds=settings.sf_settle_seconds)
    )
    billing = BillingActivities(
        upstreams.whmcs,
        upstreams.store,
        settings.whmcs_default_gateway,
        settle=timedelta(seconds=settings.whmcs_settle_seconds),
    )
    sims = SimActivities(upstreams.freebit)
    read_model = ReadModelActivities(upstreams.store)
    caches = CacheActivities(upstreams.cache, upstreams.store)
    reconciliation = ReconciliationActivities(
        upstreams.salesforce, settings, upstreams.store, upstreams.cache
    )
    return [
        salesforce.load_order,
        salesforce.load_order_and_mark_activating,
        salesforce.write_back_status,
        salesforce.write_back_success,
        billing.resolve_billing_client,
        billing.validate_payment_method,
        billing.create_billing_order,
        billing.accept_billing_order,
        billing.cancel_billing_order,
        billing.find_billing_order,
        sims.register_sim,
        sims.check_sim,
        read_model.record_fulfillment,
        read_model.record_operator_action,
        caches.invalidate_caches,
        reconciliation.read_unfinished_orders,
        reconciliation.start_missing_fulfillments,
        reconciliation.record_stranded_fulfillments,
    ]


def workflow_runner(settings: Settings) -> WorkflowRunner:
    """The sandbox only when asked for: see `Settings.worker_workflow_sandbox`."""
    if settings.worker_workflow_sandbox:
        return SandboxedWorkflowRunner()
    return UnsandboxedWorkflowRunner()


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set (or SIGTERM/SIGINT when `stop` is None)."""
    stop = stop or _stop_on_signals()
    runtime, sdk_metrics_url = sdk_runtime()
    metrics = MetricsServer("0.0.0.0", settings.worker_metrics_port, sdk_metrics_url)
    client = await connect_temporal(settings, runtime=runtime, identity=_identity())
    async with open_upstreams(settings) as upstreams:
        worker = Worker(
            client,
            task_queue=settings.temporal_task_queue,
            workflows=[OrderFulfillment, FulfillmentReconciliation],
            activities=activities(upstreams, settings),
            workflow_runner=workflow_runner(settings),
            max_concurrent_activities=settings.worker_max_concurrent_activities,
            graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_grace_seconds),
            deployment_config=deployment_config(settings),
        )
        await metrics.start()
        drainer = asyncio.create_task(
            run_outbox_drainer(upstreams.store, upstreams.cache, stop=stop)
        )
        log.info(
            "worker.started",
            task_queue=settings.temporal_task_queue,
            namespace=settings.temporal_namespace,
            max_concurrent_activities=settings.worker_max_concurrent_activities,
            metrics_port=settings.worker_metrics_port,
            deployment=settings.worker_deployment_name,
            build_id=build_id(settings) if settings.worker_deployment_name else None,
        )
        try:
            async with worker:
                await stop.wait()
                log.info(
                    "worker.stopping",
                    grace_seconds=settings.worker_shutdown_grace_seconds,
                )
        finally:
            await drainer
            await metrics.stop()
    log.info("worker.stopped")


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _identity() -> str:
    return f"fulfillment-worker@{socket.gethostname()}:{os.getpid()}"
