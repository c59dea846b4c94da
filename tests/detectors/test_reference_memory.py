"""The stream's numeric reference builder: bounded memory, deterministic, batch-independent."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from detectors import SnapshotError
from detectors.reference import (
    COMPACTION,
    NumericReference,
    NumericReferenceBuilder,
    block_size,
    psi,
)
from detectors.two_sample import ks_statistic

SIZE, POINTS, BINS = 5000, 512, 10


def _streams() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(21)
    return {
        "normal": rng.standard_normal(SIZE),
        "lognormal": rng.lognormal(0.0, 1.5, SIZE),
        "counts": rng.poisson(2.0, SIZE).astype(np.float64),  # ties at every quantile
        "ascending": np.sort(rng.standard_normal(SIZE)),  # every block far from the others
        "bimodal": np.concatenate([rng.normal(-3, 0.5, SIZE // 2), rng.normal(3, 0.5, SIZE // 2)]),
    }


def _fed(values: np.ndarray, batch: int, points: int = POINTS) -> NumericReferenceBuilder:
    builder = NumericReferenceBuilder(points=points)
    for start in range(0, values.size, batch):
        builder.update(values[start : start + batch])
    return builder


def _cdf_gap(reference: NumericReference, values: np.ndarray) -> float:
    """Largest gap between the summary's CDF and the exact one, at every value."""
    exact = np.sort(values[np.isfinite(values)])
    points = np.unique(exact)
    f_exact = np.searchsorted(exact, points, side="right") / exact.size
    cumulative = np.concatenate(([0.0], np.cumsum(reference.weights))) / reference.weights.sum()
    f_summary = cumulative[np.searchsorted(reference.items, points, side="right")]
    return float(np.abs(f_exact - f_summary).max())


def test_a_builder_holds_well_under_half_its_values() -> None:
    values = np.random.default_rng(1).standard_normal(SIZE)
    builder = NumericReferenceBuilder(points=POINTS)
    most = 0
    for start in range(0, SIZE, 100):
        builder.update(values[start : start + 100])
        most = max(most, builder.held)
    block = block_size(POINTS)
    assert block == 1024
    # Complete blocks as a quarter of their values, the open block as it came.
    assert most <= SIZE // COMPACTION + block
    assert builder.held == 4 * block // COMPACTION + SIZE - 4 * block == 1928
    assert builder.count == SIZE
    reference = builder.build(BINS, POINTS)
    assert reference.count == SIZE and reference.items.size == POINTS


@pytest.mark.parametrize("name", sorted(_streams()))
def test_the_reference_is_the_same_whatever_the_batching(name: str) -> None:
    values = _streams()[name].copy()
    values[::13] = np.nan  # missing values take no place in a block
    plains = set()
    for batch in (1, 7, 1000, SIZE):
        builder = _fed(values, batch)
        plains.add(msgpack.packb(builder.to_plain()))
        plains.add(msgpack.packb(builder.build(BINS, POINTS).to_plain()))
    assert len(plains) == 2  # one builder snapshot, one reference


def test_a_restored_builder_rebuilds_the_very_same_reference() -> None:
    values = _streams()["lognormal"]
    straight = _fed(values, 333).build(BINS, POINTS).to_plain()
    for cut in (0, 500, 1024, 1500, 4096, 4999):
        first = _fed(values[:cut], 97)
        blob = msgpack.packb(first.to_plain(), use_bin_type=True)
        again = NumericReferenceBuilder.from_plain(msgpack.unpackb(blob, raw=False), points=POINTS)
        assert again.count == cut and again.held == first.held
        again.update(values[cut:])
        assert again.build(BINS, POINTS).to_plain() == straight


def test_a_snapshot_of_every_value_is_read_as_if_fed_again() -> None:
    values = _streams()["normal"][:3000]
    old_layout = {"values": values.astype("<f8").tobytes(), "missing": 4}  # before compaction
    restored = NumericReferenceBuilder.from_plain(old_layout, points=POINTS)
    fresh = _fed(values, 1000)
    fresh.missing = 4
    assert restored.held < values.size
    assert msgpack.packb(restored.to_plain()) == msgpack.packb(fresh.to_plain())
    # Without points (a baseline's builder) the layout and the exact build stay as they were.
    exact = NumericReferenceBuilder.from_plain(old_layout)
    assert exact.to_plain() == old_layout
    assert exact.build(BINS).to_plain() == NumericReference.build(values, BINS, 4).to_plain()


