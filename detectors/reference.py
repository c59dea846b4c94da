"""Reference distributions: what "normal" looks like for one feature.

A reference is built once, from a baseline file or from the first values of
the stream, and then only read. It keeps a fixed-size summary (bin edges and
proportions, or the top categories), never the raw values, so its memory does
not depend on how much data it was built from.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors import SnapshotError

#: Share given to an empty bin so PSI stays finite (log of zero). The usual
#: choice in credit-risk practice, where PSI comes from.
PSI_EPSILON = 1e-4

OTHER_CATEGORY = "__other__"
_SUMMARY_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def psi(expected: np.ndarray, actual_counts: np.ndarray) -> float:
    """Population stability index of observed counts against expected shares.

    ``sum((a - e) * ln(a / e))`` over bins, with shares floored at
    ``PSI_EPSILON``.

    Examples
    --------
    Half/half expected, 30/70 observed:
    ``(0.3 - 0.5) ln(0.3/0.5) + (0.7 - 0.5) ln(0.7/0.5) = 0.1022 + 0.0673``

    >>> round(psi(np.array([0.5, 0.5]), np.array([30, 70])), 4)
    0.1695
    >>> psi(np.array([0.25, 0.75]), np.array([1, 3]))
    0.0
    """
    total = actual_counts.sum()
    if total == 0:
        return 0.0
    actual = np.maximum(actual_counts / total, PSI_EPSILON)
    expected = np.maximum(expected, PSI_EPSILON)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def numeric_summary(values: np.ndarray, missing: int = 0) -> dict[str, Any]:
    """Readable summary of numeric values (NaN-free) plus a missing count."""
    count = int(values.size) + missing
    summary: dict[str, Any] = {"count": count, "null_rate": missing / count if count else 0.0}
    if values.size:
        qs = np.quantile(values, _SUMMARY_QUANTILES)
        summary.update(
            mean=float(values.mean()),
            std=float(values.std()),
            min=float(values.min()),
            max=float(values.max()),
            quantiles={f"p{round(q * 100):02d}": float(v) for q, v in zip(_SUMMARY_QUANTILES, qs, strict=False)},
        )
    return summary


def categorical_summary(counts: Counter[str], missing: int = 0, top: int = 5) -> dict[str, Any]:
    """Readable summary of category counts: the most common shares."""
    present = sum(counts.values())
    count = present + missing
    return {
        "count": count,
        "null_rate": missing / count if count else 0.0,
        "top_categories": {
            category: value / present for category, value in counts.most_common(top)
        }
        if present
        else {},
    }


@dataclass(frozen=True)
class NumericReference:
    """Quantile bins of the reference and its summary statistics."""

    edges: np.ndarray  # inner bin edges, ascending; len(edges) + 1 bins
    proportions: np.ndarray
    mean: float
    std: float
    summary: dict[str, Any]

    @classmethod
    def build(cls, values: np.ndarray, bins: int, missing: int = 0) -> NumericReference:
        """Bins at the reference's quantiles, so each holds about 1/bins of it."""
        if bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        values = values[~np.isnan(values)]
        if values.size == 0:
            raise ValueError("a numeric reference needs at least one non-missing value")
        edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1)
        std = float(values.std())
        return cls(
            edges=edges,
            proportions=counts / counts.sum(),
            mean=float(values.mean()),
            # A constant reference has no spread; 1.0 keeps z-scores finite.
            std=std if std > 0 else 1.0,
            summary=numeric_summary(values, missing),
        )

    def bin_counts(self, values: np.ndarray) -> np.ndarray:
        """Counts of non-missing ``values`` in the reference's bins."""
        return np.bincount(
            np.searchsorted(self.edges, values, side="right"), minlength=self.edges.size + 1
        )

    def to_plain(self) -> dict[str, Any]:
        return {
            "kind": "numeric",
            "edges": self.edges.tolist(),
            "proportions": self.proportions.tolist(),
            "mean": self.mean,
            "std": self.std,
            "summary": self.summary,
        }

    @classmethod
    def from_plain(cls, data: dict[str, Any]) -> NumericReference:
        return cls(
            edges=np.asarray(data["edges"], dtype=np.float64),
            proportions=np.asarray(data["proportions"], dtype=np.float64),
            mean=float(data["mean"]),
            std=float(data["std"]),
            summary=dict(data["summary"]),
        )


@dataclass(frozen=True)
class CategoricalReference:
    """The most common reference categories; everything else shares one bucket."""

    categories: tuple[str, ...]
    proportions: np.ndarray  # one per category, then the "other/unseen" bucket
    summary: dict[str, Any]

    @classmethod
    def build(
        cls, values: Iterable[str | None], max_categories: int
    ) -> CategoricalReference:
        if max_categories < 1:
            raise ValueError(f"max_categories must be >= 1, got {max_categories}")
        counts: Counter[str] = Counter()
        missing = 0
        for value in values:
            if value is None:
                missing += 1
            else:
                counts[value] += 1
        return cls.from_counts(counts, missing, max_categories)

    @classmethod
    def from_counts(
        cls, counts: Counter[str], missing: int, max_categories: int
    ) -> CategoricalReference:
        present = sum(counts.values())
        if present == 0:
            raise ValueError("a categorical reference needs at least one non-missing value")
        kept = counts.most_common(max_categories)
        shares = [n / present for _, n in kept]
        shares.append(max(0.0, 1.0 - sum(shares)))
        return cls(
            categories=tuple(category for category, _ in kept),
            proportions=np.asarray(shares),
            summary=categorical_summary(counts, missing),
        )

    def bucket_counts(self, values: Sequence[str]) -> np.ndarray:
        """Counts per reference category, the last bucket holding all others."""
        index = {category: i for i, category in enumerate(self.categories)}
        other = len(self.categories)
        codes = [index.get(value, other) for value in values]
        return np.bincount(np.asarray(codes, dtype=np.intp), minlength=other + 1)

    def to_plain(self) -> dict[str, Any]:
        return {
            "kind": "categorical",
            "categories": list(self.categories),
            "proportions": self.proportions.tolist(),
            "summary": self.summary,
        }

    @classmethod
    def from_plain(cls, data: dict[str, Any]) -> CategoricalReference:
        return cls(
            categories=tuple(data["categories"]),
            proportions=np.asarray(data["proportions"], dtype=np.float64),
            summary=dict(data["summary"]),
        )


Reference = NumericReference | CategoricalReference


def reference_from_plain(data: dict[str, Any]) -> Reference:
    """Rebuild a reference from ``to_plain()`` output."""
    kind = data.get("kind") if isinstance(data, dict) else None
    try:
        if kind == "numeric":
            return NumericReference.from_plain(data)
        if kind == "categorical":
            return CategoricalReference.from_plain(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"malformed {kind} reference: {exc}") from exc
    raise SnapshotError(f"unknown reference kind {kind!r}")
