"""Typed columns from the raw JSON values of one feature.

Events carry loosely typed values (numbers, strings, booleans, null). A
feature has one kind; values of another type are counted as *invalid* (a
schema break upstream) and treated as missing, never silently coerced.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from itertools import repeat
from typing import Literal

import numpy as np

FeatureKind = Literal["numeric", "categorical", "boolean"]
FEATURE_KINDS: tuple[FeatureKind, ...] = ("numeric", "categorical", "boolean")

_NUMERIC_TYPES = frozenset({int, float, type(None)})
_TEXT_TYPES = frozenset({str, type(None)})
_BOOLEAN_TYPES = frozenset({bool, type(None)})

#: What ``Column.json_types`` codes each row as (by index): null/absent/NaN, number, string, boolean,
#: anything else (a list or an object). A boolean is not a number here, as in ``to_numeric``.
JSON_TYPES = ("missing", "number", "string", "bool", "other")
_JSON_CODES: dict[type, int] = {type(None): 0, int: 1, float: 1, str: 2, bool: 3}
_OTHER = 4


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


def category_text(value: object) -> str:
    """A categorical value as text: booleans as true/false, numbers by their text."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return value if isinstance(value, str) else str(value)


def to_categorical(values: Sequence[object]) -> tuple[list[str | None], int]:
    """Category labels (None for missing); numbers are taken by their text."""
    if set(map(type, values)) <= _TEXT_TYPES:  # the common case, checked in C
        return list(values), 0  # type: ignore[arg-type]
    return [None if value is None else category_text(value) for value in values], 0


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


