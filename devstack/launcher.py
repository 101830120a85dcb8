"""`fulfillment dev`: the whole stack on one machine, supervised, described in `.dev/stack.json`.

    fulfillment dev [--fresh] [--dir .dev] [--no-emulators] [--free-ports] [--<name>-port N]

Order: Temporal, Postgres (unless DATABASE_URL), Redis (unless REDIS_URL), migrations, then the
components of `devstack.components.COMPONENTS` (emulators now; worker, listener and API as they
are added there). Every child runs in its own process group with its output in
`.dev/logs/<name>.log`; Ctrl-C or SIGTERM stops them all, the last started first. A launcher that
was killed leaves `.dev/pids.json` behind, and the next one stops what it left running.
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
from dataclasses import fields, replace
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from devstack.components import COMPONENTS, DevContext, Ports
from devstack.leftovers import AlreadyRunning, LauncherLock, record_children, stop_leftovers
from devstack.process import ChildProcess, ServiceError, free_port, live_children, watch_children
from devstack.services import start_postgres, start_redis, start_temporal
from devstack.stack_file import Stack, dev_secrets, merge, write_stack
from devstack.supervisor import ServiceUnit, Supervisor

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
        "--free-ports", action="store_true", help="pick free ports for everything not set"
    )
    for item in fields(Ports):
        flag = item.name.replace("_", "-")
        parser.add_argument(f"--{flag}-port", dest=f"port_{item.name}", type=int, metavar="N")
    return parser


def _ports(args: argparse.Namespace, environ: Mapping[str, str]) -> Ports:
    """Flags win over DEV_<NAME>_PORT, which wins over the defaults; 0 becomes a free port."""
    chosen: dict[str, int] = {}
    for item in fields(Ports):
        value: int | None = getattr(args, f"port_{item.name}")
        if value is None and (raw := environ.get(f"DEV_{item.name.upper()}_PORT")):
            value = int(raw)
        if value is None and args.free_ports:
            value = 0
        if value is not None:
            chosen[item.name] = value or free_port()
    return replace(Ports(), **chosen)


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
    return url, await apply_migrations(url)


def _migrate(url: str) -> list[str]:
    from migrations.runner import apply_migrations

    return asyncio.run(apply_migrations(url))


def _wipe(dev_dir: Path, keep: Path) -> None:
    for entry in dev_dir.iterdir():
        if entry == keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


class Launcher:
    """One run of the dev stack: start, watch, stop."""

    def __init__(self, args: argparse.Namespace, environ: Mapping[str, str]) -> None:
        self.args = args
        self.environ = environ
        self.dev_dir: Path = args.dir.expanduser().resolve()
        self.ports = _ports(args, environ)
        self.supervisor = Supervisor(self.dev_dir / "logs", say=_say)
        self.stack: Stack = {}
        self.urls: list[tuple[str, str]] = []

    def _service(self, name: str, start: Callable[[Path], ChildProcess]) -> None:
        _timed(f"starting {name}", lambda: self.supervisor.start(ServiceUnit(name, start)))

    def start(self) -> None:
        dev = self.dev_dir
        ports = self.ports
        namespace = self.environ.get("TEMPORAL_NAMESPACE", "default")
        self._service(
            "Temporal",
            lambda log: (
                start_temporal(
                    port=ports.temporal,
                    ui_port=ports.temporal_ui,
                    db_file=dev / "temporal.db",
                    namespace=namespace,
                    log_file=log,
                ).process
            ),
        )
        temporal_address = f"127.0.0.1:{ports.temporal}"
        ui_url = f"http://127.0.0.1:{ports.temporal_ui}"
        self.stack["temporal"] = {
            "address": temporal_address,
            "ui_url": ui_url,
            "namespace": namespace,
            "task_queue": self.environ.get("TEMPORAL_TASK_QUEUE", TASK_QUEUE_DEFAULT),
        }
        self.urls.append(("Temporal", f"{temporal_address}  (UI {ui_url})"))

        if external_database := self.environ.get("DATABASE_URL"):
            database_url = external_database
            _timed(
                "applying migrations (DATABASE_URL)",
                lambda: _migrate(external_database),
                lambda done: f"{len(done)} applied",
            )
        else:
            self._service(
                "Postgres",
                lambda log: (
                    start_postgres(dev / "postgres", port=ports.postgres, log_file=log).process
                ),
            )
            server_url = f"postgresql://postgres@127.0.0.1:{ports.postgres}/postgres"
            database_url, _ = _timed(
                "applying migrations",
                lambda: asyncio.run(_prepare_database(server_url)),
                lambda result: f"{len(result[1])} applied",
            )
        self.stack["database_url"] = database_url
        self.urls.append(("Postgres", database_url))

        if not (redis_url := self.environ.get("REDIS_URL")):
            self._service(
                "Redis",
                lambda log: (
                    start_redis(port=ports.redis, data_dir=dev / "redis", log_file=log).process
                ),
            )
            redis_url = f"redis://127.0.0.1:{ports.redis}/0"
        self.stack["redis_url"] = redis_url
        self.urls.append(("Redis", redis_url))

        secrets = dev_secrets(dev)
        merge(
            self.stack,
            {
                "api": {
                    "service_token": secrets["api_service_token"],
                    "ops_token": secrets["api_ops_token"],
                },
                "whmcs": {"webhook_secret": secrets["whmcs_webhook_secret"]},
            },
        )
        self._start_components()
        path = write_stack(dev, self.stack)
        _say(f"\nThe stack is up. Everything is described in {path}:")
        width = max(len(name) for name, _ in self.urls)
        for name, url in self.urls:
            _say(f"  {name.ljust(width)}  {url}")
        _say(f"Logs: {dev / 'logs'}/<name>.log — Ctrl-C stops everything.")

    def _start_components(self) -> None:
        for factory in COMPONENTS:
            context = DevContext(
                dev_dir=self.dev_dir,
                ports=self.ports,
                stack=self.stack,
                emulators=not self.args.no_emulators,
            )
            planned = factory(context)
            if planned is None:
                continue
            component = planned.component
            _timed(f"starting {component.name}", partial(self.supervisor.start, component))
            merge(self.stack, planned.stack)
            if component.url:
                self.urls.append((component.name, component.url))
            # Written after each component, so a later one's failure still leaves a usable file.
            write_stack(self.dev_dir, self.stack)

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
