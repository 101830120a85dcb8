"""What a benchmark takes (`Options`) and gives back (`BenchmarkResult`: named figures, plus the
details behind them for the JSON file)."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Options:
    # Measured seconds per run of one target, after `warmup` seconds not counted.
    seconds: float = 5.0
    warmup: float = 1.0
    connections: int = 50
    # Runs per target; figures are medians over them (shared machines vary ±20% run to run; the
    # throughput ratio of one commit read 0.61 in one run and 0.715 in another).
    rounds: int = 5


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    unit: str
    description: str


@dataclass(frozen=True)
class BenchmarkResult:
    name: str
    description: str
    metrics: list[Metric]
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "metrics": {
                m.name: {"value": m.value, "unit": m.unit, "description": m.description}
                for m in self.metrics
            },
            "details": self.details,
        }


def median(values: list[float]) -> float:
    return float(statistics.median(values))


@contextmanager
def work_directory(prefix: str) -> Iterator[Path]:
    """A scratch directory for a benchmark's servers and logs, removed afterwards unless
    `BENCH_KEEP_WORK` is set (then its path is printed, to read the processes' logs)."""
    if os.environ.get("BENCH_KEEP_WORK"):
        kept = Path(tempfile.mkdtemp(prefix=prefix))
        print(f"  work directory kept: {kept}", file=sys.stderr)
        yield kept
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)
