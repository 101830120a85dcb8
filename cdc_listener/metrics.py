"""The listener's Prometheus metrics (served on `LISTENER_METRICS_PORT`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ACTIVE = Gauge("fulfillment_cdc_active", "1 while this replica holds the listener lease")
CONNECTED = Gauge("fulfillment_cdc_connected", "1 while the streaming session is subscribed")
EVENTS = Counter(
    "fulfillment_cdc_events",
    "Events received, by channel, change type and outcome",
    ["channel", "change_type", "outcome"],
)
ACTIVATIONS = Counter(
    "fulfillment_cdc_activations", "Activations seen, by what was done", ["decision"]
)
RECONNECTS = Counter("fulfillment_cdc_reconnects", "Streaming sessions restarted", ["reason"])
ALERTS = Counter(
    "fulfillment_cdc_alerts",
    "Things a person must look at: stale cursors, dead letters, stalled sessions",
    ["reason"],
)
LAG = Histogram(
    "fulfillment_cdc_lag_seconds",
    "From the Salesforce commit to the event handled",
    ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
CURSOR_AGE = Gauge(
    "fulfillment_cdc_cursor_age_seconds",
    "Age of the last handled event's commit, per channel (alert before 72 h)",
    ["channel"],
)
IN_FLIGHT = Gauge("fulfillment_cdc_in_flight", "Events being handled right now")
OLDEST_IN_HAND = Gauge(
    "fulfillment_cdc_oldest_in_hand_seconds",
    "How long the oldest event being handled has been in hand; it holds its channel's cursor"
    " while it keeps failing (Temporal, Salesforce or Postgres away, or a bug)",
)
