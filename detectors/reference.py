"""Reference distributions: what "normal" looks like for one feature.

A reference is built once, from a baseline file or from the first values of
the stream, and then only read. Its size is fixed whatever data built it
(Apache DataSketches: frequent items and HyperLogLog for categories, KLL for
large numeric baselines). Numeric references are a weighted quantile summary of at most
``DEFAULT_REFERENCE_POINTS`` points, compacted deterministically from the rows
(so a replay rebuilds the same bytes) or read from a KLL sketch for baselines
too large to hold. While a summary holds every value (``exact``), every test
on it is exact.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import repeat
from typing import Any

import datasketches
import numpy as np
from scipy import special

from detectors import SnapshotError
from detectors.base import check_count

#: Share given to an empty bin so PSI stays finite (log of zero). The usual
#: choice in credit-risk practice, where PSI comes from.
PSI_EPSILON = 1e-4

OTHER_CATEGORY = "__other__"
_SUMMARY_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: Points a numeric reference keeps: exact up to 512 values, else ranks within 1/512.
DEFAULT_REFERENCE_POINTS = 512
#: Values a numeric reference builder holds exactly before it spills into KLL.
EXACT_LIMIT = 100_000
#: Sorted values a kept point stands for when a block of the stream's reference values is compacted.
COMPACTION = 4
BASELINE_SKETCH_K = 1000
#: Frequent-items map of 2^10 slots: exact counts up to 768 distinct categories.
DEFAULT_CATEGORY_MAP = 10
_HLL_LG_K = 12


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


def categorical_summary(counts: Counter[str], missing: int = 0, top: int = 5, present: int | None = None
                        ) -> dict[str, Any]:  # fmt: skip
    """Readable summary of category counts: the most common shares."""
    present = sum(counts.values()) if present is None else present
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


class NumericReferenceBuilder:
    """Collects the values of a numeric reference in bounded memory.

    The reference is compacted deterministically: a replay of the same rows
    after a crash must rebuild the very same reference, which a randomized
    sketch such as KLL cannot promise.

    Given ``points`` (the stream's builders), values are taken in fixed blocks
    of ``block_size(points)`` by their position among the non-missing values, so
    the blocks are the same whatever the batching: each block, once complete, is
    sorted and kept as every ``COMPACTION``-th value (weight ``COMPACTION``), and
    only the open block is held as it came. A reference of 5000 values then holds
    at most about 2300 numbers instead of 5000, and every model's references fill
    at the same time. Each kept value stands for a run of ``COMPACTION``
    consecutive sorted values of its block, so a block moves the CDF by at most
    ``COMPACTION // 2`` values: with blocks of twice ``points`` that adds at most
    the final compaction's own error (``rank_error`` about 2/points instead of
    1/points). A reference no larger than one block is built exactly as from
    all its values. Mean and spread are merged block by block (Chan et al.).

    Without ``points`` (a baseline file), up to ``exact_limit`` values are
    kept exactly; a larger baseline spills into a KLL sketch (rank error 1.33%
    at k=200, 0.33% at the k=1000 used here) plus running moments. The
    stream's reference never passes that limit (``MonitorConfig.reference_size``
    is capped at it).
    """

    def __init__(self, exact_limit: int = EXACT_LIMIT, sketch_k: int = BASELINE_SKETCH_K,
                 points: int | None = None) -> None:  # fmt: skip
        check_count("exact_limit", exact_limit)
        check_count("sketch_k", sketch_k, 8)
        self.exact_limit, self.sketch_k = exact_limit, sketch_k
        self.block = None if points is None else block_size(points)
        self._chunks: list[np.ndarray] = []  # values as they came: the open block's, or all when not compacting
        self._open = 0  # values in _chunks
        self._kept: list[np.ndarray] = []  # per complete block: every COMPACTION-th of its sorted values
        self._block_moments = (0, 0.0, 0.0)  # count, mean, sum of squared deviations of the complete blocks
        self._sketch: datasketches.kll_doubles_sketch | None = None
        self.count = 0  # non-missing values
        self.missing = 0
        self._mean = 0.0
        self._m2 = 0.0  # sum of squared deviations, merged batch by batch (Chan et al.)

    @property
    def rows(self) -> int:
        return self.count + self.missing

    @property
    def held(self) -> int:
        """Numbers held now (what the memory grows with)."""
        return self._open + sum(kept.size for kept in self._kept)

    def update(self, values: np.ndarray) -> None:
        present = values[np.isfinite(values)]  # an infinity (e.g. "inf" in a CSV) is no measurement either
        self.missing += int(values.size - present.size)
        if not present.size:
            return
        if self.block is not None:
            self._add_to_blocks(present)
            return
        n, mean = int(present.size), float(present.mean())
        total = self.count + n
        delta = mean - self._mean
        self._m2 += float(((present - mean) ** 2).sum()) + delta * delta * self.count * n / total
        self._mean += delta * n / total
        self.count = total
        if self._sketch is None and total > self.exact_limit:
            self._sketch = datasketches.kll_doubles_sketch(self.sketch_k)
            for chunk in self._chunks:
                self._sketch.update(chunk)
            self._chunks, self._open = [], 0
        if self._sketch is not None:
            self._sketch.update(present.astype(np.float64))
        else:
            self._chunks.append(present.astype(np.float64, copy=True))
            self._open += n

    def _add_to_blocks(self, present: np.ndarray) -> None:
        assert self.block is not None
        start = 0
        while start < present.size:
            stop = min(present.size, start + self.block - self._open)
            # A copy: a slice would keep the whole batch alive.
            self._chunks.append(present[start:stop].astype(np.float64, copy=True))
            self._open += stop - start
            self.count += stop - start
            start = stop
            if self._open == self.block:
                self._close_block()

    def _close_block(self) -> None:
        ordered = np.sort(self.values())
        # Runs of COMPACTION sorted values kept as their middle one, the lower and the upper
        # middle in turn so that the blocks' rank errors do not all lean the same way.
        middle = COMPACTION // 2 - len(self._kept) % 2
        self._kept.append(ordered[middle::COMPACTION].copy())
        self._block_moments = _merge_moments(self._block_moments, _moments(ordered))
        self._chunks, self._open = [], 0

    def values(self) -> np.ndarray:
        """The values held as they came: all of them without ``points``, else the open block's."""
        return np.concatenate(self._chunks) if self._chunks else np.empty(0)

    def build(self, bins: int, points: int = DEFAULT_REFERENCE_POINTS) -> NumericReference:
        if self._sketch is not None:
            std = float(np.sqrt(self._m2 / self.count))
            return NumericReference.from_sketch(self._sketch, bins, self._mean, std, self.missing)
        if not self._kept:
            return NumericReference.build(self.values(), bins, self.missing, points)
        opened = np.sort(self.values())
        count, mean, m2 = _merge_moments(self._block_moments, _moments(opened))
        items = np.concatenate([*self._kept, opened])
        weights = np.concatenate([np.full(sum(kept.size for kept in self._kept), float(COMPACTION)),
                                  np.ones(opened.size)])  # fmt: skip
        order = np.argsort(items, kind="stable")
        return NumericReference.from_weighted(items[order], weights[order], bins, mean, math.sqrt(m2 / count),
                                              self.missing, points, len(self._kept) * (COMPACTION // 2))  # fmt: skip

    def to_plain(self) -> dict[str, Any]:
        if self._sketch is not None:  # only baselines get here, and they are never snapshotted mid-way
            raise ValueError("a spilled reference builder has no plain form")
        if self.block is None:
            return {"values": self.values().astype("<f8").tobytes(), "missing": self.missing}
        # Not "values": a release that reads only that would take the open block for the whole reference.
        count, mean, m2 = self._block_moments
        return {"block": self.block, "open": self.values().astype("<f8").tobytes(),
                "kept": np.concatenate(self._kept or [np.empty(0)]).astype("<f8").tobytes(),
                "blocks": [count, mean, m2], "missing": self.missing}  # fmt: skip

    @classmethod
    def from_plain(cls, data: dict[str, Any], points: int | None = None) -> NumericReferenceBuilder:
        """A builder from ``to_plain()``; the layout before compaction (every value, ``values``) is
        fed again to a builder of ``points``, which then holds what it would had it seen them."""
        try:
            missing = int(data["missing"])
            if "block" in data:
                return cls._from_blocks(data, missing)
            values = np.frombuffer(bytes(data["values"]), dtype="<f8")
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"malformed numeric reference builder: {exc!r}") from exc
        builder = cls(points=points)
        if values.size > builder.exact_limit:
            raise SnapshotError(f"numeric reference builder holds {values.size} values, over {builder.exact_limit}")
        if missing < 0 or not np.isfinite(values).all():
            raise SnapshotError("numeric reference builder with non-finite values or a negative missing count")
        builder.update(values.copy())
        builder.missing = missing
        return builder

    @classmethod
    def _from_blocks(cls, data: dict[str, Any], missing: int) -> NumericReferenceBuilder:
        block = int(data["block"])
        opened = np.frombuffer(bytes(data["open"]), dtype="<f8")
        kept = np.frombuffer(bytes(data["kept"]), dtype="<f8")
        count, mean, m2 = data["blocks"]
        count, mean, m2 = int(count), float(mean), float(m2)
        per_block = block // COMPACTION
        if (block < 2 * COMPACTION or block % COMPACTION or opened.size >= block or kept.size % per_block
                or count != kept.size * COMPACTION or block * (kept.size // per_block) > EXACT_LIMIT
                or missing < 0 or not (np.isfinite(opened).all() and np.isfinite(kept).all()
                                       and math.isfinite(mean) and math.isfinite(m2) and m2 >= 0)):  # fmt: skip
            raise SnapshotError(f"numeric reference builder with inconsistent blocks ({block} values a block, "
                                f"{kept.size} kept, {opened.size} open, {count} counted)")  # fmt: skip
        builder = cls()
        builder.block = block
        builder._kept = [kept[i : i + per_block].copy() for i in range(0, kept.size, per_block)]
        builder._block_moments = (count, mean, m2)
        if opened.size:
            builder._chunks, builder._open = [opened.copy()], int(opened.size)
        builder.count, builder.missing = count + int(opened.size), missing
        return builder


def block_size(points: int) -> int:
    """Values in a block of a compacting reference builder: about twice the summary's points,
    a whole number of runs of ``COMPACTION``."""
    check_count("points", points, 2)
    return COMPACTION * -(-points // 2)


def _moments(values: np.ndarray) -> tuple[int, float, float]:
    mean = float(values.mean()) if values.size else 0.0
    return int(values.size), mean, float(((values - mean) ** 2).sum())


def _merge_moments(a: tuple[int, float, float], b: tuple[int, float, float]) -> tuple[int, float, float]:
    """Count, mean and sum of squared deviations of two parts together (Chan et al.)."""
    (n_a, mean_a, m2_a), (n_b, mean_b, m2_b) = a, b
    if not n_b:
        return a
    if not n_a:
        return b
    n = n_a + n_b
    delta = mean_b - mean_a
    return n, mean_a + delta * n_b / n, m2_a + m2_b + delta * delta * n_a * n_b / n


@dataclass(frozen=True)
class NumericReference:
    """A numeric reference: a weighted quantile summary, its bins, mean and spread.

    ``items`` (ascending) with ``weights`` (how many reference values each
    stands for) is the distribution every test compares with. It holds at most
    a fixed number of points whatever the reference's size; ``rank_error``
    bounds how far its CDF can be from the reference's own (0: exact).
    """

    items: np.ndarray = field(repr=False)
    weights: np.ndarray = field(repr=False)
    rank_error: float
    bins: int  # bins asked for; ties can leave fewer (len(edges) + 1)
    edges: np.ndarray  # inner bin edges, ascending; len(edges) + 1 bins
    proportions: np.ndarray
    mean: float
    std: float  # population std, 1.0 for a constant reference
    missing: int
    summary: dict[str, Any]

    @property
    def count(self) -> int:
        """Non-missing values the reference stands for."""
        return int(round(self.weights.sum()))

    @property
    def exact(self) -> bool:
        return self.rank_error == 0.0

    @classmethod
    def build(cls, values: np.ndarray, bins: int, missing: int = 0,
              points: int = DEFAULT_REFERENCE_POINTS) -> NumericReference:  # fmt: skip
        """Reference of ``values`` (NaN is dropped) with ``missing`` rows known to be missing.

        More than ``points`` values are compacted into ``points`` groups of
        consecutive sorted values, each kept as its middle value weighted by
        its size: the CDF moves by at most one group, ``ceil(n / points) / n``.
        """
        values = np.asarray(values, dtype=np.float64)
        present = np.sort(values[np.isfinite(values)])
        if not present.size:
            raise ValueError("a numeric reference needs at least one non-missing value")
        mean, std = float(present.mean()), float(present.std())
        return cls.from_weighted(present, np.ones(present.size), bins, mean, std, missing, points)

    @classmethod
    def from_weighted(cls, items: np.ndarray, weights: np.ndarray, bins: int, mean: float, std: float, missing: int,
                      points: int = DEFAULT_REFERENCE_POINTS, error: int = 0) -> NumericReference:  # fmt: skip
        """Reference of ascending ``items``, each standing for ``weights`` (whole numbers of) values, whose
        CDF is within ``error`` values of the reference's own: compacted as ``build`` compacts values
        (it is ``build`` when every weight is 1), into groups of the values the items stand for.
        """
        check_count("points", points, 2)
        if not items.size:
            raise ValueError("a numeric reference needs at least one non-missing value")
        cumulative = np.cumsum(weights)
        total = round(float(cumulative[-1]))
        if items.size <= points:
            items, first = np.unique(items, return_index=True)
            weights = np.add.reduceat(weights, first)
            rank_error = error / total
        else:
            bounds = np.linspace(0, total, points + 1).round().astype(np.int64)
            # The item the middle value of each group is one of (the group's middle value if every weight is 1).
            items = items[np.searchsorted(cumulative, (bounds[:-1] + bounds[1:]) // 2, side="right")]
            weights = np.diff(bounds)
            rank_error = float(weights.max() + error) / total
        return cls.from_summary(items, weights.astype(np.float64), rank_error, bins, mean, std, missing)

    @classmethod
    def from_sketch(cls, sketch: datasketches.kll_doubles_sketch, bins: int, mean: float, std: float,
                    missing: int) -> NumericReference:  # fmt: skip
        """Reference from a KLL sketch, for baselines too large to hold (its rank error is the sketch's)."""
        if sketch.is_empty():
            raise ValueError("a numeric reference needs at least one non-missing value")
        pairs = sorted(sketch)  # (value, weight) of every retained item
        items = np.fromiter((v for v, _ in pairs), dtype=np.float64, count=len(pairs))
        weights = np.fromiter((w for _, w in pairs), dtype=np.float64, count=len(pairs))
        error = float(sketch.normalized_rank_error(False)) if sketch.is_estimation_mode() else 0.0
        return cls.from_summary(items, weights, error, bins, mean, std, missing)

    @classmethod
    def from_summary(cls, items: np.ndarray, weights: np.ndarray, rank_error: float, bins: int, mean: float,
                     std: float, missing: int, edges: np.ndarray | None = None) -> NumericReference:  # fmt: skip
        """Bins at the summary's quantiles, so each holds about 1/bins of the reference.

        Ties merge quantiles, so a restore passes the ``edges`` it saved rather
        than computing them again.
        """
        if bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        if items.size == 0 or items.shape != weights.shape or (weights <= 0).any() or (np.diff(items) < 0).any():
            raise ValueError("a reference summary needs ascending items with positive weights")
        count = float(weights.sum())
        if edges is None:
            edges = np.unique(_weighted_quantiles(items, weights, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
        elif edges.ndim != 1 or edges.size >= bins or not np.isfinite(edges).all() or (np.diff(edges) <= 0).any():
            raise ValueError("bin edges must be finite, strictly ascending and fewer than the bins")
        proportions = np.diff(np.concatenate(([0.0], _share_below(items, weights, edges), [1.0])))
        quantiles = _weighted_quantiles(items, weights, _SUMMARY_QUANTILES)
        summary = {
            "count": round(count) + missing,
            "null_rate": missing / (count + missing),
            "mean": mean,
            "std": std,
            "min": float(items[0]),
            "max": float(items[-1]),
            "quantiles": {f"p{round(q * 100):02d}": float(v)
                          for q, v in zip(_SUMMARY_QUANTILES, quantiles, strict=True)},
        }  # fmt: skip
        return cls(
            items=items,
            weights=weights,
            rank_error=rank_error,
            bins=bins,
            edges=edges,
            proportions=proportions,
            mean=mean,
            # A constant reference has no spread; 1.0 keeps z-scores finite.
            std=std if std > 0 else 1.0,
            missing=missing,
            summary=summary,
        )

    def value_range(self, quantile: float, margin: float) -> tuple[float, float, int]:
        """The range ``out_of_range`` judges by: the quantiles at ``quantile`` and ``1 - quantile``
        widened on each side by ``margin`` times the span between them, and how many reference
        values may lie outside it (what the null line rests on).

        An exact reference counts them. A compacted one holds each run of consecutive sorted
        values as its middle value, so a run's values lie between its neighbours' points: the
        count is the weight of every run that may reach outside (counting only the points outside
        counted none at 0.001 of 5000 values, where about 9 are: bench/breakage.py's calibration
        check). Ties at a quantile (a 0/1 flag, a count that is mostly 0) count only where they
        may lie outside, so they never lift the line over every share.
        """
        low, high = _weighted_quantiles(self.items, self.weights, (quantile, 1.0 - quantile))
        span = float(high - low)
        first, last = float(low) - margin * span, float(high) + margin * span
        items = self.items
        if self.rank_error == 0:
            outside = (items < first) | (items > last)
        else:  # the first and last runs may reach past any point: their ends are not kept
            outside = np.concatenate(([True], items[:-1] < first)) | np.concatenate((items[1:] > last, [True]))
        beyond = min(round(float(self.weights[outside].sum()) / float(self.weights.sum()) * self.count), self.count)
        return first, last, int(beyond)

    def _mid_ranks(self) -> np.ndarray:
        """The reference's CDF at each point, halfway through the values it stands for.

        Not cached: 4 KB per numeric reference (30 MB over 100 models x 75 features) for a
        cumulative sum of 512 numbers, a few microseconds per batch."""
        total = self.weights.sum()
        return (np.cumsum(self.weights) - self.weights / 2) / total

    def normal_scores(self, values: np.ndarray) -> np.ndarray:
        """``values`` (non-missing) as normal scores against the reference: ``Phi^-1(F_ref(x))``.

        What the change detectors are fed. Their lines are calibrated on N(0, 1) input
        (detectors/calibration.py), and a stable feature's normal scores are that whatever
        its distribution, where z-scores of a skewed one are not (its long tail makes a
        Page-Hinkley at the budget's line fire thousands of times too often). The CDF is
        interpolated between the reference's points; values past its ends get the scores of
        half a value beyond them, so one wild value moves a detector by at most about 3.7
        (5000 values) instead of without bound.
        """
        total = float(self.weights.sum())
        edge = 0.5 / total
        ranks = np.interp(values, self.items, self._mid_ranks(), left=edge, right=1.0 - edge)
        return special.ndtri(np.clip(ranks, edge, 1.0 - edge))

    def bin_counts(self, values: np.ndarray) -> np.ndarray:
        """Counts of non-missing ``values`` in the reference's bins."""
        return np.bincount(
            np.searchsorted(self.edges, values, side="right"), minlength=self.edges.size + 1
        )

    def to_plain(self) -> dict[str, Any]:
        return {"kind": "numeric", "items": self.items.astype("<f8").tobytes(),
                "weights": self.weights.astype("<f8").tobytes(), "rank_error": self.rank_error,
                "bins": self.bins, "edges": self.edges.astype("<f8").tobytes(), "mean": self.mean,
                "std": self.summary["std"], "missing": self.missing}  # fmt: skip

    @classmethod
    def from_plain(cls, data: dict[str, Any]) -> NumericReference:
        items = np.frombuffer(_bytes(data["items"]), dtype="<f8").copy()
        weights = np.frombuffer(_bytes(data["weights"]), dtype="<f8").copy()
        rank_error, mean, std = float(data["rank_error"]), float(data["mean"]), float(data["std"])
        missing = int(data["missing"])
        if not (np.isfinite(items).all() and np.isfinite(weights).all() and math.isfinite(mean)
                and math.isfinite(std) and std >= 0 and 0 <= rank_error < 1 and missing >= 0):  # fmt: skip
            raise ValueError("numeric reference with non-finite or out-of-range numbers")
        edges = np.frombuffer(_bytes(data["edges"]), dtype="<f8").copy()
        return cls.from_summary(items, weights, rank_error, int(data["bins"]), mean, std, missing, edges)


def _weighted_quantiles(items: np.ndarray, weights: np.ndarray, qs: Sequence[float] | np.ndarray) -> np.ndarray:
    """Lower quantiles of a weighted sample: the first item whose cumulative share reaches q."""
    cumulative = np.cumsum(weights) / weights.sum()
    index = np.searchsorted(cumulative, np.asarray(qs, dtype=np.float64) - 1e-12, side="left")
    return items[np.minimum(index, items.size - 1)]


def _share_below(items: np.ndarray, weights: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Share of the weighted sample strictly below each point."""
    cumulative = np.concatenate(([0.0], np.cumsum(weights))) / weights.sum()
    return cumulative[np.searchsorted(items, points, side="left")]


class CategoricalReferenceBuilder:
    """Accumulates a categorical reference in fixed memory.

    A frequent-items sketch (``2^map_size`` slots, exact counts while the
    distinct categories fit in 3/4 of them) and a HyperLogLog count of distinct
    categories: memory is bounded by the map size times the longest label,
    whatever the cardinality of the stream.
    """

    def __init__(self, map_size: int = DEFAULT_CATEGORY_MAP) -> None:
        check_count("map_size", map_size, 3)
        self.items = datasketches.frequent_strings_sketch(map_size)
        self.distinct = datasketches.hll_sketch(_HLL_LG_K)
        self.missing = 0

    @property
    def present(self) -> int:
        return int(self.items.total_weight)

    @property
    def rows(self) -> int:
        return self.present + self.missing

    def update(self, values: Iterable[str | None]) -> None:
        counts = Counter(values)
        self.missing += counts.pop(None, 0)
        for category, n in counts.items():
            self.items.update(category, n)
            self.distinct.update(category)

    def build(self, max_categories: int) -> CategoricalReference:
        if self.items.is_empty():
            raise ValueError("a categorical reference needs at least one non-missing value")
        # Exact counts while the categories fit the map; past that, only the
        # categories proven frequent (the rest fall into the "other" bucket).
        error = datasketches.frequent_items_error_type.NO_FALSE_POSITIVES
        estimates = {item: int(estimate) for item, estimate, _, _ in self.items.get_frequent_items(error)}
        return CategoricalReference.from_counts(
            Counter(estimates), self.missing, max_categories, present=self.present,
            distinct=round(self.distinct.get_estimate()),
        )  # fmt: skip

    def to_plain(self) -> dict[str, Any]:
        return {"items": self.items.serialize(), "distinct": self.distinct.serialize_compact(),
                "missing": self.missing}  # fmt: skip

    @classmethod
    def from_plain(cls, data: dict[str, Any]) -> CategoricalReferenceBuilder:
        builder = cls.__new__(cls)
        try:
            builder.items = datasketches.frequent_strings_sketch.deserialize(bytes(data["items"]))
            builder.distinct = datasketches.hll_sketch.deserialize(bytes(data["distinct"]))
        except (KeyError, TypeError) as exc:
            raise SnapshotError(f"malformed categorical builder: {exc!r}") from exc
        except Exception as exc:  # the library raises RuntimeError or ValueError for bad bytes
            raise SnapshotError(f"unreadable category sketch: {exc}") from exc
        builder.missing = int(data["missing"])
        return builder


@dataclass(frozen=True)
class CategoricalReference:
    """The most common reference categories; everything else shares one bucket."""

    categories: tuple[str, ...]
    proportions: np.ndarray  # one per category, then the "other/unseen" bucket
    present: int  # non-missing values it was built from
    missing: int
    distinct: int  # estimated distinct categories in the reference
    summary: dict[str, Any]

    @classmethod
    def build(cls, values: Iterable[str | None], max_categories: int,
              map_size: int = DEFAULT_CATEGORY_MAP) -> CategoricalReference:  # fmt: skip
        check_count("max_categories", max_categories)
        builder = CategoricalReferenceBuilder(map_size)
        builder.update(values)
        return builder.build(max_categories)

    @classmethod
    def from_counts(cls, counts: Counter[str], missing: int, max_categories: int, present: int | None = None,
                    distinct: int | None = None) -> CategoricalReference:  # fmt: skip
        check_count("max_categories", max_categories)
        present = sum(counts.values()) if present is None else present
        if present <= 0:
            raise ValueError("a categorical reference needs at least one non-missing value")
        kept = counts.most_common(max_categories)
        shares = [n / present for _, n in kept]
        shares.append(max(0.0, 1.0 - sum(shares)))
        return cls(
            categories=tuple(category for category, _ in kept),
            proportions=np.asarray(shares),
            present=present,
            missing=missing,
            distinct=len(counts) if distinct is None else distinct,
            summary=categorical_summary(Counter(dict(kept)), missing, present=present),
        )

    @property
    def other_share(self) -> float:
        return float(self.proportions[-1])

    @cached_property
    def _index(self) -> dict[str | None, int]:
        index: dict[str | None, int] = {category: i for i, category in enumerate(self.categories)}
        index[None] = -1
        return index

    def codes(self, values: Sequence[str | None]) -> np.ndarray:
        """Bucket of each value: its category's index, len(categories) for any other, -1 if missing."""
        # map() over dict.get keeps the per-value work in C: this runs for every categorical value.
        looked_up = map(self._index.get, values, repeat(len(self.categories)))
        return np.fromiter(looked_up, dtype=np.int64, count=len(values))

    def bucket_counts(self, values: Sequence[str]) -> np.ndarray:
        """Counts per reference category, the last bucket holding all others."""
        codes = self.codes(values)
        return np.bincount(codes[codes >= 0], minlength=len(self.categories) + 1)

    def to_plain(self) -> dict[str, Any]:
        return {
            "kind": "categorical",
            "categories": list(self.categories),
            "proportions": self.proportions.tolist(),
            "present": self.present,
            "missing": self.missing,
            "distinct": self.distinct,
            "summary": self.summary,
        }

    @classmethod
    def from_plain(cls, data: dict[str, Any]) -> CategoricalReference:
        categories = tuple(data["categories"])
        proportions = np.asarray(data["proportions"], dtype=np.float64)
        if not all(isinstance(c, str) for c in categories) or len(set(categories)) != len(categories):
            raise ValueError("categories must be distinct strings")
        if proportions.shape != (len(categories) + 1,):
            raise ValueError("one proportion per category plus the other bucket")
        if not (np.isfinite(proportions).all() and (proportions >= 0).all() and abs(proportions.sum() - 1) < 1e-6):
            raise ValueError("proportions must be shares summing to 1")
        if int(data["present"]) < 1 or int(data["missing"]) < 0 or int(data["distinct"]) < 0:
            raise ValueError("present must be >= 1, missing and distinct >= 0")
        null_rate = data["summary"].get("null_rate", 0.0)
        if isinstance(null_rate, bool) or not isinstance(null_rate, (int, float)) or not 0 <= null_rate <= 1:
            raise ValueError("summary null_rate must be a share")
        return cls(categories=categories, proportions=proportions, present=int(data["present"]),
                   missing=int(data["missing"]), distinct=int(data["distinct"]),
                   summary=dict(data["summary"]))  # fmt: skip


Reference = NumericReference | CategoricalReference


def _bytes(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"expected bytes, got {type(value).__name__}")
    return value


def reference_from_plain(data: dict[str, Any]) -> Reference:
    """Rebuild a reference from ``to_plain()`` output."""
    kind = data.get("kind") if isinstance(data, dict) else None
    try:
        if kind == "numeric":
            return NumericReference.from_plain(data)
        if kind == "categorical":
            return CategoricalReference.from_plain(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SnapshotError(f"malformed {kind} reference: {exc!r}") from exc
    raise SnapshotError(f"unknown reference kind {kind!r}")
