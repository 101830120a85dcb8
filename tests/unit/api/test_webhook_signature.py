"""The WHMCS webhook's signature check: HMAC-SHA256 over `timestamp + "." + body`, in a window."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.routes.webhooks import SignatureError, sign, verify_signature

SECRET = "whsec-test-0123"
NOW = 1_700_000_000
BODY = b'{"event":"InvoicePaid","client_id":42}'
# Computed outside Python (`openssl dgst -sha256 -hmac`), as a PHP hook's hash_hmac would: the
# scheme is a wire contract, so a change to it must break this test, not follow along.
KNOWN = "sha256=84ba6f47650270fc8ef5d92a0fc1d34fdaca018f03ad2cbcc3224af76f635ba0"
# Digits Python's int() reads as well as ASCII ones; the header must be ASCII.
ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x660 + d) for d in range(10)))


def check(
    *,
    timestamp: str | None = str(NOW),
    signature: str | None = KNOWN,
    body: bytes = BODY,
    now: float = NOW,
    secret: str = SECRET,
) -> None:
    verify_signature(
        secret, timestamp=timestamp, signature=signature, body=body, now=now, tolerance=300
    )


def test_the_signature_is_the_documented_hmac_of_timestamp_dot_body() -> None:
    assert sign(SECRET, str(NOW), BODY) == KNOWN
    check()


def test_upper_case_hex_and_surrounding_spaces_are_accepted() -> None:
    check(signature=" sha256=" + KNOWN.removeprefix("sha256=").upper() + " ")


@pytest.mark.parametrize("skew", [-300, 300, 0])
def test_a_timestamp_within_the_tolerance_either_way_is_accepted(skew: int) -> None:
    check(now=NOW + skew)


@pytest.mark.parametrize("skew", [-301, 301, 86400])
def test_a_timestamp_outside_the_tolerance_is_refused_even_when_correctly_signed(
    skew: int,
) -> None:
    with pytest.raises(SignatureError, match="window"):
        check(now=NOW + skew)


def test_the_timestamp_is_covered_by_the_signature() -> None:
    # Moving a captured request's timestamp into the window must not keep its signature valid.
    with pytest.raises(SignatureError, match="does not match"):
        check(timestamp=str(NOW + 1), now=NOW)


def test_another_secret_does_not_verify() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        check(secret=SECRET + "x")


@given(st.binary(max_size=200))
def test_any_other_body_does_not_verify(body: bytes) -> None:
    if body == BODY:
        return
    with pytest.raises(SignatureError, match="does not match"):
        check(body=body)


@pytest.mark.parametrize(
    ("timestamp", "signature", "reason"),
    [
        (None, KNOWN, "required"),
        (str(NOW), None, "required"),
        ("", KNOWN, "required"),
        (str(NOW), "", "required"),
        ("1700000000.5", KNOWN, "Unix time"),
        ("-1700000000", KNOWN, "Unix time"),
        (str(NOW).translate(ARABIC_INDIC), KNOWN, "Unix time"),
        (str(NOW) + "\n", KNOWN, "Unix time"),
        (str(NOW), KNOWN.removeprefix("sha256="), "sha256="),
        (str(NOW), "sha1=" + KNOWN.removeprefix("sha256="), "sha256="),
        (str(NOW), KNOWN[:-1], "sha256="),
        (str(NOW), KNOWN + "0", "sha256="),
    ],
)
def test_missing_or_malformed_headers_are_refused(
    timestamp: str | None, signature: str | None, reason: str
) -> None:
    with pytest.raises(SignatureError, match=reason):
        check(timestamp=timestamp, signature=signature)
