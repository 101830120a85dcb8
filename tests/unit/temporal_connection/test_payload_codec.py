"""The payload codec: customer data leaves the process only as AES-GCM ciphertext.

Each test tries to make the codec leak (plaintext in the bytes, a key in an error text) or accept
what it must refuse (an unknown key, an altered ciphertext), and checks rotation both ways.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
from collections.abc import Iterator

import pytest
from pydantic import BaseModel
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.converter import DefaultPayloadConverter
from temporalio.exceptions import ApplicationError

from config.logging import configure_logging
from config.payload_keys import generate_payload_key, parse_payload_keys
from config.settings import Settings, SettingsError, load_settings
from temporal_connection.codec import (
    ENCODING,
    KEY_ID_METADATA,
    EncryptionCodec,
    PayloadDecryptionError,
)
from temporal_connection.connection import data_converter

PHONE = "090-1234-5678"
NAME = "Yamada Hanako"


class Line(BaseModel):
    customer_name: str
    phone_number: str


@pytest.fixture(autouse=True)
def no_keys_from_outside(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    monkeypatch.delenv("TEMPORAL_PAYLOAD_KEYS", raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env file is read


def key(key_id: str) -> tuple[str, bytes]:
    return key_id, os.urandom(32)


def pair(key_id: str, raw: bytes) -> str:
    return f"{key_id}:{base64.b64encode(raw).decode()}"


def clear_payload(text: str = f"{NAME} {PHONE}") -> Payload:
    payload = DefaultPayloadConverter().to_payloads([text])[0]
    payload.metadata["messageType"] = b"fulfillment.Secretive"
    return payload


async def test_round_trip_restores_the_whole_payload_metadata_included() -> None:
    codec = EncryptionCodec([key("k1")])
    original = [clear_payload(), clear_payload("second")]
    encoded = await codec.encode(original)
    assert await codec.decode(encoded) == original


async def test_encrypted_payload_hides_data_and_metadata_and_names_its_key() -> None:
    codec = EncryptionCodec([key("k1")])
    [encoded] = await codec.encode([clear_payload()])
    assert dict(encoded.metadata) == {"encoding": ENCODING, KEY_ID_METADATA: b"k1"}
    wire = encoded.SerializeToString()
    for plain in (NAME, PHONE, "json/plain", "fulfillment.Secretive"):
        assert plain.encode() not in wire


async def test_each_encode_uses_a_fresh_nonce() -> None:
    codec = EncryptionCodec([key("k1")])
    payload = clear_payload()
    first, second = await codec.encode([payload, payload])
    assert first.data[:12] != second.data[:12]
    assert first.data != second.data


async def test_rotation_new_key_encrypts_old_key_still_decrypts() -> None:
    old, new = key("2024-01"), key("2025-06")
    [written_before] = await EncryptionCodec([old]).encode([clear_payload()])

    rotated = EncryptionCodec([new, old])
    assert await rotated.decode([written_before]) == [clear_payload()]
    [written_after] = await rotated.encode([clear_payload()])
    assert written_after.metadata[KEY_ID_METADATA] == b"2025-06"
    # A process still on the old key list cannot read the new data: deploy the new list
    # everywhere (old key first) before making the new key first.
    with pytest.raises(PayloadDecryptionError, match="'2025-06'"):
        await EncryptionCodec([old]).decode([written_after])


async def test_unknown_key_id_is_a_clear_error_naming_the_id_not_the_key() -> None:
    gone = key("retired")
    [encoded] = await EncryptionCodec([gone]).encode([clear_payload()])
    current = key("current")
    with pytest.raises(PayloadDecryptionError) as error:
        await EncryptionCodec([current]).decode([encoded])
    message = str(error.value)
    assert "'retired'" in message
    assert "not in TEMPORAL_PAYLOAD_KEYS" in message
    assert_no_key_material(message, gone[1], current[1])


async def test_same_id_with_another_key_fails_authentication() -> None:
    [encoded] = await EncryptionCodec([key("k1")]).encode([clear_payload()])
    with pytest.raises(PayloadDecryptionError, match="'k1' failed authentication"):
        await EncryptionCodec([key("k1")]).decode([encoded])


@pytest.mark.parametrize("position", [0, 11, 12, 20, -1])
async def test_a_flipped_bit_anywhere_is_refused(position: int) -> None:
    k1 = key("k1")
    codec = EncryptionCodec([k1])
    [encoded] = await codec.encode([clear_payload()])
    data = bytearray(encoded.data)
    data[position] ^= 0x01
    encoded.data = bytes(data)
    with pytest.raises(PayloadDecryptionError, match="'k1'") as error:
        await codec.decode([encoded])
    assert_no_key_material(str(error.value), k1[1])


async def test_truncated_ciphertext_is_refused() -> None:
    codec = EncryptionCodec([key("k1")])
    [encoded] = await codec.encode([clear_payload()])
    encoded.data = encoded.data[:20]
    with pytest.raises(PayloadDecryptionError, match="truncated"):
        await codec.decode([encoded])


async def test_unencrypted_payloads_pass_through_decode() -> None:
    # Histories written before TEMPORAL_PAYLOAD_KEYS was set must stay readable.
    codec = EncryptionCodec([key("k1")])
    plain = [clear_payload(), Payload()]
    assert await codec.decode(plain) == plain


async def test_a_hostile_key_id_is_not_echoed_raw() -> None:
    [encoded] = await EncryptionCodec([key("k1")]).encode([clear_payload()])
    encoded.metadata[KEY_ID_METADATA] = b"evil\nline " + b"x" * 500
    with pytest.raises(PayloadDecryptionError) as error:
        await EncryptionCodec([key("k1")]).decode([encoded])
    message = str(error.value)
    assert "\n" not in message
    assert "x" * 65 not in message


def test_codec_refuses_bad_keys() -> None:
    with pytest.raises(ValueError, match="at least one"):
        EncryptionCodec([])
    with pytest.raises(ValueError, match="expected 32"):
        EncryptionCodec([("k1", os.urandom(16))])
    with pytest.raises(ValueError, match="twice"):
        EncryptionCodec([key("k1"), key("k1")])


def test_parse_reads_pairs_in_order_first_one_encrypts() -> None:
    a, b = os.urandom(32), os.urandom(32)
    assert parse_payload_keys(f" {pair('new', a)} , {pair('old.1_x-y', b)} ") == [
        ("new", a),
        ("old.1_x-y", b),
    ]


def test_generated_key_parses_and_is_random() -> None:
    first, second = generate_payload_key("k-2025"), generate_payload_key("k-2025")
    assert first != second
    [(key_id, raw)] = parse_payload_keys(first)
    assert key_id == "k-2025" and len(raw) == 32
    with pytest.raises(ValueError, match="bad key id"):
        generate_payload_key("no spaces")


SECRET = os.urandom(32)
SECRET_B64 = base64.b64encode(SECRET).decode()
URLSAFE_B64 = base64.urlsafe_b64encode(b"\xff" * 32).decode()  # "_" and "-" are not standard


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f"k1:{SECRET_B64[:-4]}!!!!", "key 'k1' is not valid standard base64"),
        (f"k1:{base64.b64encode(SECRET[:16]).decode()}", "key 'k1' is 16 bytes, expected 32"),
        (f"k1:{URLSAFE_B64}", "key 'k1' is not valid standard base64"),
        (f"k1:{SECRET_B64},k1:{SECRET_B64}", "key id 'k1' is listed twice"),
        (f"bad id:{SECRET_B64}", "entry 1 has a bad key id"),
        (f"{'x' * 65}:{SECRET_B64}", "entry 1 has a bad key id"),
        (f"k1:{SECRET_B64},{SECRET_B64}", "entry 2 is not of the form id:base64"),
        (f"k1:{SECRET_B64},,", "entry 2 is empty"),
        (",", "no keys given"),
    ],
)
def test_malformed_keys_say_why_in_one_line_without_key_material(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_payload_keys(text)
    message = str(error.value)
    assert reason in message
    assert "\n" not in message
    assert_no_key_material(message, SECRET)

    with pytest.raises(SettingsError) as settings_error:
        load_settings(temporal_payload_keys=text)
    line = str(settings_error.value)
    assert line.startswith("configuration error: TEMPORAL_PAYLOAD_KEYS is malformed: ")
    assert reason in line and "\n" not in line
    assert_no_key_material(line, SECRET)


def test_malformed_keys_in_the_environment_stop_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_PAYLOAD_KEYS", f"k1:{SECRET_B64[:20]}")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert "TEMPORAL_PAYLOAD_KEYS is malformed" in str(error.value)
    assert SECRET_B64[:20] not in str(error.value)


def test_a_validation_error_from_settings_does_not_quote_the_keys() -> None:
    # Code that builds Settings directly sees pydantic's error, which would quote its input.
    with pytest.raises(Exception) as error:
        Settings(temporal_payload_keys=f"k1:{SECRET_B64},k1:{SECRET_B64}")  # type: ignore[arg-type]
    assert SECRET_B64 not in str(error.value)


def test_keys_are_a_secret_of_the_settings() -> None:
    text = f"{pair('k2', os.urandom(32))},k1:{SECRET_B64}"
    settings = load_settings(temporal_payload_keys=text)
    assert text in settings.secrets()
    assert SECRET_B64 not in repr(settings)
    assert SECRET_B64 not in str(settings.model_dump())


def test_empty_keys_count_as_unset() -> None:
    assert load_settings(temporal_payload_keys="  ").temporal_payload_keys is None


async def test_converter_with_keys_leaves_no_customer_data_in_payload_bytes() -> None:
    settings = load_settings(temporal_payload_keys=f"k1:{SECRET_B64}")
    converter = data_converter(settings)
    line = Line(customer_name=NAME, phone_number=PHONE)

    payloads = await converter.encode([line])
    wire = b"".join(payload.SerializeToString() for payload in payloads)
    assert PHONE.encode() not in wire
    assert NAME.encode() not in wire
    assert [p.metadata["encoding"] for p in payloads] == [ENCODING]
    assert await converter.decode(payloads, [Line]) == [line]


async def test_converter_with_keys_encrypts_failure_messages_and_stack_traces() -> None:
    settings = load_settings(temporal_payload_keys=f"k1:{SECRET_B64}")
    converter = data_converter(settings)
    failure = Failure()
    try:
        raise ApplicationError(f"line {PHONE} of {NAME} is busy", type="LineBusy")
    except ApplicationError as raised:
        await converter.encode_failure(raised, failure)

    wire = failure.SerializeToString()
    assert PHONE.encode() not in wire
    assert NAME.encode() not in wire
    assert failure.encoded_attributes.metadata["encoding"] == ENCODING
    assert failure.stack_trace == ""
    decoded = await converter.decode_failure(failure)
    assert isinstance(decoded, ApplicationError)
    assert decoded.message == f"line {PHONE} of {NAME} is busy"
    # The stack trace travelled inside the encrypted attributes (it quotes the raising line).
    assert "raise ApplicationError" in json.loads(failure.encoded_attributes.data)["stack_trace"]


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(level="INFO", fmt="json", stream=stream)
    yield stream
    logging.getLogger().handlers.clear()


async def test_converter_without_keys_warns_and_does_not_encrypt(logs: io.StringIO) -> None:
    converter = data_converter(load_settings())
    assert converter.payload_codec is None
    [payload] = await converter.encode([Line(customer_name=NAME, phone_number=PHONE)])
    assert PHONE.encode() in payload.data

    [warning] = [json.loads(line) for line in logs.getvalue().splitlines()]
    assert warning["level"] == "warning"
    assert warning["event"] == (
        "TEMPORAL_PAYLOAD_KEYS is not set: workflow payloads, including customer data, "
        "are stored in clear in Temporal's history"
    )


async def test_converter_with_keys_does_not_warn(logs: io.StringIO) -> None:
    data_converter(load_settings(temporal_payload_keys=f"k1:{SECRET_B64}"))
    assert logs.getvalue() == ""


def assert_no_key_material(text: str, *keys: bytes) -> None:
    for raw in keys:
        encoded = base64.b64encode(raw).decode()
        for shown in (encoded, encoded[:12], encoded[-16:], raw.hex(), repr(raw)):
            assert shown not in text
