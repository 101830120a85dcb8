"""The launcher's closing "try it" lines name only what the stack can do."""

from __future__ import annotations

from pathlib import Path

from devstack.launcher import try_it

FULL = {
    "temporal": {"ui_url": "http://127.0.0.1:8233"},
    "salesforce": {"instance_url": "https://localhost:8701"},
    "worker": {"metrics_url": "http://127.0.0.1:9101/metrics"},
    "listener": {"metrics_url": "http://127.0.0.1:9102/metrics"},
}


def test_a_full_stack_suggests_a_demo_order_and_the_operator_commands() -> None:
    lines = try_it(FULL, Path("/srv/dev"))
    text = "\n".join(lines)
    assert "fulfillment demo order --sim esim --stack /srv/dev/stack.json" in text
    assert "fulfillment retry <OrderId>" in text
    assert "http://127.0.0.1:8233" in text


def test_without_a_listener_or_salesforce_there_is_nothing_to_try() -> None:
    no_listener = {key: value for key, value in FULL.items() if key != "listener"}
    assert try_it(no_listener, Path("/srv/dev")) == []
    no_salesforce = {key: value for key, value in FULL.items() if key != "salesforce"}
    assert try_it(no_salesforce, Path("/srv/dev")) == []
