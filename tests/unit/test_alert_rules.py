"""Every alert rule fires when what it watches goes wrong, checked by Prometheus's own evaluator.

For each rule, a scenario of input series (in promtool's notation, one sample a minute) and the
alerts expected at one moment; the test writes them as a promtool rule-test file and runs
`promtool test rules`. promtool comes from Debian's `prometheus` package (.ci/run installs it);
where it is missing these tests are skipped, saying so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/alerts.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian package prometheus; .ci/run installs it)",
)


@dataclass
class Scenario:
    series: dict[str, str]
    at: str
    # The labels of each alert expected firing at `at`, beyond the rule's own.
    firing: list[dict[str, str]] = field(default_factory=lambda: [{}])


def per_minute(*values: float | str) -> str:
    return " ".join(str(v) for v in values)


W, L, A = ("fulfillment-worker", "fulfillment-listener", "fulfillment-api")
LATENCY = "temporal_activity_schedule_to_start_latency_bucket"

SCENARIOS: dict[str, Scenario] = {
    # Down by value, and down with no series at all (nothing scraped).
    "WorkerDown": Scenario({f'up{{job="{W}", instance="w1"}}': per_minute(1, 0, 0, 0, 0)}, "4m"),
    "ListenerDown": Scenario({}, "3m"),
    "ApiDown": Scenario({f'up{{job="{A}", instance="a1"}}': "0x5"}, "4m"),
    "NoPollerOnTaskQueue": Scenario(
        {f'temporal_num_pollers{{job="{W}", poller_type="workflow_task"}}': "2 0x5"}, "4m"
    ),
    "WorkflowTaskFailures": Scenario(
        {f'temporal_workflow_task_execution_failed_total{{job="{W}"}}': "0 0 3 5"}, "3m"
    ),
    "ActivitiesWaitForWorkers": Scenario(
        {
            f'{LATENCY}{{job="{W}", le="1"}}': "0+0x20",
            f'{LATENCY}{{job="{W}", le="60"}}': "0+10x20",
            f'{LATENCY}{{job="{W}", le="+Inf"}}': "0+10x20",
        },
        "20m",
    ),
    "ApiServerErrors": Scenario(
        {
            'fulfillment_api_requests_total{status="200"}': "0+90x15",
            'fulfillment_api_requests_total{status="503"}': "0+10x15",
        },
        "14m",
    ),
    "ApiNotReady": Scenario(
        {
            'fulfillment_api_dependency_up{dependency="redis", instance="a1"}': "0x10",
            'fulfillment_api_dependency_up{dependency="postgres", instance="a1"}': "1x10",
        },
        "8m",
        [{"dependency": "redis"}],
    ),
    "ListenerDisconnected": Scenario({}, "8m"),
    "ListenerNoActiveReplica": Scenario(
        {
            'fulfillment_cdc_active{instance="l1"}': "0x5",
            'fulfillment_cdc_active{instance="l2"}': "0x5",
        },
        "4m",
    ),
    "NoOrderEventsReceived": Scenario(
        {'fulfillment_cdc_events_total{channel="/data/OrderChangeEvent"}': "5x200"}, "180m"
    ),
    "CursorNearRetention": Scenario({"fulfillment_cdc_cursor_age_seconds": "180000x3"}, "2m"),
    "ListenerEventStuck": Scenario({"fulfillment_cdc_oldest_in_hand_seconds": "700x5"}, "4m"),
    "EventsDeadLettered": Scenario(
        {'fulfillment_cdc_alerts_total{reason="dead_letter"}': "0 1 1"},
        "2m",
        [{"reason": "dead_letter"}],
    ),
    "DeadLettersWaiting": Scenario({"fulfillment_dead_letters_waiting": "2x70"}, "65m"),
    "FulfillmentsParked": Scenario(
        {'fulfillment_parked_total{code="PAYMENT_METHOD_MISSING"}': "0 1 2"},
        "2m",
        [{"code": "PAYMENT_METHOD_MISSING"}],
    ),
    "FailedFulfillmentsPileUp": Scenario(
        {
            'fulfillment_failed_fulfillments{code="INVALID_ORDER", instance="a1"}': "15x40",
            'fulfillment_failed_fulfillments{code="none", instance="a1"}': "10x40",
            # A second API replica reports the same figures: counted once.
            'fulfillment_failed_fulfillments{code="INVALID_ORDER", instance="a2"}': "15x40",
        },
        "35m",
    ),
    "RetryBudgetExhausted": Scenario(
        {'fulfillment_parked_total{code="UPSTREAM_UNAVAILABLE"}': "0 0 4"}, "2m"
    ),
    "FulfillmentStranded": Scenario(
        {"reconciliation_fulfillments_stranded_total": "0 0 0 0 0 0 0 0 0 0 0 1"}, "11m"
    ),
    "UpstreamRefusesUs": Scenario(
        {'fulfillment_client_alerts_total{system="whmcs", reason="configuration"}': "0 2 4"},
        "2m",
        [{"system": "whmcs"}],
    ),
    "UnrecognisedUpstreamErrors": Scenario(
        {
            'fulfillment_client_alerts_total{system="freebit", operation="add_account", '
            'reason="unrecognised"}': "0 1"
        },
        "1m",
        [{"system": "freebit", "operation": "add_account"}],
    ),
    "SalesforceApiLimitNear": Scenario(
        {
            'fulfillment_salesforce_api_usage{kind="used"}': "90000x15",
            'fulfillment_salesforce_api_usage{kind="limit"}': "100000x15",
        },
        "12m",
    ),
    "CacheFlushStorm": Scenario(
        {'fulfillment_cache_invalidated_keys_total{kind="sweep"}': "0+10000x30"}, "25m"
    ),
    "CacheOutboxBacklog": Scenario({"fulfillment_cache_outbox_oldest_seconds": "1000x10"}, "8m"),
}
# A scenario for each rule where nothing is wrong: it must stay quiet.
HEALTHY: dict[str, dict[str, str]] = {
    "WorkerDown": {
        f'up{{job="{W}", instance="w1"}}': "0 1x5",
        f'up{{job="{W}", instance="w2"}}': "0x5",
    },
    "ListenerNoActiveReplica": {
        'fulfillment_cdc_active{instance="l1"}': "1x5",
        'fulfillment_cdc_active{instance="l2"}': "0x5",
    },
    "ApiServerErrors": {
        'fulfillment_api_requests_total{status="200"}': "0+99x15",
        'fulfillment_api_requests_total{status="500"}': "0+1x15",
    },
    "FailedFulfillmentsPileUp": {
        'fulfillment_failed_fulfillments{code="INVALID_ORDER", instance="a1"}': "15x40",
        'fulfillment_failed_fulfillments{code="INVALID_ORDER", instance="a2"}': "15x40",
    },
}


def rules() -> dict[str, dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text())
    return {rule["alert"]: rule for group in loaded["groups"] for rule in group["rules"]}


def expanded(annotations: dict[str, str], labels: dict[str, str]) -> dict[str, str]:
    """The rule's annotations as Prometheus renders them for an alert with these labels."""

    def label(match: re.Match[str]) -> str:
        return labels[match[1]]

    return {k: re.sub(r"\{\{ \$labels\.(\w+) \}\}", label, v) for k, v in annotations.items()}


