"""How every engine process talks to Temporal: one data converter and one way to connect.

Temporal keeps every workflow input, activity result and failure in its history, and customer
data (names, addresses, phone numbers, EIDs) travels through them. `EncryptionCodec` encrypts
each payload with AES-256-GCM before it leaves the process, so the Temporal server, its database
and anyone reading the history without our keys see only ciphertext. The keys come from
`TEMPORAL_PAYLOAD_KEYS` (see `parse_payload_keys`), never from the code.

Wire format of an encrypted payload (what the Temporal UI's remote codec must also speak):
metadata `encoding: binary/encrypted` and `encryption-key-id: <id>`; data is the 12-byte nonce
followed by the AES-GCM ciphertext and tag of the original Payload serialized as protobuf, so the
original metadata (encoding, message type) is hidden as well.

This module belongs to `config/`: it imports Temporal and cryptography, nothing of the engine.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
)
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from config.logging import get_logger
from config.payload_keys import KEY_BYTES, KEY_ID, parse_payload_keys
from domain.fulfillment import (
    WORKFLOW_TYPE,
    ActivationDecision,
    ExistingFulfillment,
    FulfillmentInput,
    FulfillmentProgress,
    FulfillmentResult,
    FulfillmentStatus,
    OperatorRequest,
    SearchAttribute,
    decide_activation,
    workflow_id,
)
from domain.messages import PROGRESS_QUERY, RETRY_SIGNAL

if TYPE_CHECKING:
    from config.settings import Settings

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
NONCE_BYTES = 12  # the GCM standard nonce; random per payload, so never reused under one key
_TAG_BYTES = 16
# What an error may quote of a key id read from a payload: the payload may be garbage.
_SHOWN_ID = re.compile(r"[^A-Za-z0-9_.\-]")

_log = get_logger(__name__)


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


def data_converter(settings: Settings) -> DataConverter:
    """The pydantic converter, with failures encoded and, when keys are set, encrypted payloads.

    Failure messages and stack traces move into an encoded attribute so they pass the codec:
    an error message can quote customer data.
    """
    converter = replace(
        pydantic_data_converter,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
    if settings.temporal_payload_keys is None:
        _log.warning(
            "TEMPORAL_PAYLOAD_KEYS is not set: workflow payloads, including customer data, "
            "are stored in clear in Temporal's history"
        )
        return converter
    keys = parse_payload_keys(settings.temporal_payload_keys.get_secret_value())
    return replace(converter, payload_codec=EncryptionCodec(keys))


async def start_fulfillment(
    client: Client,
    settings: Settings,
    fulfillment: FulfillmentInput,
    **overrides: Any,
) -> WorkflowHandle[Any, FulfillmentResult]:
    """Start the fulfillment of one order, as the listener, the API and the CLI do.

    The id is the order's (`order-fulfillment-<id>`), so a second start of a running or
    completed fulfillment is refused by Temporal (`WorkflowAlreadyStartedError`); `overrides`
    go to `Client.start_workflow` (an id reuse or conflict policy, a start delay).
    """
    return await client.start_workflow(
        WORKFLOW_TYPE,
        fulfillment,
        id=workflow_id(fulfillment.sf_order_id),
        task_queue=settings.temporal_task_queue,
        static_summary=fulfillment.summary(),
        static_details=fulfillment.details(),
        result_type=FulfillmentResult,
        search_attributes=start_search_attributes(fulfillment.sf_order_id),
        **overrides,
    )


def start_search_attributes(sf_order_id: str) -> TypedSearchAttributes:
    """What a fulfillment is started with: searchable by its order from its first moment, and
    one search-attribute upsert fewer per order (the workflow leaves out what these set)."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(
                SearchAttributeKey.for_keyword(SearchAttribute.SALESFORCE_ORDER_ID), sf_order_id
            ),
            SearchAttributePair(
                SearchAttributeKey.for_keyword(SearchAttribute.FULFILLMENT_STATUS),
                FulfillmentStatus.PENDING.value,
            ),
        ]
    )


# The memo key naming who started a fulfillment on reconciliation's behalf (a reconciliation run,
# or `fulfillment reconcile`; shown in the UI too).
STARTED_BY = "started_by"


async def start_unless_known(
    client: Client, settings: Settings, fulfillment: FulfillmentInput, *, starter: str
) -> bool:
    """Start the fulfillment unless Temporal has (or had, within its retention) one of the order;
    whether `starter` started it.

    `REJECT_DUPLICATE` refuses any id Temporal has seen, so racing starters start it once and a
    fulfillment that ran and closed is never started again from here. A starter that asks again
    after a lost reply recognises its own start by the memo.
    """
    try:
        await start_fulfillment(
            client,
            settings,
            fulfillment,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            memo={STARTED_BY: starter},
        )
    except WorkflowAlreadyStartedError:
        handle = client.get_workflow_handle(workflow_id(fulfillment.sf_order_id))
        described = await handle.describe()
        return await described.memo_value(STARTED_BY, None, type_hint=str) == starter
    return True


