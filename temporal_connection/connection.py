"""Connecting to Temporal as every engine process must: our namespace, data converter (failures
encoded, payloads encrypted by `temporal_connection.codec`), TLS and API key."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.service import TLSConfig

from config.logging import get_logger
from config.payload_keys import parse_payload_keys
from temporal_connection.codec import EncryptionCodec

if TYPE_CHECKING:
    from config.settings import Settings

_log = get_logger(__name__)


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
