"""The names of the messages the fulfillment workflow answers: its query, updates and signals.

The workflow's decorators name its handlers with these, and every caller (the listener, the API,
the CLI, the demo, the tests) sends by them, so a rename is one edit here, and one that the
recorded histories in tests/histories would refuse: the names are on the wire and in every
history Temporal keeps, and must stay the strings they are.
"""

from __future__ import annotations

from typing import Final

# Query: the workflow's `FulfillmentProgress`.
PROGRESS_QUERY: Final = "progress"

# Updates: an operator's retry or cancel of a parked fulfillment, answered with its progress
# (or refused by the validator).
RETRY_UPDATE: Final = "retry"
CANCEL_UPDATE: Final = "cancel"

# Signals of the same names as the updates, so the Temporal UI's "send signal" works too (a signal
# cannot be refused: one in the wrong state is logged and ignored). A re-activation in Salesforce
# retries a parked fulfillment by signal.
RETRY_SIGNAL: Final = "retry"
CANCEL_SIGNAL: Final = "cancel"
# Freebit reported a line's activation through another channel (its notification files).
SIM_ACTIVATION_REPORTED_SIGNAL: Final = "sim_activation_reported"
