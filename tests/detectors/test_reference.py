from __future__ import annotations

from collections import Counter

import datasketches
import msgpack
import numpy as np
import pytest

from detectors import SnapshotError
from detectors.reference import (
    CategoricalReference,
    CategoricalReferenceBuilder,
    NumericReference,
    NumericReferenceBuilder,
    psi,
    reference_from_plain,
)


def test_psi_matches_hand_computation() -> None:
    expected = np.array([0.2, 0.3, 0.5])
    counts = np.array([30, 30, 40])
    hand = sum((a - e) * np.log(a / e) for a, e in zip([0.3, 0.3, 0.4], [0.2, 0.3, 0.5], strict=False))
    assert psi(expected, counts) == pytest.approx(hand, abs=1e-12)


def test_psi_floors_empty_bins_instead_of_infinity() -> None:
    assert np.isfinite(psi(np.array([0.5, 0.5]), np.array([10, 0])))


def test_numeric_reference_bins_hold_equal_shares() -> None:
    values = np.random.default_rng(1).standard_normal(10_000)
    reference = NumericReference.build(values, bins=10)
    assert reference.edges.size == 9
    # 10,000 values compacted into 512 points: shares within the summary's rank error.
    assert reference.rank_error == pytest.approx(20 / 10_000)
    np.testing.assert_allclose(reference.proportions, 0.1, atol=2 * reference.rank_error)
    assert psi(reference.proportions, reference.bin_counts(values)) < 1e-3
    shifted = psi(reference.proportions, reference.bin_counts(values + 1.0))
    assert shifted > 0.25


def test_numeric_reference_counts_missing_and_rejects_empty() -> None:
    reference = NumericReference.build(np.array([1.0, 2.0, np.nan, 4.0]), bins=2, missing=1)
    assert reference.summary["count"] == 4 and reference.summary["null_rate"] == 0.25
    with pytest.raises(ValueError, match="non-missing"):
        NumericReference.build(np.array([np.nan]), bins=2)
    with pytest.raises(ValueError, match="bins"):
        NumericReference.build(np.array([1.0]), bins=1)


def test_categorical_reference_keeps_top_categories_and_an_other_bucket() -> None:
    values = ["a"] * 50 + ["b"] * 30 + ["c"] * 15 + ["d"] * 5 + [None] * 10
    reference = CategoricalReference.build(values, max_categories=2)
    assert reference.categories == ("a", "b")
    np.testing.assert_allclose(reference.proportions, [0.5, 0.3, 0.2])
    assert reference.bucket_counts(["a", "zzz", "c", "b"]).tolist() == [1, 1, 2]
    assert reference.summary["null_rate"] == pytest.approx(10 / 110)


def test_reference_plain_round_trip_and_bad_input() -> None:
    numeric = NumericReference.build(np.arange(100.0), bins=4)
    categorical = CategoricalReference.from_counts(Counter(a=3, b=1), 0, 5)
    for reference in (numeric, categorical):
        again = reference_from_plain(reference.to_plain())
        assert again.to_plain() == reference.to_plain()
    with pytest.raises(SnapshotError):
        reference_from_plain({"kind": "histogram"})
    with pytest.raises(SnapshotError):
        reference_from_plain({"kind": "numeric"})


def _cdf_gap(reference: NumericReference, values: np.ndarray) -> float:
    """Largest gap between the summary's CDF and the exact one, at every value."""
    exact = np.sort(values)
    points = np.unique(exact)
    f_exact = np.searchsorted(exact, points, side="right") / exact.size
    cumulative = np.concatenate(([0.0], np.cumsum(reference.weights))) / reference.weights.sum()
    f_summary = cumulative[np.searchsorted(reference.items, points, side="right")]
    return float(np.abs(f_exact - f_summary).max())


def test_a_large_reference_is_compacted_deterministically_within_its_rank_error() -> None:
    values = np.random.default_rng(7).standard_normal(50_000)
    first = NumericReference.build(values, bins=10, points=512)
    again = NumericReference.build(values.copy(), bins=10, points=512)
    assert first.items.size == 512 and first.count == 50_000
    assert first.to_plain() == again.to_plain()  # a replay rebuilds the same bytes
    assert first.rank_error == pytest.approx(98 / 50_000)
    assert _cdf_gap(first, values) <= first.rank_error
    small = NumericReference.build(values[:300], bins=10, points=512)
    assert small.exact and _cdf_gap(small, values[:300]) == 0.0


def test_a_kll_baseline_reference_stays_within_the_sketch_error() -> None:
    values = np.random.default_rng(8).standard_normal(200_000)
    sketch = datasketches.kll_doubles_sketch(200)
    for chunk in np.array_split(values, 20):  # a file read in chunks
        sketch.update(chunk)
    reference = NumericReference.from_sketch(sketch, 10, float(values.mean()), float(values.std()), 0)
    assert 0 < reference.rank_error < 0.02 and reference.items.size < 2000
    assert _cdf_gap(reference, values) <= reference.rank_error
    assert reference_from_plain(reference.to_plain()).to_plain() == reference.to_plain()


def test_a_million_distinct_categories_stay_within_the_sketch_bound() -> None:
    builder = CategoricalReferenceBuilder(map_size=8)
    sizes = []
    for start in range(0, 1_000_000, 100_000):
        builder.update([f"user-{i:07d}" for i in range(start, start + 100_000)])
        sizes.append(len(msgpack.packb(builder.to_plain())))
    # 2^8 slots of 12-character labels plus the HyperLogLog: the size stops growing.
    assert max(sizes) < 16_384 and sizes[-1] <= sizes[0] * 1.5
    reference = builder.build(max_categories=20)
    assert len(reference.categories) <= 20 and reference.present == 1_000_000
    assert 950_000 < reference.distinct < 1_050_000  # HyperLogLog estimate
    assert reference.other_share > 0.99


def test_categorical_builder_round_trips_and_refuses_garbage() -> None:
    builder = CategoricalReferenceBuilder()
    builder.update(["a", "b", None, "a"])
    again = CategoricalReferenceBuilder.from_plain(msgpack.unpackb(msgpack.packb(builder.to_plain())))
    assert again.build(5).to_plain() == builder.build(5).to_plain()
    assert again.missing == 1 and again.present == 3
    with pytest.raises(SnapshotError):
        CategoricalReferenceBuilder.from_plain({"items": b"junk", "distinct": b"", "missing": 0})


def test_a_reference_of_tied_values_restores_with_the_same_bins() -> None:
    values = np.repeat([0.0, 1.0, 2.0], [700, 200, 100])  # a count feature: most quantiles tie
    reference = NumericReference.build(values, bins=10)
    again = reference_from_plain(msgpack.unpackb(msgpack.packb(reference.to_plain())))
    assert isinstance(again, NumericReference)
    np.testing.assert_array_equal(again.edges, reference.edges)
    np.testing.assert_array_equal(again.proportions, reference.proportions)
    window = np.repeat([0.0, 1.0, 2.0], [500, 300, 200])
    assert psi(again.proportions, again.bin_counts(window)) == psi(reference.proportions, reference.bin_counts(window))


def test_infinities_in_a_baseline_count_as_missing() -> None:
    reference = NumericReference.build(np.array([1.0, np.inf, 2.0, -np.inf, 3.0]), bins=2, missing=2)
    assert reference.count == 3 and np.isfinite(reference.mean)
    builder = NumericReferenceBuilder()
    builder.update(np.array([1.0, np.inf, 2.0]))
    assert builder.count == 2 and builder.missing == 1
