"""Child processes: ports handed out once, a listener told apart from a stranger, no orphans."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devstack import process
from devstack.process import (
    ChildProcess,
    free_port,
    group_alive,
    group_members,
    process_cmdline,
    process_cwd,
    process_executable,
    process_start_time,
)

LINUX = sys.platform.startswith("linux")


def gone(pid: int) -> bool:
    return process_cmdline(pid) is None and not group_alive(pid)


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def stranger() -> Iterator[int]:
    """A port on which some other process (here: the test itself) listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def listener(port: int) -> tuple[str, ...]:
    code = textwrap.dedent(
        f"""
        import socket, time
        sock = socket.socket()
        sock.bind(("127.0.0.1", {port}))
        sock.listen()
        print("listening", flush=True)
        time.sleep(60)
        """
    )
    return (sys.executable, "-c", code)


def test_free_port_never_hands_out_the_same_port_twice() -> None:
    # A second component given the same port would find it taken by the first.
    ports = [free_port() for _ in range(1000)]
    assert len(set(ports)) == len(ports)


@pytest.mark.skipif(not LINUX, reason="Linux publishes its ephemeral range in /proc")
def test_free_port_stays_out_of_the_range_outgoing_connections_take_their_ports_from() -> None:
    # An outgoing connection's local port comes from the ephemeral range; one taken there between
    # the pick and the child's bind made an emulator fail with "address already in use" in CI.
    low, high = (
        int(part) for part in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    )
    assert all(not low <= port <= high for port in (free_port() for _ in range(200)))


def test_without_proc_ports_are_picked_below_the_iana_dynamic_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # macOS takes outgoing connections' ports from 49152-65535 (net.inet.ip.portrange).
    monkeypatch.setattr(sys, "platform", "darwin")
    candidates = process._candidate_ports()
    assert candidates.start >= 1024 and candidates.stop == 49152


def test_free_port_avoids_the_ports_chosen_by_hand() -> None:
    chosen = {free_port() for _ in range(50)}
    assert not chosen & {free_port(avoid=chosen) for _ in range(200)}


def test_listens_on_tells_our_child_from_a_stranger_on_another_port(
    tmp_path: Path, stranger: int
) -> None:
    port = free_port()
    log = tmp_path / "listener.log"
    with ChildProcess("listener", listener(port), log_file=log) as child:
        child.wait_ready(lambda: "listening" in log.read_text(), timeout=10, what="listening")
        assert child.listens_on(port)
        assert not child.listens_on(stranger), "a port another process holds is not ours"
        assert not child.listens_on(free_port()), "nobody listens there"


def test_listens_on_sees_an_ipv6_listener(tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    port = free_port()
    code = listener(port)[2].replace("socket.socket()", "socket.socket(socket.AF_INET6)")
    code = code.replace('"127.0.0.1"', '"::1"')
    log = tmp_path / "listener6.log"
    with ChildProcess("listener6", (sys.executable, "-c", code), log_file=log) as child:
        try:
            child.wait_ready(lambda: "listening" in log.read_text(), timeout=10, what="listening")
        except Exception:
            pytest.skip("cannot bind ::1 here")
        assert child.listens_on(port)


def test_what_is_known_of_a_child_and_of_a_process_that_is_gone(tmp_path: Path) -> None:
    # What the launcher's pid record (executable, start time) and the stale-postmaster check
    # (cwd) rely on.
    argv = (sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)")
    log = tmp_path / "sleeper.log"
    with ChildProcess("sleeper", argv, log_file=log, cwd=tmp_path) as child:
        child.wait_ready(lambda: "up" in log.read_text(), timeout=10, what="up")
        assert process_cmdline(child.pid) == list(argv)
        assert process_cwd(child.pid) == tmp_path.resolve()
        executable = process_executable(child.pid)
        assert executable is not None and Path(executable) == Path(sys.executable).resolve()
        started = process_start_time(child.pid)
        assert started is not None and started == process_start_time(child.pid)
        assert started == child.started_at
        assert group_members(child.pid) == [child.pid]
        pid = child.pid
    assert process_cmdline(pid) is None
    assert process_cwd(pid) is None
    assert process_executable(pid) is None
    assert group_members(pid) == []


def test_listens_on_sees_a_socket_held_by_a_grandchild(tmp_path: Path) -> None:
    # Servers that fork (postgres, a supervisor of workers) hold the socket lower in the group.
    port = free_port()
    log = tmp_path / "parent.log"
    code = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {listener(port)[2]!r}])\n"
        "time.sleep(60)\n"
    )
    with ChildProcess("parent", (sys.executable, "-c", code), log_file=log) as child:
        child.wait_ready(lambda: "listening" in log.read_text(), timeout=10, what="listening")
        assert child.listens_on(port)


LAUNCHER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from devstack.process import ChildProcess

    log = Path(sys.argv[1])
    graceful = ChildProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"],
                            log_file=log)
    print(graceful.pid, flush=True)
    time.sleep(120)
    """
)


def test_a_child_dies_with_its_launcher_even_after_sigkill(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[3]
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(tmp_path / "child.log")],
        cwd=repo,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert launcher.stdout is not None
    child = int(launcher.stdout.readline())
    try:
        assert not gone(child)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(timeout=10)
        assert wait_until(lambda: gone(child), timeout=5), "the child outlived its launcher"
    finally:
        if not gone(child):
            os.killpg(child, signal.SIGKILL)
