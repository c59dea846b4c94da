"""Typed columns from the raw JSON values of one feature.

Events carry loosely typed values (numbers, strings, booleans, null). A
feature has one kind; values of another type are counted as *invalid* (a
schema break upstream) and treated as missing, never silently coerced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

FeatureKind = Literal["numeric", "categorical", "boolean"]
FEATURE_KINDS: tuple[FeatureKind, ...] = ("numeric", "categorical", "boolean")

_NUMERIC_TYPES = frozenset({int, float, type(None)})
_TEXT_TYPES = frozenset({str, type(None)})


def infer_kind(values: Sequence[object]) -> FeatureKind | None:
    """Kind of the first non-null value, or None when every value is null."""
    for value in values:
        if value is None:
            continue
        if isinstance(value, bool):
            return "boolean"
        if isinstance(value, (int, float)):
            return "numeric"
        return "categorical"
    return None


def to_numeric(values: Sequence[object]) -> tuple[np.ndarray, int]:
    """Float64 column with NaN for missing values, and the count of invalid values.

    The fast path (only int, float and None present) is one numpy call; numpy
    would also parse numeric strings and booleans, which we must reject, hence
    the type check first.
    """
    if set(map(type, values)) <= _NUMERIC_TYPES:
        return np.array(values, dtype=np.float64), 0
    column = np.full(len(values), np.nan)
    invalid = 0
    for i, value in enumerate(values):
        if value is None:
            continue
        if type(value) in (int, float):
            column[i] = value
        else:
            invalid += 1
    return column, invalid


def _category(value: object) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return value if isinstance(value, str) else str(value)


def to_categorical(values: Sequence[object]) -> tuple[list[str | None], int]:
    """Category labels (None for missing); numbers are taken by their text."""
    if set(map(type, values)) <= _TEXT_TYPES:  # the common case, checked in C
        return list(values), 0  # type: ignore[arg-type]
    return [None if value is None else _category(value) for value in values], 0


def to_boolean(values: Sequence[object]) -> tuple[list[str | None], int]:
    """Booleans as the categories "true"/"false"; anything else is invalid."""
    column: list[str | None] = []
    invalid = 0
    for value in values:
        if value is True:
            column.append("true")
        elif value is False:
            column.append("false")
        else:
            invalid += value is not None
            column.append(None)
    return column, invalid
