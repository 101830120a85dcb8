"""`fulfillment dev`: the whole stack on one machine, supervised, described in `.dev/stack.json`.

    fulfillment dev [--fresh] [--dir .dev] [--no-emulators] [--no-worker] [--no-listener]
                    [--no-api] [--free-ports] [--<name>-port N] [--no-fsync]

Order: Temporal (its Web UI decoding payloads through the API's codec), Postgres (unless
DATABASE_URL), Redis (unless REDIS_URL), migrations, then the components of
`devstack.components.COMPONENTS` (the emulators, the worker, the CDC listener, then the HTTP
API). The whole stack is planned first and every port it will listen
on is checked free before anything starts, so a taken port stops the launcher with one line
instead of leaving half a stack. Every child runs in its own process group with its output in
`.dev/logs/<name>.log` and dies with the launcher (the kernel's parent-death signal, so even after
`kill -9`); Ctrl-C or SIGTERM stops them all, the last started first. A launcher that was killed
leaves `.dev/pids.json` behind, and the next one stops whatever it left still running.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import astuple, dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from config.redaction import redact_url
from devstack.components import COMPONENTS, DevContext, Ports, api_codec_endpoint
from devstack.leftovers import AlreadyRunning, LauncherLock, record_children, stop_leftovers
from devstack.process import (
    ChildProcess,
    ServiceError,
    free_port,
    live_children,
    port_is_free,
    watch_children,
)
from devstack.services import start_postgres, start_redis, start_temporal
from devstack.stack_file import Stack, dev_secrets, merge, write_stack
from devstack.supervisor import Component, Say, ServiceUnit, Supervisor

T = TypeVar("T")

DEV_DATABASE = "fulfillment"
TASK_QUEUE_DEFAULT = "order-fulfillment"


class _Stop(BaseException):
    """Raised by the SIGINT/SIGTERM handler: unwinds whatever the launcher is doing."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _say(line: str) -> None:
    print(line, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fulfillment dev",
        description="Run Temporal, Postgres, Redis, the emulators and the engine locally.",
        epilog="Every port can also be set as DEV_<NAME>_PORT (e.g. DEV_TEMPORAL_PORT); "
        "0 picks a free port.",
    )
    parser.add_argument("--dir", default=".dev", type=Path, help="state directory (.dev)")
    parser.add_argument("--fresh", action="store_true", help="wipe the state directory first")
    parser.add_argument(
        "--no-emulators", action="store_true", help="do not start the three emulators"
    )
    parser.add_argument(
        "--no-worker",
        action="store_true",
        help="do not start the worker; to run your own, source .dev/stack.env "
        "(set -a; . .dev/stack.env) and run `fulfillment worker`",
    )
    parser.add_argument(
        "--no-listener",
        action="store_true",
        help="do not start the CDC listener; to run your own, source .dev/stack.env and run "
        "`fulfillment listener`",
    )
    parser.add_argument(
        "--no-api",
        action="store_true",
        help="do not start the HTTP API (the Temporal UI then shows payloads encrypted); to run "
        "your own, source .dev/stack.env and run `fulfillment api`",
    )
    parser.add_argument(
        "--cdc-transport",
        choices=("cometd", "pubsub"),
        help="how the listener receives change events: the Streaming API (cometd, the default) "
        "or the Pub/Sub API over gRPC (pubsub); default: $CDC_TRANSPORT, else cometd",
    )
    parser.add_argument(
        "--free-ports", action="store_true", help="pick free ports for everything not set"
    )
    parser.add_argument(
        "--no-fsync",
        action="store_true",
        help="run the embedded Postgres without fsync: faster, but a crash of the machine may "
        "lose or corrupt .dev/postgres",
    )
    for item in fields(Ports):
        flag = item.name.replace("_", "-")
        parser.add_argument(f"--{flag}-port", dest=f"port_{item.name}", type=int, metavar="N")
    return parser