def promtool_test(tests: list[dict[str, Any]], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    (tmp_path / "alerts.yml").write_text(RULES.read_text())
    path = tmp_path / "alerts.test.yml"
    path.write_text(
        yaml.safe_dump({"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": tests})
    )
    return subprocess.run(
        [PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )


def test_every_rule_has_a_scenario_that_fires_it() -> None:
    assert set(SCENARIOS) == set(rules())


def test_every_rule_says_what_happened_and_points_at_a_runbook_section() -> None:
    runbook = (ROOT / "docs/runbook.md").read_text()
    anchors = {_anchor(line[3:]) for line in runbook.splitlines() if line.startswith("## ")}
    for name, rule in rules().items():
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), name
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "docs/runbook.md" and anchor in anchors, (name, anchor)


@needs_promtool
def test_the_rules_are_valid_for_prometheus() -> None:
    assert PROMTOOL is not None
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_promtool
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_rule_fires_when_what_it_watches_goes_wrong(name: str, tmp_path: Path) -> None:
    rule, scenario = rules()[name], SCENARIOS[name]
    expected = []
    for extra in scenario.firing:
        labels = {**rule["labels"], **extra}
        expected.append(
            {"exp_labels": labels, "exp_annotations": expanded(rule["annotations"], labels)}
        )
    test = {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in scenario.series.items()],
        "alert_rule_test": [{"eval_time": scenario.at, "alertname": name, "exp_alerts": expected}],
    }
    ran = promtool_test([test], tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr


@needs_promtool
@pytest.mark.parametrize("name", sorted(HEALTHY))
def test_the_rule_stays_quiet_when_all_is_well(name: str, tmp_path: Path) -> None:
    test = {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in HEALTHY[name].items()],
        "alert_rule_test": [{"eval_time": SCENARIOS[name].at, "alertname": name, "exp_alerts": []}],
    }
    ran = promtool_test([test], tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


@needs_promtool
def test_the_compose_prometheus_config_is_valid(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    config = (ROOT / "deploy/prometheus/prometheus.yml").read_text()
    (tmp_path / "alerts.yml").write_text(RULES.read_text())
    path = tmp_path / "prometheus.yml"
    path.write_text(config.replace("/etc/prometheus/alerts.yml", str(tmp_path / "alerts.yml")))
    checked = subprocess.run(
        [PROMTOOL, "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
