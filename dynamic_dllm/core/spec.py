"""Policy specs: ``name[:key=value[,key=value…]]``; cache specs compose with ``+``.

Example: ``dcu:budget=32+window:size=32`` → ``[("dcu", {"budget": 32}), ("window", {"size": 32})]``.
Values are read as int, float, bool (true/false) or None (none) when they parse as such, else str.
"""

from __future__ import annotations


def parse_value(text: str):
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_one(spec: str) -> tuple[str, dict]:
    name, _, rest = spec.strip().partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"empty policy name in spec {spec!r}")
    params = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"bad parameter {item!r} in spec {spec!r}: expected key=value")
        params[key.strip()] = parse_value(value)
    return name, params


def parse_spec(spec: str) -> list[tuple[str, dict]]:
    """Split a (possibly ``+``-composed) spec into ``(name, params)`` pairs."""
    if not spec or not spec.strip():
        raise ValueError("empty policy spec")
    return [parse_one(part) for part in spec.split("+")]