def test_a_reference_within_one_block_is_built_exactly_as_from_all_its_values() -> None:
    values = _streams()["bimodal"][: block_size(POINTS)]
    for size in (10, POINTS, block_size(POINTS) - 1):
        built = _fed(values[:size], 7).build(BINS, POINTS)
        assert built.to_plain() == NumericReference.build(values[:size], BINS, 0, POINTS).to_plain()


def test_weighted_items_of_weight_one_are_the_plain_build() -> None:
    values = np.sort(_streams()["counts"])
    for points in (2, 7, POINTS, SIZE):
        plain = NumericReference.build(values, BINS, 3, points)
        weighted = NumericReference.from_weighted(values, np.ones(values.size), BINS, plain.mean,
                                                  float(values.std()), 3, points)  # fmt: skip
        assert weighted.to_plain() == plain.to_plain()


@pytest.mark.parametrize("name", sorted(_streams()))
def test_a_compacted_reference_stays_within_its_rank_error(name: str) -> None:
    values = _streams()[name]
    compacted = _fed(values, 1000).build(BINS, POINTS)
    exact = NumericReference.build(values, BINS, 0, POINTS)
    blocks = SIZE // block_size(POINTS)
    # The final compaction's error plus COMPACTION // 2 values per compacted block: 2/points here.
    assert compacted.rank_error == pytest.approx((10 + blocks * (COMPACTION // 2)) / SIZE)
    assert compacted.rank_error <= 2 / POINTS + 1 / SIZE
    assert _cdf_gap(compacted, values) <= compacted.rank_error
    assert compacted.count == SIZE and compacted.items.size == POINTS
    # Mean and spread merged block by block: the same numbers but for rounding.
    assert compacted.mean == pytest.approx(exact.mean, rel=1e-12, abs=1e-12)
    assert compacted.std == pytest.approx(exact.std, rel=1e-12)


@pytest.mark.parametrize("name", sorted(_streams()))
def test_the_tests_read_a_compacted_reference_as_the_exact_one(name: str) -> None:
    """KS and PSI of windows against the compacted and the exact reference of the same stream."""
    values = _streams()[name]
    compacted = _fed(values, 1000).build(BINS, POINTS)
    exact = NumericReference.build(values, BINS, 0, POINTS)
    rng = np.random.default_rng(5)
    ks_gaps, psi_gaps = [], []
    for shift in (0.0, 0.1, 0.5):
        for _ in range(20):
            window = np.sort(rng.choice(values, 1000) + shift * exact.std)
            ks = [ks_statistic(r.items, r.weights, window) for r in (compacted, exact)]
            ks_gaps.append(abs(ks[0] - ks[1]))
            shares = [psi(r.proportions, r.bin_counts(window)) for r in (compacted, exact)]
            psi_gaps.append(abs(shares[0] - shares[1]))
    # D moves by at most the two summaries' rank errors; PSI by what bins a few values change.
    assert max(ks_gaps) <= compacted.rank_error + exact.rank_error
    assert max(psi_gaps) < 0.01
    # The KS line at 1000 values and alpha 1e-4 is about 0.068: the gap is a few per cent of it.
    assert float(np.mean(ks_gaps)) < 0.003


@pytest.mark.parametrize(
    "change",
    [
        {"block": 6},  # not a whole number of runs
        {"block": 1024, "open": np.zeros(1024).tobytes()},  # the open block is full
        {"kept": np.zeros(100).tobytes()},  # not whole blocks
        {"blocks": [999, 0.0, 1.0]},  # count not the kept blocks'
        {"blocks": [1024, float("nan"), 1.0]},
        {"open": np.array([np.inf]).tobytes()},
        {"missing": -1},
        {"kept": "not bytes"},
        {"blocks": None},
    ],
)
def test_a_malformed_snapshot_is_refused(change: dict) -> None:
    plain = _fed(_streams()["normal"][:1500], 500).to_plain()
    NumericReferenceBuilder.from_plain(plain)  # the unchanged one reads
    with pytest.raises(SnapshotError):
        NumericReferenceBuilder.from_plain({**plain, **change})
    with pytest.raises(SnapshotError):
        NumericReferenceBuilder.from_plain({"values": np.array([np.nan]).tobytes(), "missing": 0}, points=POINTS)
