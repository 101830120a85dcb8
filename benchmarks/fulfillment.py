"""Fulfillment throughput and latency: the real engine, from a Salesforce activation to the
order written back Activated, against a bare Temporal workflow on the same server in one run.

Everything is local and started here: embedded Postgres and Redis (devstack.services), the
Temporal dev server in memory with `history.transferProcessorMaxPollRPS=1000` (its default of 20
delays each workflow task by ~40 ms; see tooling.md), the three emulators in threads of this
process at zero added latency (Freebit's activation delay 0), and the real `fulfillment worker`
and `fulfillment listener` as their own processes (so their peak RSS is theirs: VmHWM).

Orders are SIM-less (FIBER-1G on the Portal price book for CUST-0001): Freebit is not called.
The bare baseline runs as many regular and local no-op activities as one fulfillment's history
holds (counted from the warm-up order's history, not assumed), in a worker in this process.

- `fulfillment_throughput`: N orders created as Draft, then activated by composite PATCHes
  (200 records each, as Salesforce allows); from just before the first PATCH to the latest
  `SystemModstamp` of the orders once every one reads `Activation_Status__c = Activated` (the
  write-back is the last write to an Order), read once every fulfillment has closed in
  Temporal. The bare figure: N workflows started at once, from
  the first start to the last result.
- `fulfillment_latency`: orders one at a time. Commit is taken just before the PATCH is sent
  (so the PATCH's own round trip is counted against us); the workflow's start is Temporal's
  `start_time`; the write-back is the order's `SystemModstamp`, read once the run is over (so
  the measurement does not load the emulators while the order is in flight). The bare
  end-to-end time is from just before `start_workflow` to its result.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHistoryEventFilterType,
)
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from benchmarks.bare_workflow import BareWorkflow, noop
from benchmarks.cpu import CpuMeter, find_process
from benchmarks.results import BenchmarkResult, Metric, Options, median, work_directory
from clients.salesforce_auth import SalesforceAuth
from config.payload_keys import generate_payload_key
from config.settings import Settings, as_environment, load_settings
from devstack.process import ChildProcess
from devstack.services import (
    SEARCH_ATTRIBUTES,
    PostgresServer,
    RedisServer,
    start_postgres,
    start_redis,
    temporal_binary,
)
from domain.fulfillment import WORKFLOW_TYPE, workflow_id
from emulators.common.server import ThreadedServer
from emulators.freebit.app import API_PREFIX as FREEBIT_PREFIX
from emulators.freebit.app import create_app as freebit_app
from emulators.salesforce.app import create_app as salesforce_app
from emulators.salesforce.auth import Credentials
from emulators.whmcs.app import API_PATH as WHMCS_PATH
from emulators.whmcs.app import create_app as whmcs_app
from migrations.runner import apply_migrations

THROUGHPUT = "fulfillment_throughput"
LATENCY = "fulfillment_latency"
SF_API = "60.0"
SF = Credentials(
    client_id="3MVG9bench.fulfillment",
    client_secret="bench-secret",  # noqa: S106 (the emulator's own throwaway login)
    username="bench@fulfillment.test",
    password="bench-password",  # noqa: S106
)
WHMCS = {"identifier": "bench-id", "secret": "bench-secret", "access_key": "bench-access"}
FREEBIT = {"oem_id": "bench-oem", "oem_key": "bench-oem-key", "activation_delay": 0}
DYNAMIC_CONFIG = ["--dynamic-config-value", "history.transferProcessorMaxPollRPS=1000"]
BARE_QUEUE = "bench-bare"
ROOT = Path(__file__).resolve().parents[1]
Say = Callable[[str], None]

# Set by `python -m benchmarks --orders N` (Options, shared by every benchmark, has no field for
# it) and, for the rounds, from Options by `run_throughput`.
_settings: dict[str, int] = {"orders": 500, "latency_orders": 10, "rounds": 5}


def configure(*, orders: int | None = None, latency_orders: int | None = None) -> None:
    if orders is not None:
        _settings["orders"] = orders
    if latency_orders is not None:
        _settings["latency_orders"] = latency_orders


@dataclass
class Stack:
    settings: Settings
    client: Client
    sf: httpx.AsyncClient
    account: str
    entry: dict[str, Any]
    worker: ChildProcess
    listener: ChildProcess
    cpu: CpuMeter
    # Each emulator's control API (`<base>/__emulator__`), by system; the Salesforce CA.
    controls: dict[str, str] = field(default_factory=dict)
    ca_file: str = ""
    # Starts a worker process like the first one (after a benchmark killed it).
    start_worker: Callable[[], ChildProcess] | None = None
    # Regular and local activities of one SIM-less fulfillment (from the warm-up's history).
    shape: tuple[int, int] = (0, 0)


def _environment(settings: Settings) -> dict[str, str]:
    """The settings as a `fulfillment` process's environment."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        **as_environment(settings),
    }