def _ports(args: argparse.Namespace, environ: Mapping[str, str]) -> Ports:
    """Flags win over DEV_<NAME>_PORT, which wins over the defaults; 0 becomes a free port
    (never one another part has by hand or by default, never the same one twice)."""
    chosen: dict[str, int] = {}
    for item in fields(Ports):
        value: int | None = getattr(args, f"port_{item.name}")
        if value is None and (raw := environ.get(f"DEV_{item.name.upper()}_PORT")):
            value = int(raw)
        if value is None and args.free_ports:
            value = 0
        if value is not None:
            chosen[item.name] = value
    fixed = {value for value in astuple(replace(Ports(), **chosen)) if value}
    for name, value in chosen.items():
        if not value:
            chosen[name] = free_port(avoid=fixed)
    return replace(Ports(), **chosen)


def _how_to_move(ports: Ports, port: int) -> str:
    names = [item.name for item in fields(Ports) if getattr(ports, item.name) == port]
    flags = [f"--{name.replace('_', '-')}-port N, DEV_{name.upper()}_PORT=N" for name in names]
    return f" ({' or '.join(flags)} or --free-ports)" if flags else ""


def check_ports(claims: list[tuple[str, int]], ports: Ports, host: str = "127.0.0.1") -> None:
    """Raise, naming the part and the port, when two parts want one port or one is taken."""
    owner: dict[int, str] = {}
    for name, port in claims:
        if port in owner:
            raise ServiceError(
                f"{owner[port]} and {name} both want port {host}:{port}; give one of them "
                f"another port{_how_to_move(ports, port)}"
            )
        owner[port] = name
    for name, port in claims:
        if not port_is_free(host, port):
            raise ServiceError(
                f"{name}: port {host}:{port} is already in use; choose another port"
                f"{_how_to_move(ports, port)}"
            )


def _timed(label: str, action: Callable[[], T], done: Callable[[T], str] | None = None) -> T:
    print(f"  {label} …", end=" ", flush=True)
    started = time.monotonic()
    try:
        result = action()
    except BaseException:
        print("failed", flush=True)
        raise
    elapsed = time.monotonic() - started
    print(f"{done(result) if done else 'ready'} in {elapsed:.1f}s", flush=True)
    return result


def _with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


async def _prepare_database(server_url: str) -> tuple[str, list[str]]:
    """Create the dev database on the embedded server if needed, then apply the migrations."""
    import asyncpg

    from migrations.runner import apply_migrations

    admin = await asyncpg.connect(server_url)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DEV_DATABASE)
        if not exists:
            await admin.execute(f'CREATE DATABASE "{DEV_DATABASE}"')
    finally:
        await admin.close()
    url = _with_database(server_url, DEV_DATABASE)
    return url, await apply_migrations(url, create_portal_tables=True)


def _migrate(url: str) -> list[str]:
    from migrations.runner import apply_migrations

    # A dev database: no portal runs against it to create the portal's `id_mappings` (an
    # existing table is checked, never replaced).
    return asyncio.run(apply_migrations(url, create_portal_tables=True))


def _wipe(dev_dir: Path, keep: Path) -> None:
    for entry in dev_dir.iterdir():
        if entry == keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


@dataclass(frozen=True)
class _Step:
    """One part of the planned stack: what it listens on, how to start it, what it adds to
    stack.json once started."""

    name: str
    ports: tuple[int, ...]
    run: Callable[[], object]
    stack: Stack = field(default_factory=dict)
    # (name, address) printed once the stack is up.
    shown: tuple[str, str] | None = None
    # What a component step will run (None for the servers and one-shot steps).
    component: Component | None = None


def try_it(stack: Stack, dev_dir: Path) -> list[str]:
    """What a newcomer types next, in a second terminal; only what this stack can do."""
    engine = "worker" in stack and "listener" in stack
    if not engine or "salesforce" not in stack:
        return []
    stack_file = dev_dir / "stack.json"
    lines = [
        "",
        "Try it (in a second terminal):",
        f"  .venv/bin/fulfillment demo order --sim esim --stack {stack_file}",
        f"  .venv/bin/fulfillment demo order --no-payment-method --stack {stack_file}",
        f"  set -a; . {dev_dir / 'stack.env'}; set +a",
        "  .venv/bin/fulfillment failed            # parked fulfillments",
        "  .venv/bin/fulfillment retry <OrderId> --reason 'card added'",
    ]
    ui = stack.get("temporal", {}).get("ui_url")
    if ui:
        lines.append(f'  Temporal UI, parked ones: {ui}  (query FulfillmentStatus = "failed")')
    return lines


