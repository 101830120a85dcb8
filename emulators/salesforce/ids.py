"""Salesforce record ids: 15-character case-sensitive ids and their 18-character case-safe form.

An 18-character id is the 15-character one plus three characters that encode, for each block of
five characters, which of them are upper case; so `001a0000006vm9riac` still names
`001A0000006Vm9rIAC`. Salesforce accepts either form on input and always answers with 18.
Generated ids are sequential per key prefix (as real ones roughly are) and depend only on the seed.
"""

from __future__ import annotations

import random
import re
import string

# Digits sort before upper before lower case in ASCII, so ids of one prefix sort in creation order.
_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_SUFFIX_ALPHABET = string.ascii_uppercase + "012345"
_ID_RE = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
_COUNTER_WIDTH = 9


def checksum(id15: str) -> str:
    """The three-character case-safe suffix of a 15-character id."""
    suffix = []
    for block in range(3):
        flags = 0
        for position, char in enumerate(id15[block * 5 : block * 5 + 5]):
            if "A" <= char <= "Z":
                flags |= 1 << position
        suffix.append(_SUFFIX_ALPHABET[flags])
    return "".join(suffix)


def to_18(id15: str) -> str:
    return id15 + checksum(id15)


def normalize(value: str) -> str | None:
    """The canonical 18-character id for a 15- or 18-character id, or None if it is not one.

    An 18-character id is case-insensitive: its suffix restores the case of the first 15.
    """
    if not _ID_RE.match(value):
        return None
    if len(value) == 15:
        return to_18(value)
    body, suffix = value[:15], value[15:].upper()
    chars = list(body)
    for block, code in enumerate(suffix):
        index = _SUFFIX_ALPHABET.find(code)
        if index < 0:
            return None
        for position in range(5):
            at = block * 5 + position
            if chars[at].isalpha():
                upper = bool(index & (1 << position))
                chars[at] = chars[at].upper() if upper else chars[at].lower()
    canonical = "".join(chars)
    return canonical + checksum(canonical)


def key_prefix(record_id: str) -> str:
    return record_id[:3]


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, remainder = divmod(number, 62)
        digits.append(_BASE62[remainder])
    return "".join(reversed(digits))


class IdFactory:
    """Hands out new 18-character ids per key prefix, deterministic under a seed."""

    def __init__(self, seed: int | None = None) -> None:
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        rng = random.Random(seed)
        # Two "pod" characters, like the instance part of real ids (e.g. `5g`).
        self._pod = rng.choice(string.digits[1:]) + rng.choice(string.ascii_lowercase)
        self._start = rng.randrange(62**4)
        self._counters: dict[str, int] = {}

    def new(self, prefix: str) -> str:
        count = self._counters.get(prefix, 0) + 1
        self._counters[prefix] = count
        return to_18(prefix + self._pod + "0" + _base62(self._start + count, _COUNTER_WIDTH))

    def to_state(self) -> dict[str, object]:
        return {"pod": self._pod, "start": self._start, "counters": dict(self._counters)}

    def load_state(self, state: dict[str, object]) -> None:
        self._pod = str(state["pod"])
        start = state["start"]
        counters = state["counters"]
        assert isinstance(start, int) and isinstance(counters, dict)
        self._start = start
        self._counters = {str(k): int(v) for k, v in counters.items()}
