"""What `fulfillment dev` runs and keeps running: `Component`s, readiness checks, the `Supervisor`.

A `Component` is a declarative child process (argv, env, readiness check, restartable or not); a
`ServiceUnit` wraps a server helper of `devstack.services` so the infrastructure is supervised the
same way. The `Supervisor` starts units in order, notices a child that died, says why (exit code,
last log lines) and restarts it after an exponentially growing delay, and stops everything in
reverse order.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from devstack.process import ChildProcess, ServiceError, log_tail, port_accepts

Check = Callable[[], bool]
Say = Callable[[str], None]


def tcp_check(port: int, host: str = "127.0.0.1") -> Check:
    """Ready when host:port accepts a TCP connection."""
    return lambda: port_accepts(host, port)


def http_check(url: str, *, ca_file: Path | None = None, status: int | None = None) -> Check:
    """Ready when `url` answers with `status` (None: any status below 500); HTTPS is verified
    against `ca_file` (read at each check: a server may create its CA when it starts)."""

    def check() -> bool:
        try:
            verify = ssl.create_default_context(cafile=ca_file) if ca_file else True
            with httpx.Client(trust_env=False, timeout=2.0, verify=verify) as http:
                answered = http.get(url).status_code
        except (httpx.HTTPError, OSError):
            return False
        return answered < 500 if status is None else answered == status

    return check


class Unit(Protocol):
    """Anything the supervisor can (re)start: it launches a child and returns once it is ready."""

    @property
    def name(self) -> str: ...

    @property
    def restartable(self) -> bool: ...

    def launch(self, log_dir: Path) -> ChildProcess: ...


@dataclass(frozen=True)
class Component:
    """A child process of the stack, described rather than coded.

    `env` is laid over the launcher's own environment, a None value taking that variable out;
    `cwd` is where it runs (None: the launcher's directory); `ports` are the TCP ports it listens
    on (checked free before the stack starts, and ready only once the child itself holds them);
    `ready` is polled after the start (None: the child counts as ready once started and
    listening); `url` is what the launcher prints for it.
    """

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str | None] = field(default_factory=dict)
    cwd: Path | None = None
    ports: tuple[int, ...] = ()
    ready: Check | None = None
    restartable: bool = True
    ready_timeout: float = 60.0
    stop_grace: float = 10.0
    url: str | None = None

    def launch(self, log_dir: Path) -> ChildProcess:
        process = ChildProcess(
            self.name,
            self.argv,
            log_file=log_dir / f"{self.name}.log",
            env=_environment(os.environ, self.env),
            cwd=self.cwd,
            stop_grace=self.stop_grace,
        )
        check = self.ready or (lambda: True)
        # Ownership first: a stale server from an earlier run on the same port answers `ready`
        # just as well, while our child is still failing to bind.
        process.wait_ready(
            lambda: all(process.listens_on(port) for port in self.ports) and check(),
            timeout=self.ready_timeout,
            what=self.url or "started",
        )
        return process


def _environment(inherited: Mapping[str, str], changes: Mapping[str, str | None]) -> dict[str, str]:
    env = dict(inherited)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@dataclass(frozen=True)
class ServiceUnit:
    """A server started by a helper of `devstack.services` (which owns its readiness)."""

    name: str
    start: Callable[[Path], ChildProcess]
    restartable: bool = True

    def launch(self, log_dir: Path) -> ChildProcess:
        return self.start(log_dir / f"{self.name.lower()}.log")


@dataclass(frozen=True)
class Backoff:
    """Delay before the n-th consecutive restart: initial * factor**(n-1), capped at maximum.

    A child that stayed up for `reset_after` seconds starts again from `initial`.
    """

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    reset_after: float = 60.0

    def delay(self, failures: int) -> float:
        return min(self.maximum, self.initial * self.factor ** max(0, failures - 1))


@dataclass
class _Slot:
    unit: Unit
    process: ChildProcess | None
    started: float
    failures: int = 0
    restart_at: float | None = None
    restarts: int = 0


class Supervisor:
    """Starts units in order, restarts the ones that die (with backoff), stops them all."""

    def __init__(
        self,
        log_dir: Path,
        *,
        say: Say = print,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log_dir = log_dir
        self.say = say
        self.backoff = backoff or Backoff()
        self.clock = clock
        self._slots: dict[str, _Slot] = {}

    def start(self, unit: Unit) -> ChildProcess:
        """Launch a unit for the first time; a failure here is raised, not retried."""
        if unit.name in self._slots:
            raise ValueError(f"a unit named {unit.name!r} is already supervised")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        process = unit.launch(self.log_dir)
        self._slots[unit.name] = _Slot(unit, process, self.clock())
        return process

    def process(self, name: str) -> ChildProcess | None:
        """The running child of a unit (None while it waits for a restart or stays down)."""
        slot = self._slots.get(name)
        return slot.process if slot else None

    def restarts(self, name: str) -> int:
        return self._slots[name].restarts

    def check(self) -> None:
        """One supervision pass: report children that died, restart those whose delay is over."""
        now = self.clock()
        for slot in self._slots.values():
            if slot.process is not None and slot.process.exit_code() is not None:
                self._died(slot, now)
            if slot.restart_at is not None and now >= slot.restart_at:
                self._restart(slot)

    def next_due(self) -> float | None:
        """Seconds until the next restart is due (None: nothing is waiting)."""
        due = [s.restart_at for s in self._slots.values() if s.restart_at is not None]
        return max(0.0, min(due) - self.clock()) if due else None

    def stop_all(self) -> None:
        """Stop every child, the last started first (the API before the database it uses)."""
        for slot in reversed(list(self._slots.values())):
            if slot.process is not None:
                slot.process.stop()
                slot.process = None
            slot.restart_at = None

    def _died(self, slot: _Slot, now: float) -> None:
        process = slot.process
        assert process is not None
        code = process.exit_code()
        tail = log_tail(process.log_file, lines=8)
        process.stop()
        slot.process = None
        if now - slot.started >= self.backoff.reset_after:
            slot.failures = 0
        slot.failures += 1
        why = f"{slot.unit.name} exited with {_describe_exit(code)}"
        last = ("; last log lines:\n" + _indent(tail)) if tail else f" (log {process.log_file})"
        if not slot.unit.restartable:
            self.say(f"{why}; it is not restarted{last}")
            return
        delay = self.backoff.delay(slot.failures)
        slot.restart_at = now + delay
        self.say(f"{why}; restarting in {delay:.1f}s{last}")

    def _restart(self, slot: _Slot) -> None:
        slot.restart_at = None
        try:
            slot.process = slot.unit.launch(self.log_dir)
        except ServiceError as exc:
            slot.failures += 1
            delay = self.backoff.delay(slot.failures)
            slot.restart_at = self.clock() + delay
            self.say(f"{slot.unit.name} did not come back: {exc}\nnext attempt in {delay:.1f}s")
            return
        slot.started = self.clock()
        slot.restarts += 1
        self.say(f"{slot.unit.name} restarted (pid {slot.process.pid})")


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {-code}"
    return f"exit code {code}"


def _indent(text: str) -> str:
    return "\n".join(f"  | {line}" for line in text.splitlines())