@contextmanager
def _emulators(work: Path) -> Iterator[tuple[str, ThreadedServer, str, str]]:
    sf_app = salesforce_app(seed=0, certs_dir=work / "sf-certs", credentials=SF)
    with ExitStack() as stack:
        sf = stack.enter_context(
            ThreadedServer(
                sf_app,
                ssl_certfile=sf_app.state.ssl_certfile,
                ssl_keyfile=sf_app.state.ssl_keyfile,
            )
        )
        whmcs = stack.enter_context(ThreadedServer(whmcs_app(seed=0, settings=WHMCS)))
        freebit = stack.enter_context(ThreadedServer(freebit_app(seed=0, settings=FREEBIT)))
        # By name: aiohttp keeps no cookie set by an IP address, and streaming needs its cookie.
        instance = sf.base_url.replace("://127.0.0.1:", "://localhost:", 1)
        yield instance, sf, f"{whmcs.base_url}{WHMCS_PATH}", f"{freebit.base_url}{FREEBIT_PREFIX}"


def _control_base(api: str) -> str:
    """`http://host:port/whatever` -> `http://host:port/__emulator__`."""
    scheme, _, host = api.split("/", 3)[:3]
    return f"{scheme}//{host}/__emulator__"


async def _seed(instance: str, ca_file: str, whmcs_api: str, freebit_api: str) -> None:
    async with httpx.AsyncClient(verify=ca_file, trust_env=False, timeout=30) as http:
        (
            await http.post(f"{instance}/__emulator__/seed", json={"dataset": "demo"})
        ).raise_for_status()
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        for api in (whmcs_api, freebit_api):
            base = api.split("/", 3)
            control = f"{base[0]}//{base[2]}/__emulator__"
            (await http.post(f"{control}/seed", json={"dataset": "demo"})).raise_for_status()
        freebit_control = f"{freebit_api.split('/', 3)[0]}//{freebit_api.split('/', 3)[2]}"
        reply = await http.post(
            f"{freebit_control}/__emulator__/config", json={"activation_delay": 0}
        )
        # The delay is already 0 from create_app; the control call is belt and braces.
        if reply.status_code >= 400 and reply.status_code != 404:
            reply.raise_for_status()


async def _query(sf: httpx.AsyncClient, soql: str) -> list[dict[str, Any]]:
    reply = await sf.get("query", params={"q": soql})
    reply.raise_for_status()
    records: list[dict[str, Any]] = reply.json()["records"]
    return records


async def _create(stack: Stack, count: int) -> list[str]:
    """`count` SIM-less Draft orders with one item each, as the portal makes them."""
    ids: list[str] = []
    for start in range(0, count, 200):
        size = min(200, count - start)
        orders = [
            {
                "attributes": {"type": "Order"},
                "AccountId": stack.account,
                "Pricebook2Id": stack.entry["Pricebook2Id"],
                "Status": "Draft",
                "EffectiveDate": date.today().isoformat(),
                "BillingStreet": "1-2-3 Shibuya",
                "BillingCity": "Shibuya-ku",
                "BillingState": "Tokyo",
                "BillingPostalCode": "150-0002",
                "BillingCountry": "Japan",
            }
            for _ in range(size)
        ]
        created = await _collection(stack.sf, "POST", orders)
        items = [
            {
                "attributes": {"type": "OrderItem"},
                "OrderId": order,
                "PricebookEntryId": stack.entry["Id"],
                "Quantity": 1,
                "UnitPrice": stack.entry["UnitPrice"],
            }
            for order in created
        ]
        await _collection(stack.sf, "POST", items)
        ids += created
    return ids


async def _collection(
    sf: httpx.AsyncClient, method: str, records: list[dict[str, Any]]
) -> list[str]:
    reply = await sf.request(
        method, "composite/sobjects", json={"allOrNone": True, "records": records}
    )
    reply.raise_for_status()
    results = reply.json()
    assert all(result["success"] for result in results), results
    return [str(result["id"]) for result in results]


