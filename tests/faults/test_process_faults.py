"""The fault-tolerance suite, part two: the engine's own processes and Postgres fail under a
batch — the worker SIGKILLed mid-activity, the listener SIGKILLed between handling events and
storing its cursor, two listener replicas racing for the same events, Postgres restarted —
and the invariant of tests/faults/batch.py still holds. Each scenario adds a row to the report
(tests/faults/conftest.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from functools import partial
from pathlib import Path

import asyncpg
import pytest

from cdc_listener.store import LEASE_KEY
from devstack.process import free_port
from devstack.services import TemporalServer, start_postgres, start_temporal
from domain.fulfillment import FulfillmentStatus
from emulators.salesforce.pubsub import decode_replay_id
from migrations.runner import apply_migrations
from temporal_connection.connection import connect_temporal
from tests.faults.batch import (
    BATCH,
    ORDERS_CHANNEL,
    activate_all,
    activated_count,
    create_orders,
    run_scenario,
    runs_per_order,
)
from tests.faults.conftest import Report
from tests.fixtures.engine import Engine, ListenerProcess, WorkerProcess, worker_running
from tests.integration.listener.test_listener import (
    _subscribed,
    cursor,
    listener_settings,
    listening,
    until,
)
from tests.support.database import fetch_value

pytestmark = pytest.mark.faults


@pytest.mark.timeout(480)
async def test_worker_sigkilled_several_times_during_a_batch_of_100(
    engine: Engine, report: Report, worker_process: WorkerProcess
) -> None:
    # Slow activations keep SIM polls, and so activities, in flight at every kill.
    engine.freebit.http.post(
        f"{engine.freebit.control_url}/config", json={"activation_delay": 2.0}
    ).raise_for_status()
    ids = create_orders(engine, 100, sim=True)
    worker = worker_process()
    kills = 0
    async with listening(listener_settings(engine)):
        activate_all(engine, ids)
        # Killed as the batch moves along, never before or after it: each kill takes the
        # activities of up to 20 orders with it, found again only by their timeouts.
        for share in (0.05, 0.25, 0.45, 0.65):
            target = int(share * len(ids))
            await until(partial(_activated_at_least, engine, ids, target), within=240)
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            kills += 1
            worker = worker_process()
        await run_scenario(
            engine,
            report,
            f"worker SIGKILLed {kills}x during a batch",
            f"{kills} kills",
            ids,
            within=300,
        )


@pytest.mark.usefixtures("worker")
@pytest.mark.usefixtures("each_transport")
async def test_listener_sigkilled_between_handling_events_and_storing_its_cursor(
    engine: Engine, report: Report, listener_process: ListenerProcess
) -> None:
    ids = create_orders(engine, 15)
    # One event in hand at a time: with its cursor write held (below), the next ones are
    # received but wait.
    listener = listener_process(CDC_CONCURRENCY="1")
    await until(partial(_subscribed, engine), within=60)
    await until(partial(_caught_up, engine), within=60)
    groups = [ids[:4], ids[4:8], ids[8:12]]
    connection = await asyncpg.connect(engine.settings.database_url)
    try:
        # The test holds the cursor's row: the listener handles the first activations (starts
        # their fulfillments) but its cursor write waits, and the kill falls between the two
        # on every event in hand, not on whichever one the timing happens to catch.
        async with connection.transaction():
            held = await connection.fetchval(
                "SELECT position FROM cdc_replay_cursors"
                " WHERE transport = $1 AND channel = $2 FOR UPDATE",
                engine.settings.cdc_transport,
                ORDERS_CHANNEL,
            )
            for group in groups:
                activate_all(engine, group)
            await until(partial(_started_at_least, engine, ids[:12], 4), within=60)
            await asyncio.sleep(1)  # what could start has started
            listener.send_signal(signal.SIGKILL)
            listener.wait(timeout=10)
            started = len(await runs_per_order(engine, ids[:12]))
            # Postgres does not notice a client gone while its statement waits for a lock: the
            # dead listener's cursor write would go through once the row is free, as if sent
            # before the kill. Ended here, it never arrived, which is the case under test.
            orphans = await connection.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE $1 = ANY(pg_blocking_pids(pid))",
                connection.get_server_pid(),
            )
    finally:
        await connection.close()
    assert orphans, "the listener was storing its cursor when it was killed"
    assert 0 < started < 12, "some activations were handled, some only received"
    assert await cursor(engine, ORDERS_CHANNEL) == held, "the kill came before the cursor moved"
    activate_all(engine, ids[12:])  # while no listener runs
    listener_process()
    await run_scenario(
        engine,
        report,
        "listener SIGKILLed before storing cursor",
        f"1 kill: {started} started, {12 - started} received, none acked",
        ids,
    )


@pytest.mark.usefixtures("worker")
@pytest.mark.usefixtures("each_transport")
async def test_two_listener_replicas_race_for_the_same_batch(
    engine: Engine, report: Report, listener_process: ListenerProcess
) -> None:
    ids = create_orders(engine, 15)
    replicas = {process.pid: process for process in (listener_process(), listener_process())}
    await until(partial(_subscribed, engine), within=60)
    leaders = [await _leader(engine)]
    for group in (ids[:5], ids[5:10], ids[10:]):
        activate_all(engine, group)
        await until(partial(_started_at_least, engine, group, 1), within=60)
        # The leader's lease connection dies under it (a network blip, a failover): the
        # standby takes the lease and subscribes from the stored cursor while the old leader
        # still finishes the events it has in hand. Both start the same fulfillments at once.
        await _end_lease(engine)
        await until(partial(_led_by_another, engine, leaders[-1]), within=60)
        leaders.append(await _leader(engine))
    await run_scenario(
        engine,
        report,
        "two listener replicas racing",
        f"{len(leaders) - 1} lease losses mid-batch",
        ids,
    )
    assert {_pid(leader) for leader in leaders} == set(replicas), "both replicas led in turn"
    assert all(p.poll() is None for p in replicas.values()), "no replica died of the race"


@pytest.mark.usefixtures("each_transport")
async def test_postgres_restarted_mid_batch(engine: Engine, report: Report, tmp_path: Path) -> None:
    # A server of the test's own: the session's serves every other test.
    data = tmp_path / "postgres"
    server = await asyncio.to_thread(start_postgres, data, durable=False)
    try:
        await apply_migrations(server.url, create_portal_tables=True)
        settings = engine.settings.model_copy(update={"database_url": server.url})
        ids = create_orders(engine, 15, sim=True)
        async with (
            worker_running(settings),
            listening(listener_settings(engine, database_url=server.url)),
        ):
            await until(partial(_subscribed, engine), within=60)
            # Slow AddOrders: the restart falls while fulfillments hold their billing lock,
            # between the billing intent and its result (WHMCS commits while Postgres is down).
            engine.fault(engine.whmcs, {"kind": "latency", "ms": 2_000, "action": "AddOrder"})
            activate_all(engine, ids[:5])
            await until(partial(_billing_in_flight, server.url), within=60)
            stopped = time.monotonic()
            await asyncio.to_thread(server.stop)
            activate_all(engine, ids[5:10])  # while Postgres is down
            await asyncio.sleep(3)
            server = await asyncio.to_thread(start_postgres, data, port=server.port, durable=False)
            down = time.monotonic() - stopped
            # Only a listener that took the lease again and resubscribed can start these.
            activate_all(engine, ids[10:])
            await run_scenario(
                engine,
                report,
                "Postgres restarted mid-batch",
                f"1 restart mid-billing, {down:.0f} s down",
                ids,
            )
            # What the portal reads caught up too: the read model in the restarted server; and
            # the listener stores its cursor there again, up to the newest event.
            await until(partial(_read_model_activated, server.url, ids), within=60)
            await until(partial(_caught_up, engine, server.url), within=60)
    finally:
        await asyncio.to_thread(server.stop)


async def test_billing_intents_lost_between_attempts(engine: Engine, report: Report) -> None:
    # Each AddOrder commits after its call gave up, and Postgres forgets every intent meanwhile
    # (what a restore from a backup, or a failover to a replica that lagged, does): only the
    # lookup in WHMCS and Temporal's own record of the send stand between a retry and a second
    # order.
    late = 6_000
    settings = engine.settings.model_copy(
        update={"whmcs_timeout_seconds": 2.0, "whmcs_settle_seconds": 15.0}
    )
    ids = create_orders(engine, BATCH)
    engine.fault(
        engine.whmcs, {"kind": "late_commit", "ms": late, "count": BATCH, "action": "AddOrder"}
    )

    def landed() -> bool:
        records = engine.requests(engine.whmcs)
        return sum(1 for r in records if r["lost_reply"] == "late_commit") == BATCH

    forgotten = 0
    async with worker_running(settings), listening(listener_settings(engine)):
        activate_all(engine, ids)
        activated = time.monotonic()
        connection = await asyncpg.connect(engine.settings.database_url)
        try:
            while not await asyncio.to_thread(landed):
                status = await connection.execute("DELETE FROM billing_order_intents")
                forgotten += int(status.split()[-1])
                await asyncio.sleep(0.2)
        finally:
            await connection.close()
        assert forgotten >= BATCH, "every order's intent was lost at least once"
        await run_scenario(
            engine,
            report,
            "billing intents lost between attempts",
            f"{forgotten} intent rows deleted, {BATCH}x AddOrder {late / 1000:g} s late",
            ids,
            since=activated,
        )


async def test_worker_sigkilled_while_add_order_is_in_flight(
    engine: Engine, report: Report, worker_process: WorkerProcess
) -> None:
    # WHMCS commits each AddOrder a few seconds after it arrived; the worker that sent them is
    # killed before: the next attempts must start within seconds (heartbeats), find the orders
    # and not add a second.
    ids = create_orders(engine, 5)
    engine.fault(
        engine.whmcs, {"kind": "late_commit", "ms": 4_000, "count": len(ids), "action": "AddOrder"}
    )
    worker = worker_process()
    async with listening(listener_settings(engine)):
        activate_all(engine, ids)
        await until(partial(_billing_in_flight, engine.settings.database_url, len(ids)), within=60)
        await asyncio.sleep(1)  # past the lookup: every AddOrder is out, none committed yet
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        killed = time.monotonic()
        worker_process()
        await run_scenario(
            engine,
            report,
            "worker SIGKILLed mid-AddOrder",
            f"1 kill, {len(ids)} AddOrders committing 4 s later (recovery from the kill)",
            ids,
            within=300,
            since=killed,
        )
    recovery = report.rows[-1].recovery_seconds
    assert recovery < 30, f"orders Activated {recovery} s after the worker died"


@pytest.mark.usefixtures("each_transport")
async def test_temporal_down_for_90_seconds_while_orders_are_activated(
    engine: Engine, report: Report, tmp_path: Path
) -> None:
    # A server of the test's own, on a file and fixed ports, so it can be killed and started
    # again on the same database (the session's shared server is in memory).
    ports = [free_port(), free_port()]

    starts = 0

    def start() -> TemporalServer:
        nonlocal starts
        starts += 1
        return start_temporal(
            port=ports[0],
            ui_port=ports[1],
            db_file=tmp_path / "temporal.db",
            log_file=tmp_path / f"temporal-{starts}.log",
        )

    def kill(server: TemporalServer) -> None:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.stop()  # reaps it

    server = await asyncio.to_thread(start)
    try:
        settings = engine.settings.model_copy(update={"temporal_address": server.address})
        own = dataclasses.replace(
            engine, settings=settings, client=await connect_temporal(settings)
        )
        ids = create_orders(engine, 4)
        async with worker_running(settings), listening(listener_settings(own)):
            await until(partial(_subscribed, engine), within=60)
            await asyncio.to_thread(kill, server)
            activate_all(engine, ids[:2])
            await asyncio.sleep(45)
            activate_all(engine, ids[2:])
            await asyncio.sleep(45)
            server = await asyncio.to_thread(start)
            back = time.monotonic()
            await run_scenario(
                own,
                report,
                "Temporal down 90 s",
                "server killed, 4 orders activated meanwhile, restarted on its database",
                ids,
                since=back,
            )
        dead = await fetch_value(
            engine.settings.database_url, "SELECT count(*) FROM cdc_dead_letters"
        )
        assert dead == 0, "nothing was dead-lettered"
        assert report.rows[-1].recovery_seconds < 90, "fulfilled within about a minute of return"
    finally:
        await asyncio.to_thread(server.stop)


async def _activated_at_least(engine: Engine, ids: list[str], target: int) -> bool:
    return await activated_count(engine, ids) >= target


async def _started_at_least(engine: Engine, ids: list[str], target: int) -> bool:
    return len(await runs_per_order(engine, ids)) >= target


async def _caught_up(engine: Engine, database_url: str | None = None) -> bool:
    """The listener's cursor is at the newest order event Salesforce published."""
    state = engine.sf.control("GET", "state")["events"]["channels"]
    newest = int(state[ORDERS_CHANNEL]["lastReplayId"])
    transport = engine.settings.cdc_transport
    connection = await asyncpg.connect(database_url or engine.settings.database_url)
    try:
        stored = await connection.fetchval(
            "SELECT replay_id FROM cdc_replay_cursors WHERE transport = $1 AND channel = $2",
            transport,
            ORDERS_CHANNEL,
        )
    finally:
        await connection.close()
    if stored is None:
        return False
    if transport == "pubsub":
        # Opaque to the engine; the emulator knows which of its events an id names.
        return decode_replay_id(ORDERS_CHANNEL, bytes.fromhex(stored)) == newest
    return bool(stored == str(newest))


