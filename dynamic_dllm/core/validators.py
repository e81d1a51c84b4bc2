"""Validators: the one home for checks on user-given values (policy parameters, generation
settings, checkpoint config fields). Each attrs validator raises one ``ValueError`` line naming
the field, the value and the rule; ``note`` adds what the value means (e.g. "APD initial threshold").
"""

from __future__ import annotations

import math
from typing import Iterable, Optional


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _suffix(note: str) -> str:
    return f" ({note})" if note else ""


def integer(low: Optional[int] = None, high: Optional[int] = None, optional: bool = False, odd: bool = False,
            note: str = ""):
    """attrs validator: an integer (not bool) in ``[low, high]``; None too when ``optional``."""
    rule = "an integer" if low is None else ("a positive integer" if low == 1 else f"an integer >= {low}")
    if high is not None:
        rule = f"an integer in [{low}, {high}]"
    if odd:
        rule = rule.replace("integer", "odd integer")

    def check(instance, attribute, value):
        if optional and value is None:
            return
        if (not _is_int(value) or (low is not None and value < low) or (high is not None and value > high)
                or (odd and value % 2 == 0)):
            raise ValueError(f"{attribute.name} must be {rule}{' or none' if optional else ''}, got {value!r}{_suffix(note)}")
    return check


def number_in(note: str = "", low: float = -math.inf, high: float = math.inf, low_open: bool = False,
              high_open: bool = False, optional: bool = False):
    """attrs validator: a finite real number (not bool) in ``[low, high]`` (ends open as asked);
    None too when ``optional``."""
    if math.isinf(low) and math.isinf(high):
        where = ""
    elif math.isinf(high):
        where = f" {'>' if low_open else '>='} {low:g}"
    else:
        where = f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def check(instance, attribute, value):
        if optional and value is None:
            return
        ok = _is_number(value) and math.isfinite(value)
        ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not ok:
            raise ValueError(f"{attribute.name} must be a finite number{where}{' or none' if optional else ''}, "
                             f"got {value!r}{_suffix(note)}")
    return check


def boolean(instance, attribute, value):
    """attrs validator: True or False (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise ValueError(f"{attribute.name} must be true or false, got {value!r}")


def one_of(options: Iterable[str], note: str = ""):
    """attrs validator: one of ``options``."""
    options = tuple(options)

    def check(instance, attribute, value):
        if value not in options:
            raise ValueError(f"{attribute.name} must be one of {', '.join(options)}; got {value!r}{_suffix(note)}")
    return check


def with_defaults(defaults: dict, config: dict) -> dict:
    """A checkpoint config over an adapter's defaults; a field set to null counts as absent."""
    return {**defaults, **{k: v for k, v in config.items() if v is not None}}


def check_config_fields(config: dict, positive: Iterable[str], numbers: Iterable[str] = (),
                        token_ids: Iterable[str] = (), vocab: Optional[int] = None) -> None:
    """A checkpoint config's fields: ``positive`` ones are integers ≥ 1 (None = absent, allowed),
    ``numbers`` finite positive numbers, ``token_ids`` integers in ``[0, vocab)``. The message names
    the config.json field."""
    for key in positive:
        value = config.get(key)
        if value is not None and (not _is_int(value) or value < 1):
            raise ValueError(f"config.json: {key} must be a positive integer, got {value!r}")
    for key in numbers:
        value = config.get(key)
        if value is not None and (not _is_number(value) or not math.isfinite(value) or value <= 0):
            raise ValueError(f"config.json: {key} must be a finite number > 0, got {value!r}")
    for key in token_ids:
        value = config.get(key)
        if value is not None and (not _is_int(value) or value < 0 or (vocab is not None and value >= vocab)):
            raise ValueError(f"config.json: {key} must be a token id in [0, {vocab}), got {value!r}")