async def _activate(stack: Stack, ids: list[str]) -> float:
    """Activate every order (Status alone); the wall-clock moment just before the first PATCH."""
    started = time.time()
    for start in range(0, len(ids), 200):
        records = [
            {"attributes": {"type": "Order"}, "id": order, "Status": "Activated"}
            for order in ids[start : start + 200]
        ]
        await _collection(stack.sf, "PATCH", records)
    return started


def _stamp(value: str) -> float:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


async def _activated(stack: Stack, ids: list[str], within: float) -> dict[str, float]:
    """Each order's write-back moment (its SystemModstamp) once all read Activated."""
    deadline = time.monotonic() + within
    done: dict[str, float] = {}
    while True:
        pending = [order for order in ids if order not in done]
        for start in range(0, len(pending), 100):
            quoted = ",".join(f"'{order}'" for order in pending[start : start + 100])
            soql = (
                "SELECT Id, Activation_Status__c, SystemModstamp FROM Order"  # noqa: S608
                f" WHERE Id IN ({quoted})"
            )
            for record in await _query(stack.sf, soql):
                status = record["Activation_Status__c"]
                if status == "Activated":
                    done[record["Id"]] = _stamp(record["SystemModstamp"])
                elif status not in (None, "Pending", "Activating"):
                    raise RuntimeError(f"order {record['Id']} ended {status}")
        if len(done) == len(ids):
            return done
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(ids) - len(done)} of {len(ids)} orders not Activated")
        # Polling does not set the figure (SystemModstamp does); it only ends the wait.
        await asyncio.sleep(0.02 if len(ids) == 1 else 0.5)


async def _fulfillments(stack: Stack, *, running: bool = False) -> int:
    queue = stack.settings.temporal_task_queue
    query = f'WorkflowType = "{WORKFLOW_TYPE}" AND TaskQueue = "{queue}"'
    if running:
        query += ' AND ExecutionStatus = "Running"'
    return (await stack.client.count_workflows(query)).count


async def _all_closed(stack: Stack, total: int, within: float) -> None:
    """Until `total` fulfillments exist and none runs: two visibility counts a second, where
    polling Salesforce would load the emulators (this process) while orders are in flight."""
    async with asyncio.timeout(within):
        while True:
            if await _fulfillments(stack) >= total and not await _fulfillments(stack, running=True):
                return
            await asyncio.sleep(1)


async def _finished(client: Client, order: str, within: float) -> WorkflowExecutionDescription:
    """The order's fulfillment once it ended: awaited through Temporal (a long poll), once the
    listener has started it."""
    handle = client.get_workflow_handle(workflow_id(order))
    async with asyncio.timeout(within):
        while True:
            try:
                # The close event only, without decoding the result (this client has no key).
                async for _ in handle.fetch_history_events(
                    wait_new_event=True,
                    event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT,
                ):
                    pass
                return await handle.describe()
            except RPCError as error:
                if error.status != RPCStatusCode.NOT_FOUND:
                    raise
                await asyncio.sleep(0.005)  # not started yet


async def _shape(client: Client, order: str) -> tuple[int, int]:
    handle = client.get_workflow_handle(workflow_id(order))
    # The write-back is not the last step (caches are invalidated after it): count a whole run.
    deadline = time.monotonic() + 60
    while (await handle.describe()).status != WorkflowExecutionStatus.COMPLETED:
        if time.monotonic() > deadline:
            raise TimeoutError(f"warm-up workflow of {order} did not complete")
        await asyncio.sleep(0.05)
    regular = local = 0
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            regular += 1
        elif (
            event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
            # Only local activities: a patch (version) marker costs nothing of the kind.
            and event.marker_recorded_event_attributes.marker_name == "core_local_activity"
        ):
            local += 1
    return regular, local


