"""The fault-tolerance suite's report: one row per scenario, printed at the end of the run and
written to bench/results/faults.json."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

REPORT = Path(__file__).resolve().parents[2] / "bench" / "results" / "faults.json"


@dataclass
class Row:
    scenario: str
    orders: int
    faults: str
    lost: int = 0
    duplicates: int = 0
    recovery_seconds: float = 0.0


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)


_REPORT = Report()


@pytest.fixture
def report() -> Report:
    return _REPORT


@pytest.fixture(scope="session", autouse=True)
def _write_report() -> Iterator[None]:
    yield
    if not _REPORT.rows:
        return
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps([asdict(row) for row in _REPORT.rows], indent=2) + "\n")
    header = f"{'scenario':<40} {'orders':>6} {'lost':>5} {'dup':>4} {'recover s':>9}  faults"
    lines = [header, "-" * len(header)]
    for row in _REPORT.rows:
        lines.append(
            f"{row.scenario:<40} {row.orders:>6} {row.lost:>5} {row.duplicates:>4}"
            f" {row.recovery_seconds:>9.1f}  {row.faults}"
        )
    print("\n\nFault-tolerance report (also in bench/results/faults.json):\n" + "\n".join(lines))
