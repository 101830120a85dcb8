"""Listener ingest: events per second parsed, deduplicated and dispatched by the real listener
from a backlog of retained events it replays from the start (replay -2, no stored cursor).

Everything is local and started here, as in benchmarks/fulfillment.py (whose helpers are reused):
embedded Postgres and Redis, the Temporal dev server in memory (the listener needs its client),
the Salesforce emulator in a thread of this process, and the real `fulfillment listener` as its
own process.

The backlog (`--events N`, 10,000) is published straight onto the emulator's event bus before the
listener starts (the bus is locked, so publishing from this thread is safe; it is ~100x faster
than one control POST per event), and the emulator retains all of it (`max_events`). None of it
starts a workflow; each event still costs what most real traffic costs, cache work:
- 85% Order UPDATEs of a field other than Status, carrying their AccountId (the order's portal
  keys are deleted in Redis, with no Salesforce re-read);
- 5% Product2 and 5% PricebookEntry UPDATEs (the catalog cache group is invalidated);
- 5% `Account_Eligibility_Update__e` platform events (the account's eligibility key is deleted).

The same backlog is replayed once per transport (CDC_TRANSPORT), side by side in one run: first
over the Streaming API (CometD), then over the Pub/Sub API (gRPC, flow-controlled), each by a
fresh listener process with no stored cursor. The clock starts when the emulator first shows the
listener subscribed (its control views, polled every 10 ms) and stops when `cdc_replay_cursors`
holds each channel's last replay id on that transport (the cursor only moves past an event once
it and every earlier one is handled, so this is the moment the whole backlog is done). The figure
is events / those seconds.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from benchmarks.fulfillment import (
    ROOT,
    SF,
    _environment,
    _peak_rss_mb,
    _services,
    salesforce_settings,
    start_temporal,
)
from benchmarks.results import BenchmarkResult, Metric, Options, work_directory
from config.payload_keys import generate_payload_key
from config.settings import Settings, load_settings
from devstack.process import ChildProcess, free_port
from emulators.common.server import ThreadedServer
from emulators.salesforce.app import SalesforceEmulator
from emulators.salesforce.app import create_app as salesforce_app
from emulators.salesforce.events import EventBus, StreamEvent
from emulators.salesforce.pubsub import decode_replay_id
from migrations.runner import apply_migrations

NAME = "listener_ingest"
TARGET = 500.0
USER = "005000000000002AAA"
Say = Callable[[str], None]

# Raised by `python -m benchmarks --events N`; Options (shared by every benchmark) has no field.
_settings: dict[str, int] = {"events": 10_000}


def configure(*, events: int | None = None) -> None:
    if events is not None:
        _settings["events"] = events


def _sf_id(prefix: str, number: int) -> str:
    # 18 characters, as Salesforce ids are; the listener never looks these records up.
    return f"{prefix}{number:012d}AAA"


def _publish(bus: EventBus, count: int, channels: list[str]) -> dict[str, int]:
    """The backlog; the last replay id of each of `channels` that got events."""
    events: list[StreamEvent] = []
    for n in range(count):
        kind = n % 20
        fields: dict[str, object]
        if kind == 0:
            event = bus.publish_platform_event(
                name="Account_Eligibility_Update__e",
                fields={"Account_Id__c": _sf_id("001", n % 500)},
                created_by=USER,
            )
            events.append(event)
            continue
        if kind == 1:
            entity, record, fields = "Product2", _sf_id("01t", n % 50), {"Name": f"Plan {n}"}
        elif kind == 2:
            entity, record, fields = "PricebookEntry", _sf_id("01u", n % 50), {"UnitPrice": n}
        else:
            entity, record = "Order", _sf_id("801", n)
            fields = {"Description": f"note {n}", "AccountId": _sf_id("001", n % 500)}
        event = bus.publish_change(
            entity=entity,
            change_type="UPDATE",
            record_ids=[record],
            fields=fields,
            changed_fields=[*fields],
            commit_user=USER,
            change_origin="",
            transaction_key=str(uuid.uuid4()),
            sequence_number=1,
        )
        events.append(event)
    # Only the listener's channels: the bus also numbers `/data/ChangeEvents`, which it does not
    # subscribe to.
    last: dict[str, int] = {}
    for event in events:
        for channel, replay_id in event.replay_ids.items():
            if channel in channels:
                last[channel] = max(replay_id, last.get(channel, replay_id))
    return last


async def _subscribed(control: httpx.AsyncClient, transport: str, within: float) -> float:
    """Wall-clock moment the emulator first shows the listener subscribed on `transport`."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if transport == "pubsub":
            reply = await control.get("/__emulator__/pubsub/subscriptions")
            if reply.json()["subscriptions"]:
                return time.time()
        else:
            sessions = (await control.get("/__emulator__/streaming/sessions")).json()["sessions"]
            if any(session["subscriptions"] for session in sessions):
                return time.time()
        await asyncio.sleep(0.01)
    raise TimeoutError("the listener never subscribed")


