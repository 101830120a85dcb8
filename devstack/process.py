"""Child processes in their own process group: start, wait until ready, stop the whole group.

Every server the dev stack and the test fixtures start goes through `ChildProcess`, so there is one
place that knows how to stop a process tree without leaving orphans (graceful signal to the group,
then SIGKILL after a grace period; the kernel's parent-death signal when the starter itself dies,
even by SIGKILL), how to tell that a listening port belongs to the child and not to a stranger
left over from an earlier run, and how to explain a child that never became ready. Processes and
sockets are inspected through psutil, so it runs on Linux and macOS; the parent-death signal is
Linux's alone (elsewhere the servers of a killed launcher outlive it, until the next launcher
stops them: devstack/leftovers.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import psutil


class ServiceError(RuntimeError):
    """A child process could not be started or did not become ready."""


_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PICK = 10_000
# The defaults where the range cannot be read: Linux's, and elsewhere IANA's dynamic ports (macOS's
# net.inet.ip.portrange.first/last).
_LINUX_DEFAULT_RANGE = (32768, 60999)
_IANA_DYNAMIC_RANGE = (49152, 65535)


def _ephemeral_range() -> tuple[int, int]:
    if not sys.platform.startswith("linux"):
        return _IANA_DYNAMIC_RANGE
    try:
        low, high = (int(part) for part in _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        return _LINUX_DEFAULT_RANGE
    return low, high


def _candidate_ports() -> range:
    """Ports to hand out: below the kernel's ephemeral range when there is room for them.

    The kernel takes the local port of every outgoing connection (a database client, the
    Temporal server's own connections) from the ephemeral range, so a port picked from that
    range can be taken by an unrelated connection between the pick and the child's bind (seen
    in CI: an emulator failing with "address already in use"). Ports below it are only ever taken
    by an explicit bind.
    """
    low, high = _ephemeral_range()
    if low - _LOWEST_PICK >= 1000:
        return range(_LOWEST_PICK, low)
    return range(high + 1, 65536) if 65535 - high >= 1000 else range(1024, 65536)


def free_port(host: str = "127.0.0.1", *, avoid: Collection[int] = ()) -> int:
    """A TCP port that was free a moment ago, outside the ephemeral range, never handed out
    before by this process, not in `avoid`.

    Ports handed out are remembered for the life of the process instead of being held open,
    because a held socket would itself make the port look taken to the child meant to bind it.
    """
    candidates = _candidate_ports()
    with _handed_out_lock:
        for _ in range(1000):
            port = random.choice(candidates)  # noqa: S311 - spreads picks, guards nothing
            if port in _handed_out or port in avoid or not _bindable(host, port):
                continue
            _handed_out.add(port)
            return port
    raise ServiceError(f"no free TCP port on {host} after 1000 tries")


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_is_free(host: str, port: int) -> bool:
    """True when host:port can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def log_tail(log_file: Path, lines: int = 20) -> str:
    """The last lines of a log file (empty when it does not exist yet)."""
    try:
        with log_file.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 16_384))
            text = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _alive(pid: int) -> psutil.Process | None:
    """The process `pid` while it lives; None when it is gone or a zombie."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return process


def process_cmdline(pid: int) -> list[str] | None:
    """The argv of a live process, or None when it is gone (or a zombie)."""
    process = _alive(pid)
    if process is None:
        return None
    try:
        argv = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return argv or None


def process_executable(pid: int) -> str | None:
    """The resolved path of a live process's executable (unlike argv[0], a child cannot change
    it: redis-server and postgres rewrite their command lines)."""
    process = _alive(pid)
    if process is None:
        return None
    try:
        return process.exe() or None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def process_start_time(pid: int) -> float | None:
    """When a process started (seconds since the epoch, as the kernel has it); tells a reused pid
    apart. The same process gives the same value to every caller."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def process_cwd(pid: int) -> Path | None:
    """The working directory of a live process, or None when it is gone or not ours to read."""
    process = _alive(pid)
    if process is None:
        return None
    try:
        return Path(process.cwd())
    except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
        return None


