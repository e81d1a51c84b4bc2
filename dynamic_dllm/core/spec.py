"""Policy specs: ``name[:key=value[,key=value…]]``; cache specs compose with ``+``.

Example: ``dcu:budget=32+window:size=32`` → ``[("dcu", {"budget": 32}), ("window", {"size": 32})]``.
Values are read as bool (``true``/``false``), None (``none``/``null``), int (ASCII digits with an
optional sign), float (ASCII decimal or exponent notation, ``nan``, ``inf``) or else the stripped
string — so ``４`` or ``1_0`` stay strings and the policy's validator names them. A float that
over- or underflows (``1e400``, ``1e-400``), an empty value and a key given twice are errors.
"""

from __future__ import annotations

import math
import re

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:nan|inf|infinity)", re.I)


def parse_value(text: str, key: str = "value"):
    value = text.strip()
    low = value.lower()
    if not value:
        raise ValueError(f"empty value for {key}")
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    if _INT.fullmatch(value):
        return int(value)
    if _FLOAT.fullmatch(value):
        number = float(value)
        if math.isinf(number) and "inf" not in low:
            raise ValueError(f"{key}={value} overflows a float")
        if number == 0.0 and re.search(r"[1-9]", value.split("e")[0].split("E")[0]):
            raise ValueError(f"{key}={value} underflows to 0 as a float")
        return number
    return value


def parse_one(spec: str) -> tuple[str, dict]:
    name, _, rest = spec.strip().partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"empty policy name in spec {spec!r}")
    params = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"bad parameter {item!r} in spec {spec!r}: expected key=value")
        if key in params:
            raise ValueError(f"parameter {key!r} given twice in spec {spec!r}")
        params[key] = parse_value(value, key)
    return name, params


def parse_spec(spec: str) -> list[tuple[str, dict]]:
    """Split a (possibly ``+``-composed) spec into ``(name, params)`` pairs; a name may appear once."""
    if not spec or not spec.strip():
        raise ValueError("empty policy spec")
    parts = [parse_one(part) for part in spec.split("+")]
    names = [name for name, _ in parts]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"policy {name!r} appears twice in spec {spec!r}; give it once, with all its parameters")
    return parts
