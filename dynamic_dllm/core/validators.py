"""Validators: one home for the checks on user-given values (policy parameters, checkpoint config
fields). Each raises one ``ValueError`` line naming the value and the rule."""

from __future__ import annotations

import math
from typing import Iterable, Optional


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def int_at_least(low: int):
    """attrs validator: an integer ``>= low``."""
    def check(instance, attribute, value):
        if not _is_int(value) or value < low:
            raise ValueError(f"{attribute.name} must be an integer >= {low}, got {value!r}")
    return check


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
