"""`TEMPORAL_PAYLOAD_KEYS`, the payload codec's keys: read and made.

Standard library only, and nothing of ours: the settings check the keys when they load, and
`temporal_connection` builds the codec from them, so settings need nothing of Temporal.
"""

from __future__ import annotations

import base64
import binascii
import os
import re

KEY_BYTES = 32  # AES-256
# What a key id may be: it is written in clear in every encrypted payload's metadata.
KEY_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def parse_payload_keys(text: str) -> list[tuple[str, bytes]]:
    """`TEMPORAL_PAYLOAD_KEYS`: comma-separated `id:base64` pairs, the first one encrypts.

    Each key is standard base64 of 32 random bytes. Errors are `ValueError`s with a one-line
    reason that names the key id or position, never key material.
    """
    keys: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    entries = [entry.strip() for entry in text.split(",")]
    if not any(entries):
        raise ValueError("no keys given: expected id:base64 pairs separated by commas")
    for position, entry in enumerate(entries, start=1):
        if not entry:
            raise ValueError(f"entry {position} is empty")
        key_id, colon, encoded = entry.partition(":")
        key_id, encoded = key_id.strip(), encoded.strip()
        if not colon:
            raise ValueError(f"entry {position} is not of the form id:base64")
        if not KEY_ID.match(key_id):
            # The "id" might be a pasted key; show only where it is, not what it is.
            raise ValueError(
                f"entry {position} has a bad key id: expected 1-64 of A-Z a-z 0-9 _ . -"
            )
        if key_id in seen:
            raise ValueError(f"key id {key_id!r} is listed twice")
        seen.add(key_id)
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"key {key_id!r} is not valid standard base64") from None
        if len(key) != KEY_BYTES:
            raise ValueError(f"key {key_id!r} is {len(key)} bytes, expected {KEY_BYTES}")
        keys.append((key_id, key))
    return keys


def generate_payload_key(key_id: str) -> str:
    """A new `id:base64` pair of 32 random bytes, to put first in `TEMPORAL_PAYLOAD_KEYS`."""
    if not KEY_ID.match(key_id):
        raise ValueError("bad key id: expected 1-64 of A-Z a-z 0-9 _ . -")
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode('ascii')}"