async def _leader(engine: Engine) -> str:
    """The instance name of the replica that reports itself active (the one newest)."""
    instance = await fetch_value(
        engine.settings.database_url,
        "SELECT instance FROM cdc_listener_status WHERE active AND connected"
        " ORDER BY updated_at DESC LIMIT 1",
    )
    assert instance is not None, "a replica leads"
    return str(instance)


async def _led_by_another(engine: Engine, previous: str) -> bool:
    others = await fetch_value(
        engine.settings.database_url,
        "SELECT count(*) FROM cdc_listener_status WHERE active AND connected AND instance <> $1",
        previous,
    )
    return bool(others)


async def _end_lease(engine: Engine) -> None:
    """Terminate the Postgres session holding the listeners' lease (its advisory lock)."""
    connection = await asyncpg.connect(engine.settings.database_url)
    try:
        ended = await connection.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks"
            " WHERE locktype = 'advisory' AND granted AND objsubid = 1"
            " AND ((classid::bigint << 32) | objid::bigint) = $1",
            LEASE_KEY,
        )
    finally:
        await connection.close()
    assert ended == 1, "one replica held the lease"


def _pid(instance: str) -> int:
    # Instance names are `listener@<host>:<pid>` when the process names itself.
    return int(instance.rsplit(":", 1)[1])


async def _billing_in_flight(database_url: str | None, at_least: int = 1) -> bool:
    connection = await asyncpg.connect(database_url)
    try:
        pending = await connection.fetchval(
            "SELECT count(*) FROM billing_order_intents WHERE whmcs_order_id IS NULL"
        )
    finally:
        await connection.close()
    return bool(pending >= at_least)


async def _read_model_activated(database_url: str, ids: list[str]) -> bool:
    connection = await asyncpg.connect(database_url)
    try:
        count = await connection.fetchval(
            "SELECT count(*) FROM fulfillments WHERE sf_order_id = ANY($1::text[]) AND status = $2",
            ids,
            FulfillmentStatus.ACTIVATED.value,
        )
    finally:
        await connection.close()
    return bool(count == len(ids))
