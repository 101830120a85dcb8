"""PHP array and serialized-field encoding for WHMCS, against PHP's documented format."""

from __future__ import annotations

import base64
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from clients.whmcs import AddOrderRequest, OrderLine
from clients.whmcs_encoding import encode_product_fields, php_array_fields, php_serialize


def php_unserialize(data: str) -> object:
    """A small independent reader of PHP's serialize() format, enough to check round trips."""
    raw = data.encode("utf-8")

    def value(pos: int) -> tuple[object, int]:
        tag = chr(raw[pos])
        if tag == "N":
            return None, pos + 2
        if tag in "bi":
            end = raw.index(b";", pos)
            number = int(raw[pos + 2 : end])
            return (bool(number) if tag == "b" else number), end + 1
        if tag == "s":
            colon = raw.index(b":", pos + 2)
            length = int(raw[pos + 2 : colon])
            start = colon + 2
            assert raw[start + length : start + length + 2] == b'";'
            return raw[start : start + length].decode("utf-8"), start + length + 2
        if tag == "a":
            colon = raw.index(b":", pos + 2)
            count = int(raw[pos + 2 : colon])
            pos = colon + 2
            result: dict[object, object] = {}
            for _ in range(count):
                key, pos = value(pos)
                item, pos = value(pos)
                result[key] = item
            assert raw[pos : pos + 1] == b"}"
            return result, pos + 1
        raise AssertionError(f"unknown tag {tag!r}")

    parsed, end = value(0)
    assert end == len(raw)
    return parsed


def test_php_array_fields_number_from_zero() -> None:
    assert php_array_fields("pid", [1, 4]) == {"pid[0]": "1", "pid[1]": "4"}
    assert php_array_fields("pid", []) == {}


def test_known_vectors_match_php_serialize() -> None:
    assert php_serialize(None) == "N;"
    assert php_serialize(True) == "b:1;"
    assert php_serialize(-7) == "i:-7;"
    assert php_serialize("héllo") == 's:6:"héllo";'
    assert php_serialize(["a", 1]) == 'a:2:{i:0;s:1:"a";i:1;i:1;}'
    assert php_serialize({"5": "x", "k": None}) == 'a:2:{i:5;s:1:"x";s:1:"k";N;}'


def test_custom_fields_are_base64_of_serialized_array() -> None:
    # base64_encode(serialize([12 => "801000000000001AAA"])) in PHP
    encoded = encode_product_fields({12: "801000000000001AAA"})
    assert base64.b64decode(encoded) == b'a:1:{i:12;s:18:"801000000000001AAA";}'


@given(st.dictionaries(st.integers(min_value=0, max_value=10_000), st.text(max_size=40)))
def test_custom_fields_round_trip(fields: dict[int, str]) -> None:
    decoded = base64.b64decode(encode_product_fields(fields)).decode("utf-8")
    assert php_unserialize(decoded) == fields


scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.integers() | st.text(alphabet="abc", min_size=1), inner, max_size=4)
    ),
    max_leaves=12,
)


def _as_php(value: object) -> object:
    if isinstance(value, list):
        return {index: _as_php(item) for index, item in enumerate(value)}
    if isinstance(value, dict):
        return {key: _as_php(item) for key, item in value.items()}
    return value


@given(values)
def test_serialize_round_trips(value: object) -> None:
    assert php_unserialize(php_serialize(value)) == _as_php(value)  # type: ignore[arg-type]


def test_add_order_form_uses_php_arrays_and_serialized_fields() -> None:
    request = AddOrderRequest(
        client_id=7,
        payment_method="stripe",
        lines=[
            OrderLine(pid=3, billingcycle="monthly", customfields={9: "802000000000001AAA"}),
            OrderLine(pid=5, billingcycle="onetime", qty=2, priceoverride=Decimal("1500")),
        ],
        noemail=True,
    )
    form = request.to_form()
    assert {key: value for key, value in form.items() if not key.startswith("customfields")} == {
        "clientid": "7",
        "paymentmethod": "stripe",
        "pid[0]": "3",
        "pid[1]": "5",
        "qty[0]": "1",
        "qty[1]": "2",
        "billingcycle[0]": "monthly",
        "billingcycle[1]": "onetime",
        "priceoverride[1]": "1500",
        "noemail": "1",
    }
    assert [key for key in form if key.startswith("customfields")] == ["customfields[0]"]
    assert php_unserialize(base64.b64decode(form["customfields[0]"]).decode()) == {
        9: "802000000000001AAA"
    }
