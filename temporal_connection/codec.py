"""The payload codec: every payload encrypted before it leaves the process.

Temporal keeps every workflow input, activity result and failure in its history, and customer
data (names, addresses, phone numbers, EIDs) travels through them. `EncryptionCodec` encrypts
each payload with AES-256-GCM before it leaves the process, so the Temporal server, its database
and anyone reading the history without our keys see only ciphertext. The keys come from
`TEMPORAL_PAYLOAD_KEYS` (see `config.payload_keys.parse_payload_keys`), never from the code.

Wire format of an encrypted payload (what the Temporal UI's remote codec must also speak):
metadata `encoding: binary/encrypted` and `encryption-key-id: <id>`; data is the 12-byte nonce
followed by the AES-GCM ciphertext and tag of the original Payload serialized as protobuf, so the
original metadata (encoding, message type) is hidden as well.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from config.payload_keys import KEY_BYTES, KEY_ID

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
NONCE_BYTES = 12  # the GCM standard nonce; random per payload, so never reused under one key
_TAG_BYTES = 16
# What an error may quote of a key id read from a payload: the payload may be garbage.
_SHOWN_ID = re.compile(r"[^A-Za-z0-9_.\-]")


class PayloadDecryptionError(Exception):
    """A payload could not be decrypted: unknown key id, altered data or a changed key.

    The message names the key id, never a key. In a worker this fails the workflow task, which
    Temporal retries, so a missing key is fixed by deploying it rather than losing the workflow.
    """


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over whole payloads; the first key encrypts, every key decrypts."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("at least one payload key is needed")
        self._ciphers: dict[str, AESGCM] = {}
        for key_id, key in keys:
            if not KEY_ID.match(key_id):
                raise ValueError(f"bad key id {key_id!r}: expected 1-64 of A-Z a-z 0-9 _ . -")
            if len(key) != KEY_BYTES:
                raise ValueError(f"key {key_id!r} is {len(key)} bytes, expected {KEY_BYTES}")
            if key_id in self._ciphers:
                raise ValueError(f"key id {key_id!r} is listed twice")
            self._ciphers[key_id] = AESGCM(key)
        self.encrypting_key_id = keys[0][0]
        self._encrypting = self._ciphers[self.encrypting_key_id]

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decrypt(payload) for payload in payloads]

    def _encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._encrypting.encrypt(nonce, payload.SerializeToString(), None)
        return Payload(
            metadata={
                "encoding": ENCODING,
                KEY_ID_METADATA: self.encrypting_key_id.encode(),
            },
            data=nonce + sealed,
        )

    def _decrypt(self, payload: Payload) -> Payload:
        # Histories written before encryption was switched on hold clear payloads; they must
        # stay readable, and they carry nothing we could check anyway.
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        raw_id = payload.metadata.get(KEY_ID_METADATA, b"").decode("utf-8", "replace")
        shown = _SHOWN_ID.sub("?", raw_id[:64]) or "(none)"
        cipher = self._ciphers.get(raw_id)
        if cipher is None:
            raise PayloadDecryptionError(
                f"payload encrypted with key id {shown!r}, which is not in TEMPORAL_PAYLOAD_KEYS "
                f"(known ids: {', '.join(self._ciphers)})"
            )
        data = payload.data
        if len(data) < NONCE_BYTES + _TAG_BYTES:
            raise PayloadDecryptionError(f"payload encrypted with key id {shown!r} is truncated")
        try:
            clear = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], None)
        except InvalidTag:
            raise PayloadDecryptionError(
                f"payload encrypted with key id {shown!r} failed authentication: it was altered, "
                "or the key configured under that id is not the one that encrypted it"
            ) from None
        return Payload.FromString(clear)