def _bus_replay_id(transport: str, channel: str, replay_id: str) -> int:
    """Which of the emulator's events a stored cursor names: CometD's ids are the bus's own;
    Pub/Sub's are opaque to the engine, but the emulator can read its own back."""
    if transport == "pubsub":
        known = decode_replay_id(channel, bytes.fromhex(replay_id))
        return -1 if known is None else known
    return int(replay_id)


async def _caught_up(
    database_url: str, transport: str, last: dict[str, int], within: float
) -> float:
    """Wall-clock moment every channel's cursor on `transport` names its last event."""
    connection = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + within
        cursors: dict[str, int] = {}
        while time.monotonic() < deadline:
            rows = await connection.fetch(
                "SELECT channel, replay_id FROM cdc_replay_cursors WHERE transport = $1",
                transport,
            )
            cursors = {
                row["channel"]: _bus_replay_id(transport, row["channel"], row["replay_id"])
                for row in rows
            }
            if all(cursors.get(channel, -1) >= replay for channel, replay in last.items()):
                return time.time()
            # 20 ms of polling granularity on a run of seconds: under 1% of the figure.
            await asyncio.sleep(0.02)
        behind = {c: (cursors.get(c), r) for c, r in last.items() if cursors.get(c, -1) < r}
        raise TimeoutError(f"{transport} cursors behind after {within} s: {behind}")
    finally:
        await connection.close()


@dataclass(frozen=True)
class Ingested:
    seconds: float
    peak_rss_mb: float | None
    sf_rest_calls: int


async def _ingest(
    transport: str,
    settings: Settings,
    control: httpx.AsyncClient,
    last: dict[str, int],
    work: Path,
) -> Ingested:
    """Seconds for a fresh listener on `transport` to handle the whole backlog, its peak RSS,
    and the Salesforce REST calls it made meanwhile (from the emulator's request log)."""
    count = _settings["events"]
    (await control.delete("/__emulator__/requests")).raise_for_status()
    listener = ChildProcess(
        f"listener-{transport}",
        [sys.executable, "-m", "cli", "listener"],
        log_file=work / f"listener-{transport}.log",
        env=_environment(settings.model_copy(update={"cdc_transport": transport})),
        cwd=ROOT,
    )
    try:
        subscribed = await _subscribed(control, transport, within=60)
        done = await _caught_up(
            settings.database_url or "", transport, last, within=max(120.0, count / 20)
        )
        rss = _peak_rss_mb(listener.pid)
    finally:
        listener.stop()
    records = (await control.get("/__emulator__/requests")).json()["requests"]
    # What counts against the org's API allowance: REST calls. The transport's own traffic
    # (CometD polls, Pub/Sub RPCs) and token requests do not.
    rest = sum(1 for r in records if r["path"].startswith("/services/data/"))
    return Ingested(done - subscribed, rss, rest)