class Column:
    """One feature's values in a batch, typed once for the kind its monitor needs.

    Built from the decoded JSON values of each row (``from_values``) or from an
    array already typed by the producer (``from_numbers``, ``from_codes``).
    The monitor asks for the view of its feature's kind: a float64 array with
    NaN for missing, or integer codes into a list of category names (-1 for
    missing); values of another type are counted as invalid there.
    """

    __slots__ = ("_raw", "_numeric", "_coded", "_size", "_integral")

    def __init__(self, raw: Sequence[object] | None, size: int) -> None:
        self._raw = raw
        self._size = size
        self._numeric: tuple[np.ndarray, int] | None = None
        self._coded: dict[FeatureKind, tuple[np.ndarray, list[str], int]] = {}
        self._integral = False  # numbers sent as integers: their text has no ".0"

    @classmethod
    def from_values(cls, values: Sequence[object]) -> Column:
        return cls(values, len(values))

    @classmethod
    def from_numbers(cls, numbers: np.ndarray, integral: bool = False) -> Column:
        """Numbers typed by the producer (NaN: missing); ``integral``: they were integers, so a categorical
        view names them as a JSON integer's text ("3", not "3.0")."""
        column = cls(None, len(numbers))
        column._numeric = (np.asarray(numbers, dtype=np.float64), 0)
        column._integral = integral
        return column

    @classmethod
    def from_codes(cls, codes: np.ndarray, names: list[str], kind: FeatureKind = "categorical") -> Column:
        """Codes into ``names`` (-1: missing): text (``categorical``) or booleans (``boolean``, names
        "true"/"false")."""
        if kind == "numeric":
            raise ValueError("codes are categorical or boolean")
        column = cls(None, len(codes))
        column._coded[kind] = (np.asarray(codes, dtype=np.int64), list(names), 0)
        return column

    def __len__(self) -> int:
        return self._size

    def first_present(self) -> int | None:
        """Row of the first non-missing value, or None when all are missing."""
        if self._raw is not None:
            return next((i for i, value in enumerate(self._raw) if value is not None), None)
        if self._numeric is not None:
            present = np.flatnonzero(~np.isnan(self._numeric[0]))
        else:
            present = np.flatnonzero(next(iter(self._coded.values()))[0] >= 0)
        return int(present[0]) if present.size else None

    def infer_kind(self) -> FeatureKind | None:
        if self._raw is not None:
            return infer_kind(self._raw)
        if self.first_present() is None:
            return None
        if self._numeric is not None:
            return "numeric"
        return next(iter(self._coded))

    def take(self, rows: np.ndarray) -> Column:
        """The values of these rows (ascending indices), keeping the views already typed.

        A view that met no value of another type says all there is to say about the rows
        (what is missing, what each value is): the raw values are then not copied.
        """
        clean = (self._numeric is not None and not self._numeric[1]) or any(
            not invalid for _, _, invalid in self._coded.values())  # fmt: skip
        raw = None if self._raw is None or clean else [self._raw[i] for i in rows.tolist()]
        taken = Column(raw, len(rows))
        taken._integral = self._integral
        if self._numeric is not None:
            values, _ = self._numeric
            part = values[rows]
            invalid = 0 if not self._numeric[1] else self._count_invalid_numeric(rows)
            taken._numeric = (part, invalid)
        for kind, (codes, names, invalid) in self._coded.items():
            if self._raw is None or not invalid:
                taken._coded[kind] = (codes[rows], names, 0)
        return taken

    def _count_invalid_numeric(self, rows: np.ndarray) -> int:
        assert self._raw is not None
        return sum(1 for i in rows.tolist() if self._raw[i] is not None and type(self._raw[i]) not in (int, float))

    def json_types(self) -> np.ndarray:
        """The JSON type of each row, as int8 codes into ``JSON_TYPES`` (0 missing: null, absent or NaN).

        A column of one kind (the common case) takes one numpy call, reusing the typed view its
        feature monitor built already where there is one; only a column mixing kinds is looked up
        row by row, and that in C (map over a dict), never in a Python loop.
        """
        if self._raw is None:
            return self._typed_json_types()
        raw, size = self._raw, self._size
        seen = set(map(type, raw))
        none = type(None) in seen
        if seen <= _NUMERIC_TYPES:
            if float not in seen and not none:  # ints only: nothing missing, no NaN
                return np.ones(size, np.int8)
            return (~np.isnan(self.numeric()[0])).view(np.int8)
        if seen <= _TEXT_TYPES or seen <= _BOOLEAN_TYPES:
            kind: FeatureKind = "categorical" if str in seen else "boolean"
            code = np.int8(2 if kind == "categorical" else 3)
            if not none:
                return np.full(size, code, np.int8)
            view = self._coded.get(kind)
            present = (view[0] >= 0 if view is not None
                       else np.fromiter(map(operator.is_not, raw, repeat(None)), np.bool_, size))  # fmt: skip
            return present.view(np.int8) * code
        types = np.fromiter(map(_JSON_CODES.get, map(type, raw), repeat(_OTHER)), np.int8, size)
        if float in seen:  # NaN is missing, as in every typed view
            types[(types == 1) & np.isnan(self.numeric()[0])] = 0
        return types

    def _typed_json_types(self) -> np.ndarray:
        """Types without raw values: the first typed view that met no value of another type says what each
        present row is (numbers from ``from_numbers``, booleans, else strings as from ``from_codes``)."""
        if self._numeric is not None and not self._numeric[1]:
            return (~np.isnan(self._numeric[0])).view(np.int8)
        views: tuple[tuple[FeatureKind, int], ...] = (("boolean", 3), ("categorical", 2))
        for kind, code in views:
            view = self._coded.get(kind)
            if view is not None and (kind == "categorical" or not view[2]):
                return (view[0] >= 0).view(np.int8) * np.int8(code)
        return np.zeros(self._size, np.int8)

    def numeric(self) -> tuple[np.ndarray, int]:
        """Float64 values (NaN for missing) and how many values were of another type."""
        if self._numeric is None:
            if self._raw is None:
                codes = next(iter(self._coded.values()))[0]
                self._numeric = (np.full(self._size, np.nan), int((codes >= 0).sum()))
            else:
                self._numeric = to_numeric(self._raw)
        return self._numeric

    def coded(self, kind: FeatureKind) -> tuple[np.ndarray, list[str], int]:
        """Integer codes into category names (-1 for missing) and the count of invalid values.

        ``categorical`` takes numbers by their text; ``boolean`` takes only true/false.
        """
        found = self._coded.get(kind)
        if found is None:
            if self._raw is None:
                if self._numeric is not None and kind == "categorical":
                    found = _factorize(self._number_texts(), 0)
                elif kind == "categorical" and "boolean" in self._coded:  # booleans by their text, as sent in JSON
                    codes, names, _ = self._coded["boolean"]
                    found = (codes, names, 0)
                else:
                    values, invalid = self.numeric()
                    found = (np.full(self._size, -1, dtype=np.int64), [], int((~np.isnan(values)).sum()) + invalid)
            else:
                labels, invalid = (to_boolean if kind == "boolean" else to_categorical)(self._raw)
                found = _factorize(labels, invalid)
            self._coded[kind] = found
        return found


    def _number_texts(self) -> list[str | None]:
        """The typed numbers as a JSON value's text would be (None for missing)."""
        assert self._numeric is not None
        values = self._numeric[0]
        present = ~np.isnan(values)
        if self._integral:  # integers up to 2^53, exact in a float
            return [str(int(value)) if keep else None for value, keep in zip(values.tolist(), present.tolist(),
                                                                             strict=True)]  # fmt: skip
        return [category_text(value) if keep else None for value, keep in zip(values.tolist(), present.tolist(),
                                                                              strict=True)]  # fmt: skip


def _factorize(labels: list[str | None], invalid: int) -> tuple[np.ndarray, list[str], int]:
    """Codes in order of first appearance; two passes in C (dict.fromkeys, map over dict lookups)."""
    names = [label for label in dict.fromkeys(labels) if label is not None]
    index: dict[str | None, int] = {name: i for i, name in enumerate(names)}
    index[None] = -1
    codes = np.fromiter(map(index.__getitem__, labels), np.int64, len(labels))
    return codes, names, invalid
