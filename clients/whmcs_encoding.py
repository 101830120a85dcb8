"""Pure encoders for the WHMCS API's form conventions.

- PHP-style arrays: a list sent as `pid[0]=1&pid[1]=4`.
- `customfields[]` / `configoptions[]`: per product, `base64(serialize(array(id => value)))`
  where `serialize` is PHP's native serialization format.

Written from PHP's documented format, independently of any emulator.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence

# Floats are left out on purpose: WHMCS field values are strings and ids, and PHP's float
# formatting has corner cases not worth reproducing.
PhpScalar = str | int | bool | None
PhpValue = PhpScalar | Sequence["PhpValue"] | Mapping[str | int, "PhpValue"]


def php_array_fields(name: str, values: Sequence[str | int]) -> dict[str, str]:
    """Form fields `name[0]`, `name[1]`, ... for a PHP indexed array."""
    return {f"{name}[{index}]": str(value) for index, value in enumerate(values)}


def php_serialize(value: PhpValue) -> str:
    """PHP `serialize()` output for str/int/bool/None, lists (0-based arrays) and mappings.

    String lengths are counted in UTF-8 bytes, as PHP counts them.
    """
    if value is None:
        return "N;"
    if isinstance(value, bool):
        return f"b:{int(value)};"
    if isinstance(value, int):
        return f"i:{value};"
    if isinstance(value, str):
        return f's:{len(value.encode("utf-8"))}:"{value}";'
    items: list[tuple[str | int, PhpValue]]
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, Sequence):
        items = list(enumerate(value))
    else:
        raise TypeError(f"cannot serialize {type(value).__name__} for PHP")
    body = "".join(_php_key(key) + php_serialize(item) for key, item in items)
    return f"a:{len(items)}:{{{body}}}"


def _php_key(key: str | int) -> str:
    # PHP turns decimal-integer string keys into integer keys; mirror it so "5" and 5 agree.
    if isinstance(key, bool):
        raise TypeError("PHP array keys must be int or str")
    if isinstance(key, str) and key.lstrip("-").isdigit() and str(int(key)) == key:
        key = int(key)
    return php_serialize(key)


def encode_product_fields(values: Mapping[int, str | int]) -> str:
    """One product's `customfields[n]` / `configoptions[n]` value: base64(serialize(array))."""
    array: dict[str | int, PhpValue] = {int(key): value for key, value in values.items()}
    return base64.b64encode(php_serialize(array).encode("utf-8")).decode("ascii")
