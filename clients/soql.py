"""Building SOQL safely: ids go in only after validation, strings only through `quote`,
moments only through `datetime_literal`.

With these doors the only text a caller can place inside a query is a checked id, an escaped
literal or a formatted moment, so SOQL injection is impossible by construction.
"""

from __future__ import annotations

from datetime import UTC, datetime

from clients.salesforce_ids import validate_sf_id

# SOQL string-literal escapes (Salesforce "Quoted String Escape Sequences").
_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


def quote(value: str) -> str:
    """A SOQL string literal (quotes included) whose content is exactly `value`."""
    return "'" + "".join(_ESCAPES.get(char, char) for char in value) + "'"


def id_literal(value: object, *, key_prefix: str | None = None) -> str:
    """A quoted, validated 18-character id; raises `InvalidSalesforceId` for anything else."""
    return "'" + validate_sf_id(value, key_prefix=key_prefix) + "'"


def datetime_literal(moment: datetime) -> str:
    """A SOQL dateTime literal (unquoted, UTC, whole seconds) for an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("a SOQL dateTime needs a time zone")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
