"""After a launcher died without stopping its children, the next one stops them — and only them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from devstack.leftovers import record_children, stop_leftovers
from devstack.process import (
    ChildProcess,
    group_alive,
    process_executable,
    process_start_time,
)

SLEEPER = (sys.executable, "-c", "import time; time.sleep(60)")


def test_children_recorded_by_a_dead_launcher_are_stopped(tmp_path: Path) -> None:
    # Children the kernel did not stop for us: e.g. a launcher killed between two starts, or a
    # child that ignores its parent-death signal.
    record = tmp_path / "pids.json"
    child = ChildProcess("Postgres", SLEEPER, log_file=tmp_path / "postgres.log")
    try:
        record_children(record, [child])
        said: list[str] = []
        assert stop_leftovers(record, said.append) == ["Postgres"]
        assert said == [f"stopping Postgres (pid {child.pid}) left running by a previous launcher"]
        assert not group_alive(child.pid)
        assert not record.exists()
    finally:
        child.stop()


def test_a_recorded_pid_now_used_by_another_process_is_not_touched(tmp_path: Path) -> None:
    record = tmp_path / "pids.json"
    stranger = subprocess.Popen(SLEEPER, start_new_session=True)
    try:
        started_at = process_start_time(stranger.pid)
        assert started_at is not None
        # The dead launcher's child had this pid, but the kernel has since given it to a process
        # that started at another time (same executable, as a restarted python would be).
        entry = {
            "name": "Redis",
            "pid": stranger.pid,
            "started_at": started_at - 1,
            "executable": process_executable(stranger.pid),
            "stop_signal": int(signal.SIGTERM),
        }
        record.write_text(json.dumps({"launcher_pid": 1, "children": [entry]}))
        assert stop_leftovers(record, lambda _line: None) == []
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
