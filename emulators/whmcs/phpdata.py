"""The PHP data formats WHMCS speaks: `serialize()`/`unserialize()` and `name[i]=v` form arrays.

Only what the API carries is supported: null, bool, int, float, string and arrays (returned as
dicts keyed by int or str). Strings are measured in UTF-8 bytes, as PHP measures them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

PhpKey = int | str

_ARRAY_FIELD = re.compile(r"^(?P<name>[^\[\]]+)\[(?P<index>[^\[\]]*)\]$")


class PhpDataError(ValueError):
    """The data is not valid PHP serialized data."""


def serialize(value: Any) -> bytes:
    if value is None:
        return b"N;"
    if isinstance(value, bool):
        return b"b:%d;" % int(value)
    if isinstance(value, int):
        return b"i:%d;" % value
    if isinstance(value, float):
        return b"d:" + repr(value).encode() + b";"
    if isinstance(value, str):
        raw = value.encode()
        return b's:%d:"' % len(raw) + raw + b'";'
    if isinstance(value, list | tuple):
        value = dict(enumerate(value))
    if isinstance(value, dict):
        body = b"".join(serialize(_key(k)) + serialize(v) for k, v in value.items())
        return b"a:%d:{" % len(value) + body + b"}"
    raise TypeError(f"cannot serialize {type(value).__name__}")


def unserialize(data: bytes) -> Any:
    value, end = _parse(data, 0)
    if end != len(data):
        raise PhpDataError("trailing data after the serialized value")
    return value


def form_keyed(items: Iterable[tuple[str, str]], name: str) -> dict[int, str]:
    """`name[n]=…` fields by their index, as PHP builds `$_POST[name]`: a sparse array keeps
    its indexes (`domain[1]` alone is the second line's, not the first's), `name[]` takes the
    next index, a bare `name` is index 0. Keys that are not numbers are left out."""
    keyed: dict[int, str] = {}
    for key, value in items:
        if key == name:
            keyed[0] = value
            continue
        match = _ARRAY_FIELD.match(key)
        if match is None or match["name"] != name:
            continue
        index = match["index"]
        if index == "":
            keyed[max(keyed, default=-1) + 1] = value
        elif index.isdigit():
            keyed[int(index)] = value
    return dict(sorted(keyed.items()))


def _key(key: Any) -> PhpKey:
    # PHP turns numeric-string keys into integers.
    if isinstance(key, str) and re.fullmatch(r"-?[1-9][0-9]*|0", key):
        return int(key)
    if isinstance(key, int | str):
        return key
    raise TypeError(f"cannot use {type(key).__name__} as a PHP array key")


def _parse(data: bytes, at: int) -> tuple[Any, int]:
    try:
        kind = data[at : at + 1]
        if kind == b"N":
            return None, _expect(data, at + 1, b";")
        if kind in (b"b", b"i", b"d"):
            colon = _expect(data, at + 1, b":")
            end = data.index(b";", colon)
            text = data[colon:end].decode()
            if kind == b"b":
                return text == "1", end + 1
            return (int(text) if kind == b"i" else float(text)), end + 1
        if kind == b"s":
            colon = _expect(data, at + 1, b":")
            sep = data.index(b":", colon)
            length = int(data[colon:sep])
            start = _expect(data, sep + 1, b'"')
            text = data[start : start + length].decode()
            end = _expect(data, start + length, b'"')
            return text, _expect(data, end, b";")
        if kind == b"a":
            colon = _expect(data, at + 1, b":")
            sep = data.index(b":", colon)
            count = int(data[colon:sep])
            at = _expect(data, sep + 1, b"{")
            result: dict[PhpKey, Any] = {}
            for _ in range(count):
                key, at = _parse(data, at)
                if not isinstance(key, int | str) or isinstance(key, bool):
                    raise PhpDataError("array keys must be integers or strings")
                result[key], at = _parse(data, at)
            return result, _expect(data, at, b"}")
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        if isinstance(exc, PhpDataError):
            raise
        raise PhpDataError(f"malformed serialized data at byte {at}") from exc
    raise PhpDataError(f"unknown type {kind!r} at byte {at}")


def _expect(data: bytes, at: int, token: bytes) -> int:
    if data[at : at + len(token)] != token:
        raise PhpDataError(f"expected {token!r} at byte {at}")
    return at + len(token)
