"""The alert rules and the dashboard use only metrics the code exports, and the docs list them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import api.app  # noqa: F401 - registers the API's metrics
import cdc_listener.metrics  # noqa: F401
import clients.cache
import clients.metrics  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
_OURS = re.compile(r"\b((?:fulfillment|reconciliation)_[a-z_]+)")
# Metrics recorded through the Temporal SDK's meter in workflow code (not prometheus_client).
_METER = re.compile(
    r'(?:_metric_counter|create_counter|create_histogram_timedelta)\(\s*"([a-z_]+)"'
)


def exported() -> set[str]:
    names = {name for name in REGISTRY._names_to_collectors}
    for path in (ROOT / "workflows").glob("*.py"):
        names |= set(_METER.findall(path.read_text()))
    return names


def _base(name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum", "_total", "_created"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def used() -> set[str]:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((ROOT / "deploy/grafana/fulfillment-dashboard.json").read_text())
    exprs += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    return {_base(name) for expr in exprs for name in _OURS.findall(str(expr))}


def test_every_metric_the_rules_and_dashboard_use_is_exported() -> None:
    known = {_base(name) for name in exported()}
    missing = sorted(used() - known)
    assert not missing, f"alerts/dashboard use metrics nobody exports: {missing}"


def test_every_exported_metric_of_ours_is_documented() -> None:
    page = (ROOT / "docs/observability.md").read_text()
    ours = {_base(n) for n in exported() if _OURS.fullmatch(_base(n))}
    undocumented = sorted(name for name in ours if f"`{name}`" not in page)
    assert not undocumented, f"docs/observability.md does not list: {undocumented}"


def test_the_alert_rules_are_well_formed() -> None:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule.get("alert")
            assert rule["labels"]["severity"] in ("page", "ticket")
