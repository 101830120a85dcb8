"""Strict validation of Salesforce record ids; nothing else may reach SOQL or a URL path.

A record id is 15 case-sensitive characters of `[A-Za-z0-9]`, or those 15 followed by a
3-character checksum of their letter case. The first three characters are the object's key
prefix (`801` Order, `001` Account, ...).
"""

from __future__ import annotations

import re

_ID = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")
_SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"

# Key prefixes of the objects the engine touches (standard objects, fixed across orgs).
ACCOUNT = "001"
ORDER = "801"
ORDER_ITEM = "802"
PRODUCT2 = "01t"
PRICEBOOK2 = "01s"
PRICEBOOK_ENTRY = "01u"


class InvalidSalesforceId(ValueError):
    """The value is not a well-formed Salesforce id (of the expected object)."""


def checksum(id15: str) -> str:
    """The 3-character suffix that makes a 15-character id case-insensitively unique."""
    suffix = []
    for chunk in range(3):
        bits = 0
        for position, char in enumerate(id15[chunk * 5 : chunk * 5 + 5]):
            if "A" <= char <= "Z":
                bits |= 1 << position
        suffix.append(_SUFFIX_ALPHABET[bits])
    return "".join(suffix)


def validate_sf_id(value: object, *, key_prefix: str | None = None) -> str:
    """Return the canonical 18-character form of `value`, or raise `InvalidSalesforceId`.

    An 18-character id must carry the correct checksum; with `key_prefix` the id must also
    belong to that object. The error message never echoes the value (it may be hostile input).
    """
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidSalesforceId("not a Salesforce id: expected 15 or 18 letters and digits")
    id15 = value[:15]
    expected = id15 + checksum(id15)
    if len(value) == 18 and value != expected:
        raise InvalidSalesforceId("not a Salesforce id: checksum does not match")
    if key_prefix is not None and not value.startswith(key_prefix):
        raise InvalidSalesforceId(f"not a Salesforce id of the expected object ({key_prefix})")
    return expected


def is_valid_sf_id(value: object, *, key_prefix: str | None = None) -> bool:
    try:
        validate_sf_id(value, key_prefix=key_prefix)
    except InvalidSalesforceId:
        return False
    return True