def signal_group(pgid: int, sig: int) -> bool:
    """Send a signal to a process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_members(pgid: int) -> list[int]:
    """The pids of the live members of a process group (zombies excepted)."""
    members: list[int] = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) != pgid:
                continue
        except OSError:  # gone since the listing (or not ours to ask)
            continue
        if _alive(pid) is not None:
            members.append(pid)
    return members


def group_alive(pgid: int) -> bool:
    """True while any member of the process group exists (zombies excepted)."""
    return bool(group_members(pgid))


def _listens_on(pid: int, port: int) -> bool:
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return any(
        connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
        for connection in connections
    )


def group_listens_on(pgid: int, port: int) -> bool:
    """True when a member of the process group holds a socket listening on `port`.

    Answers "is the server on this port the one we started?" without its cooperation: a stale
    server from an earlier run answers its health check just as well, but the listening socket
    (any address, IPv4 or IPv6, among psutil's connections of the members) is held by another
    process.
    """
    return any(_listens_on(pid, port) for pid in group_members(pgid))


def stop_group(
    pgid: int,
    *,
    stop_signal: int = signal.SIGTERM,
    grace: float = 10.0,
    reap: Callable[[], object] | None = None,
) -> None:
    """Stop a whole process group: `stop_signal`, then SIGKILL once `grace` seconds have passed.

    `reap` is called while waiting so that a direct child does not linger as a zombie (which would
    keep its group "alive" for `os.killpg`).
    """
    if not signal_group(pgid, stop_signal):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not group_alive(pgid):
            return
        time.sleep(0.05)


_live: dict[int, ChildProcess] = {}
_watchers: list[Callable[[], None]] = []
_SHUTDOWN_SIGNALS = {signal.SIGINT, signal.SIGTERM}


_PR_SET_PDEATHSIG = 1
try:
    _prctl: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: children outlive a killed starter
    _prctl = None


def _child_setup(death_signal: int | None, parent: int) -> Callable[[], None]:
    """What the child runs between fork and exec."""

    def setup() -> None:
        # The mask held over the fork would be inherited and make the child deaf to
        # SIGTERM/SIGINT.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SHUTDOWN_SIGNALS)
        if death_signal is None or _prctl is None:
            return
        # The kernel sends `death_signal` when the starter dies, however it dies (kill -9
        # included), so no server outlives a crashed launcher or test run. Set after the switch
        # to another user (subprocess runs preexec_fn after setuid; a later credential change
        # would clear it) and survives exec of a binary that is not set-uid.
        _prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        if os.getppid() != parent:
            # The starter died between fork and prctl: the signal will never come.
            os._exit(1)

    return setup


def live_children() -> list[ChildProcess]:
    """Every child started in this process and not yet stopped, oldest first."""
    return list(_live.values())


def watch_children(callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` whenever a child starts or stops (the launcher records pids with it);
    returns the function that removes the watch."""
    _watchers.append(callback)
    return lambda: _watchers.remove(callback)


def _children_changed() -> None:
    for callback in list(_watchers):
        callback()


class ChildProcess:
    """A started child, leader of its own process group, with its output in a log file.

    Every instance is listed by `live_children()` from the moment it exists until `stop()`, so
    whoever is interrupted half-way through starting a server can still stop what was started.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_file: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
        stop_grace: float = 10.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_file = log_file
        self.stop_signal = stop_signal
        self.stop_grace = stop_grace
        # Linux ties the parent-death signal to the thread that forked, not to the process: a
        # child started from a short-lived thread would be killed when that thread ends. Such
        # children go without it (the launcher and the fixtures start from the main thread).
        on_main_thread = threading.current_thread() is threading.main_thread()
        death_signal = stop_signal if on_main_thread else None
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = log_file.open("ab")
        # Ctrl-C or SIGTERM between the fork and the registration below would leave a child no one
        # knows about; held back here, the signal is delivered once the child is listed.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SHUTDOWN_SIGNALS)
        try:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                user=user,
                # A session of its own: the terminal's Ctrl-C does not reach it directly (the
                # launcher decides the order of shutdown) and the group can be killed as one.
                start_new_session=True,
                preexec_fn=_child_setup(death_signal, os.getpid()),
            )
        except OSError as exc:
            self._log.close()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SHUTDOWN_SIGNALS)
            raise ServiceError(f"{name}: cannot run {self.argv[0]}: {exc}") from exc
        self.started_at = process_start_time(self.popen.pid)
        self.executable = process_executable(self.popen.pid)
        _live[self.popen.pid] = self
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SHUTDOWN_SIGNALS)
        _children_changed()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exit_code(self) -> int | None:
        """The exit status once the child has exited (negative: killed by that signal)."""
        return self.popen.poll()

    def running(self) -> bool:
        return self.popen.poll() is None

    def listens_on(self, port: int) -> bool:
        """True when this child (or a process of its group) holds the listening socket."""
        return group_listens_on(self.pid, port)

    def failure(self, reason: str) -> ServiceError:
        """An error naming the child, why it failed, its exit status and the tail of its log."""
        code = self.popen.poll()
        status = "still running" if code is None else f"exit code {code}"
        tail = log_tail(self.log_file)
        return ServiceError(
            f"{self.name} {reason} ({status}); log {self.log_file}:\n{tail}"
            if tail
            else f"{self.name} {reason} ({status}); log {self.log_file} is empty"
        )

    def wait_ready(self, check: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Poll `check` until it holds; raise with the log tail if the child exits or times out."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        try:
            while True:
                if self.popen.poll() is not None:
                    raise self.failure(f"exited before it was ready ({what})")
                if check():
                    return
                if time.monotonic() >= deadline:
                    raise self.failure(f"was not ready after {timeout:.0f}s ({what})")
                time.sleep(delay)
                delay = min(delay * 1.5, 0.25)
        except BaseException:
            # Not ready, or interrupted while waiting: nobody will get a handle to stop it later.
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the child's whole group gracefully, SIGKILL it after the grace period; wait."""
        stop_group(
            self.pid, stop_signal=self.stop_signal, grace=self.stop_grace, reap=self.popen.poll
        )
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        self._log.close()
        if _live.pop(self.popen.pid, None) is not None:
            _children_changed()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
