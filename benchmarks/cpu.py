"""Where a benchmark's CPU goes: seconds of CPU per process, read from /proc between two moments.

On a 2-core machine a throughput figure is set by whichever processes share the cores, so a
ratio alone does not say what to make cheaper. Each process is named (worker, Temporal server,
Postgres, ...) and counted with its live descendants (Postgres's backends, each in a session of
its own) and its reaped children, so one figure covers a server that forks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ")".
    return stat[stat.rindex(")") + 2 :].split()


def _own_seconds(pid: int, *, with_children: bool) -> float:
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # utime, stime, cutime, cstime are fields 14-17 of stat(5); `fields` starts at field 3.
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            parents[int(entry.name)] = int(fields[1])
    return parents


def _descendants(pid: int, parents: dict[int, int]) -> list[int]:
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, of in parents.items() if of == parent]
        found += children
        frontier += children
    return found


def cpu_seconds(pid: int, parents: dict[int, int] | None = None) -> float:
    """CPU seconds of `pid` and its reaped children; given the process table's `parents`
    (`_parents()`), of its live descendants too."""
    total = _own_seconds(pid, with_children=True)
    if parents is not None:
        total += sum(
            _own_seconds(child, with_children=False) for child in _descendants(pid, parents)
        )
    return total


def find_process(*needles: str) -> int | None:
    """The first process whose command line holds every needle (a server started by a library)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if all(needle in cmdline for needle in needles):
            return int(entry.name)
    return None


class CpuMeter:
    """CPU seconds per named process between `mark()` and `since()`. The benchmark's own process
    is counted alone: the Temporal server the SDK starts is its child, and has a name of its own."""

    def __init__(self, processes: Mapping[str, int]) -> None:
        self._processes = dict(processes)
        self._marked: dict[str, float] = {}

    def mark(self) -> None:
        self._marked = self._read()

    def since(self) -> dict[str, float]:
        now = self._read()
        return {name: round(now[name] - self._marked.get(name, 0.0), 2) for name in now}

    def _read(self) -> dict[str, float]:
        own, parents = os.getpid(), _parents()  # one walk of /proc for every process
        return {
            name: cpu_seconds(pid, None if pid == own else parents)
            for name, pid in self._processes.items()
        }