async def _run(say: Say) -> BenchmarkResult:
    count = _settings["events"]
    with work_directory("bench-ingest-") as work, ExitStack() as stack:
        postgres, redis = stack.enter_context(_services(work))
        database_url, redis_url = postgres.url, redis.url
        await apply_migrations(database_url, create_portal_tables=True)
        # Room for the whole backlog (the default keeps 10,000, exactly the default count).
        sf_app = salesforce_app(
            seed=0,
            certs_dir=work / "sf-certs",
            credentials=SF,
            max_events=count + 100,
            pubsub_port=free_port(),
        )
        state = sf_app.state
        server = stack.enter_context(
            ThreadedServer(sf_app, ssl_certfile=state.ssl_certfile, ssl_keyfile=state.ssl_keyfile)
        )
        # By name: aiohttp keeps no cookie set by an IP address, and streaming needs its cookie.
        instance = server.base_url.replace("://127.0.0.1:", "://localhost:", 1)
        emulator: SalesforceEmulator = state.emulator
        began = time.monotonic()
        last = _publish(emulator.bus, count, Settings().cdc_channel_list)
        took = time.monotonic() - began
        say(f"  {count} events retained in {took:.1f} s on {len(last)} channels")
        env = await start_temporal()
        measured: dict[str, Ingested] = {}
        try:
            settings = load_settings(
                temporal_address=env.client.service_client.config.target_host,
                temporal_task_queue="bench-ingest",
                temporal_payload_keys=generate_payload_key("bench-key"),
                database_url=database_url,
                redis_url=redis_url,
                **salesforce_settings(instance, state),
                sf_pubsub_endpoint=state.pubsub_address,
                # The events were published before the listener started: replay them.
                cdc_initial_replay=-2,
                listener_metrics_port=0,
            )
            async with httpx.AsyncClient(
                base_url=instance, verify=state.ca_file, trust_env=False, timeout=10
            ) as control:
                for transport in ("cometd", "pubsub"):
                    measured[transport] = await _ingest(transport, settings, control, last, work)
                    seconds = measured[transport].seconds
                    say(f"  {transport}: {count / seconds:.0f} events/s ({seconds:.2f} s)")
        finally:
            await env.shutdown()
    rate = count / measured["cometd"].seconds
    pubsub_rate = count / measured["pubsub"].seconds
    metrics = [
        Metric(
            "ingest_events_per_s",
            round(rate, 1),
            "events/s",
            f"{count} retained events replayed (-2) over CometD: subscribed -> every cursor at"
            " its last id",
        ),
        Metric(
            "ingest_target_ratio",
            round(rate / TARGET, 2),
            "ratio",
            f"CometD events/s / {TARGET:g} (target >= 1)",
        ),
        Metric(
            "ingest_pubsub_events_per_s",
            round(pubsub_rate, 1),
            "events/s",
            f"the same {count} events replayed (EARLIEST) over the Pub/Sub API",
        ),
        Metric(
            "ingest_pubsub_to_cometd_ratio",
            round(pubsub_rate / rate, 2),
            "ratio",
            "Pub/Sub events/s / CometD events/s, same backlog, same run",
        ),
    ]
    for transport in ("cometd", "pubsub"):
        calls = measured[transport].sf_rest_calls
        name = "listener_sf_calls_per_event" + ("" if transport == "cometd" else "_pubsub")
        metrics.append(
            Metric(
                name,
                round(calls / count, 4),
                "calls",
                f"Salesforce REST calls per event over {transport} ({calls} for {count} events;"
                " the transport's own traffic apart)",
            )
        )
    for transport, key in (("cometd", "ingest_listener_peak_rss_mb"), ("pubsub", None)):
        rss = measured[transport].peak_rss_mb
        if rss is not None:
            name = key or f"ingest_{transport}_listener_peak_rss_mb"
            metrics.append(Metric(name, rss, "MB", f"listener VmHWM on {transport}"))
    return BenchmarkResult(
        NAME,
        "a backlog of retained change and platform events replayed by the real listener, "
        "on each transport",
        metrics,
        {
            "events": count,
            "seconds": {t: round(m.seconds, 3) for t, m in measured.items()},
            "sf_rest_calls": {t: m.sf_rest_calls for t, m in measured.items()},
            "last_replay_ids": last,
        },
    )


def run(options: Options, say: Say) -> BenchmarkResult:
    del options  # Sized by --events, not by seconds.
    result: BenchmarkResult = asyncio.run(_run(say))
    return result
