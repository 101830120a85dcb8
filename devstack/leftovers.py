"""Recovery after a crashed `fulfillment dev`: the launcher lock and the record of its children.

While a launcher runs it holds an flock on `.dev/launcher.lock` (the kernel drops it when the
launcher dies, however it dies) and keeps `.dev/pids.json` listing each live child with its kernel
start time. The next launcher stops the children of a dead one that are still running; a pid is
signalled only when its kernel start time and executable still match the record, so a pid reused by
an unrelated process is never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from devstack.process import ChildProcess, process_executable, process_start_time, stop_group


class AlreadyRunning(RuntimeError):
    """Another launcher holds the lock of this state directory."""


class LauncherLock:
    """An exclusive, crash-proof lock on a state directory (an flock, released by the kernel)."""

    def __init__(self, dev_dir: Path) -> None:
        self.path = dev_dir / "launcher.lock"
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise AlreadyRunning(
                f"another `fulfillment dev` (pid {holder}) is running on {self.path.parent}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def record_children(path: Path, children: Iterable[ChildProcess]) -> None:
    """Write the pid record of the live children (atomically: a crash leaves the old or new one)."""
    entries = [
        {
            "name": child.name,
            "pid": child.pid,
            "started_at": child.started_at,
            "executable": child.executable,
            "stop_signal": int(child.stop_signal),
        }
        for child in children
    ]
    record = {"launcher_pid": os.getpid(), "children": entries}
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def _still_ours(entry: dict[str, Any]) -> bool:
    pid = int(entry["pid"])
    return (
        entry.get("started_at") is not None
        and process_start_time(pid) == entry["started_at"]
        and process_executable(pid) == entry.get("executable")
    )


def stop_leftovers(path: Path, say: Callable[[str], None]) -> list[str]:
    """Stop the children a dead launcher left running; return their names. Removes the record."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except json.JSONDecodeError:
        path.unlink()
        return []
    stopped: list[str] = []
    for entry in record.get("children", []):
        if not _still_ours(entry):
            continue
        say(f"stopping {entry['name']} (pid {entry['pid']}) left running by a previous launcher")
        stop_group(
            int(entry["pid"]),
            stop_signal=signal.Signals(entry.get("stop_signal", signal.SIGTERM)),
            grace=15.0,
        )
        stopped.append(str(entry["name"]))
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return stopped