class Launcher:
    """One run of the dev stack: plan, check the ports, start, watch, stop."""

    def __init__(
        self, args: argparse.Namespace, environ: Mapping[str, str], say: Say = _say
    ) -> None:
        self.args = args
        self.environ = environ
        self.say = say
        self.dev_dir: Path = args.dir.expanduser().resolve()
        self.ports = _ports(args, environ)
        self.supervisor = Supervisor(self.dev_dir / "logs", say=say)
        # What has been started so far: stack.json never names a part that is not up.
        self.stack: Stack = {}
        self.urls: list[tuple[str, str]] = []

    def _server(
        self,
        name: str,
        ports: tuple[int, ...],
        start: Callable[[Path], ChildProcess],
        stack: Stack | None = None,
        shown: str | None = None,
    ) -> _Step:
        unit = ServiceUnit(name, start)
        return _Step(
            name,
            ports,
            partial(_timed, f"starting {name}", partial(self.supervisor.start, unit)),
            stack or {},
            (name, shown) if shown else None,
        )

    def plan(self) -> list[_Step]:
        """Every part of the stack in start order. Starts nothing: planning a component only
        decides its argv, ports and stack.json section (and may create files it will need)."""
        steps = [self._temporal(), *self._postgres(), self._redis(), self._secrets()]
        planned_stack: Stack = {}
        for step in steps:
            merge(planned_stack, step.stack)
        context = DevContext(
            dev_dir=self.dev_dir,
            ports=self.ports,
            stack=planned_stack,
            emulators=not self.args.no_emulators,
            worker=not self.args.no_worker,
            listener=not self.args.no_listener,
            api=not self.args.no_api,
            cdc_transport=self.args.cdc_transport or self.environ.get("CDC_TRANSPORT") or "cometd",
            environ=self.environ,
            say=self.say,
        )
        for factory in COMPONENTS:
            # Each factory sees the stack planned so far (the DevContext holds it by reference).
            planned = factory(context)
            if planned is None:
                continue
            component = planned.component
            merge(planned_stack, planned.stack)
            steps.append(
                _Step(
                    component.name,
                    component.ports,
                    partial(
                        _timed,
                        f"starting {component.name}",
                        partial(self.supervisor.start, component),
                    ),
                    dict(planned.stack),
                    (component.name, shown) if (shown := planned.shown or component.url) else None,
                    component,
                )
            )
        return steps

    def _temporal(self) -> _Step:
        ports, namespace = self.ports, self.environ.get("TEMPORAL_NAMESPACE", "default")
        address = f"127.0.0.1:{ports.temporal}"
        ui_url = f"http://127.0.0.1:{ports.temporal_ui}"
        db_file = self.dev_dir / "temporal.db"
        # Known before the API runs (it starts last): the UI asks the codec only when a page
        # shows payloads, and by then the whole stack is up.
        codec = None if self.args.no_api else api_codec_endpoint(ports)
        shown = f"{address}  (UI {ui_url}" + (f", payloads decoded by {codec})" if codec else ")")
        return self._server(
            "Temporal",
            (ports.temporal, ports.temporal_ui),
            lambda log: (
                start_temporal(
                    port=ports.temporal,
                    ui_port=ports.temporal_ui,
                    db_file=db_file,
                    namespace=namespace,
                    log_file=log,
                    ui_codec_endpoint=codec,
                ).process
            ),
            {
                "temporal": {
                    "address": address,
                    "ui_url": ui_url,
                    "namespace": namespace,
                    "task_queue": self.environ.get("TEMPORAL_TASK_QUEUE", TASK_QUEUE_DEFAULT),
                }
            },
            shown,
        )

    def _postgres(self) -> list[_Step]:
        if external := self.environ.get("DATABASE_URL"):
            migrate = partial(
                _timed,
                "applying migrations (DATABASE_URL)",
                partial(_migrate, external),
                lambda done: f"{len(done)} applied",
            )
            return [
                _Step(
                    "Postgres",
                    (),
                    migrate,
                    {"database_url": external},
                    ("Postgres", redact_url(external)),
                )
            ]
        port, data_dir, durable = (
            self.ports.postgres,
            self.dev_dir / "postgres",
            not self.args.no_fsync,
        )
        server_url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        database_url = _with_database(server_url, DEV_DATABASE)
        prepare = partial(
            _timed,
            "applying migrations",
            lambda: asyncio.run(_prepare_database(server_url)),
            lambda result: f"{len(result[1])} applied",
        )
        return [
            self._server(
                "Postgres",
                (port,),
                lambda log: (
                    start_postgres(data_dir, port=port, log_file=log, durable=durable).process
                ),
            ),
            _Step(
                "migrations",
                (),
                prepare,
                {"database_url": database_url},
                ("Postgres", database_url),
            ),
        ]

    def _redis(self) -> _Step:
        if external := self.environ.get("REDIS_URL"):
            return _Step(
                "Redis", (), lambda: None, {"redis_url": external}, ("Redis", redact_url(external))
            )
        port, data_dir = self.ports.redis, self.dev_dir / "redis"
        url = f"redis://127.0.0.1:{port}/0"
        return self._server(
            "Redis",
            (port,),
            lambda log: start_redis(port=port, data_dir=data_dir, log_file=log).process,
            {"redis_url": url},
            url,
        )

    def _secrets(self) -> _Step:
        secrets = dev_secrets(self.dev_dir)
        section = {
            # One key for every engine child (and for a shell sourcing stack.env), kept across
            # restarts: the histories in .dev/temporal.db were written with it.
            "temporal": {"payload_keys": secrets["temporal_payload_keys"]},
            "api": {
                "service_token": secrets["api_service_token"],
                "ops_token": secrets["api_ops_token"],
            },
            "whmcs": {"webhook_secret": secrets["whmcs_webhook_secret"]},
        }
        return _Step("secrets", (), lambda: None, section)

    def start(self) -> None:
        steps = self.plan()
        check_ports([(step.name, port) for step in steps for port in step.ports], self.ports)
        for step in steps:
            step.run()
            merge(self.stack, step.stack)
            if step.shown:
                self.urls.append(step.shown)
            # Written after each part, so a later one's failure still leaves a usable file.
            write_stack(self.dev_dir, self.stack)
        path = write_stack(self.dev_dir, self.stack)
        self.say(f"\nThe stack is up. Everything is described in {path}:")
        width = max(len(name) for name, _ in self.urls)
        for name, url in self.urls:
            self.say(f"  {name.ljust(width)}  {url}")
        self.say(f"Logs: {self.dev_dir / 'logs'}/<name>.log — Ctrl-C stops everything.")
        for line in try_it(self.stack, self.dev_dir):
            self.say(line)

    def watch(self) -> None:
        while True:
            self.supervisor.check()
            due = self.supervisor.next_due()
            time.sleep(0.5 if due is None else min(0.5, max(due, 0.05)))

    def stop(self) -> None:
        self.supervisor.stop_all()
        for child in live_children():
            child.stop()