def _peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    # Nearest rank: with 10 samples p95 and p99 are the worst one, said as such.
    rank = max(1, min(len(ordered), int(-(-fraction * len(ordered) // 1))))
    return ordered[rank - 1]


async def _bare(client: Client, shape: tuple[int, int], count: int) -> list[float]:
    """Start `count` bare workflows at once; each one's seconds from just before its start."""

    async def one() -> float:
        began = time.time()
        await client.execute_workflow(
            BareWorkflow.run, list(shape), id=f"bench-bare-{uuid.uuid4()}", task_queue=BARE_QUEUE
        )
        return time.time() - began

    return list(await asyncio.gather(*(one() for _ in range(count))))


@contextmanager
def _services(work: Path) -> Iterator[tuple[PostgresServer, RedisServer]]:
    with ExitStack() as stack:
        postgres = start_postgres(work / "pg", durable=False, log_file=work / "postgres.log")
        stack.callback(postgres.stop)
        redis = start_redis(data_dir=work / "redis", persist=False, log_file=work / "redis.log")
        stack.callback(redis.stop)
        yield postgres, redis


def _cpu_meter(
    temporal_address: str,
    processes: dict[str, ChildProcess],
    postgres: PostgresServer,
    redis: RedisServer,
) -> CpuMeter:
    named = {name: process.pid for name, process in processes.items()}
    port = temporal_address.rsplit(":", 1)[1]
    server = find_process("server start-dev", f"--port {port}")
    if server is not None:
        named["temporal"] = server
    named["postgres"] = postgres.pid
    named["redis"] = redis.pid
    # This process: the emulators' threads and, in the baseline, the bare worker.
    named["bench"] = os.getpid()
    return CpuMeter(named)


def _cpu_per_order(seconds: dict[str, float], count: int) -> dict[str, float]:
    return {name: round(value * 1000 / count, 1) for name, value in seconds.items()}


async def start_temporal() -> WorkflowEnvironment:
    """The real dev server, quiet and tuned as every benchmark measures it."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        search_attributes=[SearchAttributeKey.for_keyword(n) for n in SEARCH_ATTRIBUTES],
        ui=False,
        dev_server_log_level="error",
        dev_server_extra_args=DYNAMIC_CONFIG,
    )


def salesforce_settings(instance: str, state: Any) -> dict[str, Any]:
    """Settings that point the engine at a running Salesforce emulator."""
    return {
        "sf_token_url": f"{instance}/services/oauth2/token",
        "sf_client_id": SF.client_id,
        "sf_username": SF.username,
        "sf_jwt_key_file": state.jwt_private_key_file,
        "sf_ca_file": state.ca_file,
        "sf_api_version": SF_API,
    }


async def _run(say: Say, measure: Callable[[Stack, Say], Any]) -> Any:
    with work_directory("bench-fulfillment-") as work, ExitStack() as stack:
        postgres, redis = stack.enter_context(_services(work))
        database_url, redis_url = postgres.url, redis.url
        await apply_migrations(database_url, create_portal_tables=True)
        instance, sf_server, whmcs_api, freebit_api = stack.enter_context(_emulators(work))
        state = sf_server.app.state  # type: ignore[attr-defined]
        await _seed(instance, state.ca_file, whmcs_api, freebit_api)
        env = await start_temporal()
        try:
            settings = load_settings(
                temporal_address=env.client.service_client.config.target_host,
                temporal_task_queue="bench-fulfillment",
                temporal_payload_keys=generate_payload_key("bench-key"),
                database_url=database_url,
                redis_url=redis_url,
                **salesforce_settings(instance, state),
                # The events were published before the listener started: replay them.
                cdc_initial_replay=-2,
                whmcs_api_url=whmcs_api,
                whmcs_identifier=WHMCS["identifier"],
                whmcs_secret=WHMCS["secret"],
                whmcs_access_key=WHMCS["access_key"],
                freebit_base_url=freebit_api,
                freebit_oem_id=FREEBIT["oem_id"],
                freebit_oem_key=FREEBIT["oem_key"],
                worker_metrics_port=0,
                listener_metrics_port=0,
                worker_shutdown_grace_seconds=2,
            )
            client = await Client.connect(
                settings.temporal_address,
                namespace=settings.temporal_namespace,
                data_converter=env.client.data_converter,
            )
            processes: dict[str, ChildProcess] = {}
            starts = {"worker": 0, "listener": 0}

            def start(name: str) -> ChildProcess:
                starts[name] += 1
                process = ChildProcess(
                    name,
                    [sys.executable, "-m", "cli", name],
                    log_file=work / f"{name}-{starts[name]}.log",
                    env=_environment(settings),
                    cwd=ROOT,
                )
                stack.callback(process.stop)
                return process

            for name in ("worker", "listener"):
                processes[name] = start(name)
            auth = SalesforceAuth.from_settings(settings)
            try:
                token = await auth.token()
            finally:
                await auth.aclose()
            sf = httpx.AsyncClient(
                base_url=f"{token.instance_url}/services/data/v{SF_API}/",
                headers={"Authorization": f"Bearer {token.access_token.get_secret_value()}"},
                verify=state.ca_file,
                trust_env=False,
                timeout=60,
            )
            try:
                account = (
                    await _query(
                        sf, "SELECT Id FROM Account WHERE Customer_Number__c = 'CUST-0001'"
                    )
                )[0]["Id"]
                entry = (
                    await _query(
                        sf,
                        "SELECT Id, Pricebook2Id, UnitPrice FROM PricebookEntry"
                        " WHERE Product2.ProductCode = 'FIBER-1G' AND Pricebook2.Name = 'Portal'",
                    )
                )[0]
                bench = Stack(
                    settings,
                    client,
                    sf,
                    account,
                    entry,
                    processes["worker"],
                    processes["listener"],
                    _cpu_meter(settings.temporal_address, processes, postgres, redis),
                    controls={
                        "salesforce": f"{instance}/__emulator__",
                        "whmcs": _control_base(whmcs_api),
                        "freebit": _control_base(freebit_api),
                    },
                    ca_file=state.ca_file,
                    start_worker=lambda: start("worker"),
                )
                # Warm-up: proves the listener and worker are up, and gives the activity count.
                (order,) = await _create(bench, 1)
                await _activate(bench, [order])
                await _activated(bench, [order], within=120)
                bench.shape = await _shape(client, order)
                say(f"  SIM-less fulfillment: {bench.shape[0]} activities + {bench.shape[1]} local")
                async with Worker(
                    client, task_queue=BARE_QUEUE, workflows=[BareWorkflow], activities=[noop]
                ):
                    await _bare(client, bench.shape, 3)
                    return await measure(bench, say)
            finally:
                await sf.aclose()
        finally:
            await env.shutdown()


@dataclass(frozen=True)
class _Phase:
    seconds: float
    cpu_ms: dict[str, float]


async def _fulfil_batch(stack: Stack, count: int, say: Say) -> _Phase:
    ids = await _create(stack, count)
    before = await _fulfillments(stack)
    stack.cpu.mark()
    started = await _activate(stack, ids)
    await _all_closed(stack, before + count, within=max(300.0, count * 2.0))
    cpu = _cpu_per_order(stack.cpu.since(), count)
    done = await _activated(stack, ids, within=60)
    seconds = max(done.values()) - started
    say(f"  {count} orders Activated in {seconds:.1f} s; CPU ms per order: {cpu}")
    return _Phase(seconds, cpu)


async def _bare_batch(stack: Stack, count: int, say: Say) -> _Phase:
    stack.cpu.mark()
    began = time.time()
    await _bare(stack.client, stack.shape, count)
    seconds = time.time() - began
    cpu = _cpu_per_order(stack.cpu.since(), count)
    say(f"  {count} bare workflows done in {seconds:.1f} s; CPU ms per workflow: {cpu}")
    return _Phase(seconds, cpu)


async def _throughput(stack: Stack, say: Say) -> BenchmarkResult:
    """`rounds` pairs of batches, the engine's and the bare one, their order alternating
    (engine first, then bare first, ...): the dev server slows as its in-memory store fills,
    and alternating spreads that drift over both sides. Figures are medians over the pairs."""
    count, rounds = _settings["orders"], _settings["rounds"]
    pairs: list[tuple[_Phase, _Phase]] = []
    for index in range(rounds):
        say(f"  round {index + 1} of {rounds}")
        if index % 2 == 0:
            engine = await _fulfil_batch(stack, count, say)
            bare = await _bare_batch(stack, count, say)
        else:
            bare = await _bare_batch(stack, count, say)
            engine = await _fulfil_batch(stack, count, say)
        pairs.append((engine, bare))
    worker_rss = _peak_rss_mb(stack.worker.pid)
    listener_rss = _peak_rss_mb(stack.listener.pid)
    fulfillment_rate = median([count / engine.seconds for engine, _ in pairs])
    bare_rate = median([count / bare.seconds for _, bare in pairs])
    ratio = median([bare.seconds / engine.seconds for engine, bare in pairs])
    ratios = sorted(round(bare.seconds / engine.seconds, 3) for engine, bare in pairs)
    worker_cpu = median([engine.cpu_ms.get("worker", 0.0) for engine, _ in pairs])
    # The bare worker runs in this process, idle otherwise while the bare batch runs.
    bare_cpu = median([bare.cpu_ms.get("bench", 0.0) for _, bare in pairs])
    regular, local = stack.shape
    metrics = [
        Metric(
            "fulfillment_orders_per_s",
            round(fulfillment_rate, 2),
            "orders/s",
            f"{count} SIM-less orders activated at once, fully Activated per second"
            f" (median of {rounds})",
        ),
        Metric(
            "bare_orders_per_s",
            round(bare_rate, 2),
            "wf/s",
            f"{count} bare workflows of {regular} no-op activities + {local} local, at once"
            f" (median of {rounds})",
        ),
        Metric(
            "fulfillment_throughput_ratio",
            round(ratio, 3),
            "ratio",
            f"fulfillment / bare, median of {rounds} rounds' ratios (spread {ratios[0]}"
            f"-{ratios[-1]}; target >= 0.75)",
        ),
        Metric(
            "worker_cpu_ms_per_order",
            round(worker_cpu, 1),
            "ms",
            f"the worker process's CPU per fulfilled order (median of {rounds})",
        ),
        Metric(
            "bare_worker_cpu_ms_per_workflow",
            round(bare_cpu, 1),
            "ms",
            "the bare worker's CPU per workflow of the same activity shape (this process)",
        ),
    ]
    if worker_rss is not None:
        metrics.append(Metric("worker_peak_rss_mb", worker_rss, "MB", "worker VmHWM"))
    if listener_rss is not None:
        metrics.append(Metric("listener_peak_rss_mb", listener_rss, "MB", "listener VmHWM"))
    return BenchmarkResult(
        THROUGHPUT,
        "orders activated at once through the Salesforce emulator vs bare no-op workflows",
        metrics,
        {
            "orders": count,
            "activities_per_fulfillment": {"regular": regular, "local": local},
            "rounds": [
                {
                    "fulfillment_seconds": round(engine.seconds, 3),
                    "bare_seconds": round(bare.seconds, 3),
                    "ratio": round(bare.seconds / engine.seconds, 3),
                    # Where the two cores went: CPU ms per order (per bare workflow), by process.
                    "cpu_ms_per_order": engine.cpu_ms,
                    "bare_cpu_ms_per_workflow": bare.cpu_ms,
                }
                for engine, bare in pairs
            ],
        },
    )


async def _latency(stack: Stack, say: Say) -> BenchmarkResult:
    count = _settings["latency_orders"]
    ids = await _create(stack, count)
    starts: list[float] = []
    ends: list[float] = []
    for order in ids:
        committed = await _activate(stack, [order])
        described = await _finished(stack.client, order, within=60)
        # Asked once the run is over: polling Salesforce meanwhile would load the emulators
        # (this process) while the order is in flight, and slow what is measured.
        written = (await _activated(stack, [order], within=60))[order]
        starts.append((described.start_time.timestamp() - committed) * 1000)
        ends.append((written - committed) * 1000)
    bare: list[float] = []
    for _ in range(count):
        bare += await _bare(stack.client, stack.shape, 1)
    bare_p50 = _percentile(bare, 0.5) * 1000
    e2e_p50 = _percentile(ends, 0.5)
    metrics = [
        Metric(
            f"start_latency_p{p}_ms",
            round(_percentile(starts, p / 100), 1),
            "ms",
            f"commit -> workflow started, p{p} of {count} (target p95 < 100)",
        )
        for p in (50, 95, 99)
    ]
    metrics += [
        Metric(
            f"e2e_latency_p{p}_ms",
            round(_percentile(ends, p / 100), 1),
            "ms",
            f"commit -> Salesforce Activated, p{p} of {count}",
        )
        for p in (50, 95, 99)
    ]
    metrics += [
        Metric(
            "bare_e2e_latency_p50_ms", round(bare_p50, 1), "ms", "bare workflow start -> result"
        ),
        Metric(
            "e2e_latency_ratio_p50",
            round(e2e_p50 / bare_p50, 3),
            "ratio",
            "fulfillment e2e p50 / bare e2e p50 (target <= 1.5)",
        ),
    ]
    return BenchmarkResult(
        LATENCY,
        "single SIM-less orders one at a time: commit -> started, commit -> written back",
        metrics,
        {
            "orders": count,
            "start_ms": [round(v, 1) for v in starts],
            "e2e_ms": [round(v, 1) for v in ends],
            "bare_e2e_ms": [round(v * 1000, 1) for v in bare],
        },
    )


def run_throughput(options: Options, say: Say) -> BenchmarkResult:
    # Sized by --orders, not by seconds; --rounds pairs of batches.
    _settings["rounds"] = options.rounds
    result: BenchmarkResult = asyncio.run(_run(say, _throughput))
    return result


def run_latency(options: Options, say: Say) -> BenchmarkResult:
    del options
    result: BenchmarkResult = asyncio.run(_run(say, _latency))
    return result
