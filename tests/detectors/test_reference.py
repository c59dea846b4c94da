from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from detectors import SnapshotError
from detectors.reference import CategoricalReference, NumericReference, psi, reference_from_plain


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