def tls_config(settings: Settings) -> TLSConfig | Literal[False]:
    """`Client.connect`'s `tls` from the `TEMPORAL_TLS*` settings: False, or what to verify and
    present.

    False is explicit rather than None: None lets the SDK switch TLS on by itself when an API
    key is set, and the settings already refuse a key without `TEMPORAL_TLS`. The files are
    read here, at connect, so a restarted process picks up a renewed certificate.
    """
    if not settings.temporal_tls:
        return False

    def read(path: Path | None) -> bytes | None:
        return None if path is None else path.read_bytes()

    return TLSConfig(
        server_root_ca_cert=read(settings.temporal_tls_ca_file),
        domain=settings.temporal_tls_server_name,
        client_cert=read(settings.temporal_tls_cert_file),
        client_private_key=read(settings.temporal_tls_key_file),
    )


def connect_options(settings: Settings) -> dict[str, Any]:
    """Everything `Client.connect` gets from the settings besides the address."""
    api_key = settings.temporal_api_key
    return {
        "namespace": settings.temporal_namespace,
        "data_converter": data_converter(settings),
        "tls": tls_config(settings),
        "api_key": None if api_key is None else api_key.get_secret_value(),
    }


async def connect_temporal(settings: Settings, **overrides: Any) -> Client:
    """Connect to Temporal as every engine process must: our namespace, data converter, TLS and
    API key (`connect_options`).

    `overrides` go to `Client.connect` as they are (an identity, a lazy client, a runtime).
    """
    options = {**connect_options(settings), **overrides}
    return await Client.connect(settings.temporal_address, **options)


async def existing_fulfillment(client: Client, sf_order_id: str) -> ExistingFulfillment | None:
    """The latest run of the order's fulfillment as `decide_activation` needs it, or None."""
    handle = client.get_workflow_handle(workflow_id(sf_order_id), result_type=FulfillmentResult)
    try:
        described = await handle.describe()
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND:
            return None
        raise
    if described.status is WorkflowExecutionStatus.RUNNING:
        progress = await handle.query(PROGRESS_QUERY, result_type=FulfillmentProgress)
        return ExistingFulfillment(running=True, waiting_for_operator=progress.waiting_for_operator)
    ended: FulfillmentStatus | None = None
    if described.status is WorkflowExecutionStatus.COMPLETED:
        ended = (await handle.result()).status
    return ExistingFulfillment(running=False, ended=ended, closed_at=described.close_time)


async def activate_fulfillment(
    client: Client,
    settings: Settings,
    fulfillment: FulfillmentInput,
    *,
    activated_at: datetime | None,
    recorded_status: Callable[[str], Awaitable[FulfillmentStatus | None]],
) -> ActivationDecision:
    """What an activation of the order does, done: start, start afresh, retry, or nothing.

    One activation may arrive many times (replays, duplicates, reconciliation): each repeat
    finds the fulfillment it already started and does nothing more. A retry of a parked
    fulfillment carries a request id derived from the trigger, so a repeated event counts once.
    When Temporal knows no run, `recorded_status` (the read model's status of the order) is
    asked too: Temporal's retention forgets closed runs, the read model does not.
    """
    existing = await existing_fulfillment(client, fulfillment.sf_order_id)
    recorded = None if existing is not None else await recorded_status(fulfillment.sf_order_id)
    decision = decide_activation(
        existing, activated_at, recorded=recorded, cutover=settings.fulfillment_cutover_at
    )
    if decision is ActivationDecision.START:
        try:
            await start_fulfillment(client, settings, fulfillment)
        except WorkflowAlreadyStartedError:
            # Started meanwhile by another path (reconciliation, an operator): one is enough.
            return ActivationDecision.IGNORE_RUNNING
    elif decision is ActivationDecision.START_AFRESH:
        await start_fulfillment(
            client,
            settings,
            fulfillment,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        )
    elif decision is ActivationDecision.RETRY_PARKED:
        trigger = fulfillment.trigger
        request = OperatorRequest(
            reason="the order was activated again in Salesforce",
            requested_by=f"salesforce:{trigger.source.value}",
            request_id=f"reactivation:{trigger.channel}:{trigger.replay_id}"
            if trigger.replay_id is not None
            else None,
        )
        await client.get_workflow_handle(workflow_id(fulfillment.sf_order_id)).signal(
            RETRY_SIGNAL, request
        )
    return decision