def main(argv: list[str]) -> int:
    """Run `fulfillment dev` with the arguments after `dev`; return the exit code."""
    args = _parser().parse_args(argv)
    launcher = Launcher(args, os.environ)
    dev = launcher.dev_dir
    lock = LauncherLock(dev)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        print(f"fulfillment dev: {exc}", file=sys.stderr)
        return 1
    pids_file = dev / "pids.json"

    def raise_stop(signum: int, _frame: FrameType | None) -> None:
        raise _Stop(signum)

    previous: dict[int, Any] = {
        sig: signal.signal(sig, raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    unwatch = watch_children(lambda: record_children(pids_file, live_children()))
    code = 0
    try:
        stop_leftovers(pids_file, _say)
        if args.fresh:
            _say(f"fulfillment dev: --fresh: wiping {dev}")
            _wipe(dev, keep=lock.path)
        _say(f"fulfillment dev: state in {dev}")
        launcher.start()
        launcher.watch()
    except _Stop as stop:
        _say(f"\n{signal.Signals(stop.signum).name}: stopping the stack …")
    except (ServiceError, OSError) as exc:
        print(f"fulfillment dev: {exc}", file=sys.stderr)
        code = 1
    except Exception as exc:
        # Migrations and the like raise their own types; one clear line, then a clean stop.
        print(f"fulfillment dev: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    finally:
        # A second Ctrl-C must not cut the shutdown short and leave children behind.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        try:
            launcher.stop()
        finally:
            unwatch()
            pids_file.unlink(missing_ok=True)
            lock.release()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    _say("fulfillment dev: stopped")
    return code
