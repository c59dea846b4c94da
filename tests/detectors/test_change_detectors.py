"""ADWIN and Page-Hinkley: river's detections, batch by batch, and exact restores."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from river.drift import ADWIN, PageHinkley

from detectors import SnapshotError
from detectors.streaming import AdwinDetector, PageHinkleyDetector


def stream(seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.standard_normal(3000), rng.standard_normal(3000) + 1.0,
                           rng.standard_normal(3000) * 3.0])  # fmt: skip


def river_indices(detector: ADWIN | PageHinkley, values: np.ndarray) -> list[int]:
    found = []
    for i, value in enumerate(values):
        detector.update(value)
        if detector.drift_detected:
            found.append(i)
    return found


def batched_indices(detector: AdwinDetector | PageHinkleyDetector, values: np.ndarray, size: int) -> list[int]:
    found = []
    for start in range(0, values.size, size):
        found += [start + p.position for p in detector.update(values[start : start + size])]
    return found


@pytest.mark.parametrize("size", [1, 37, 1000])
def test_adwin_detects_where_river_does(size: int) -> None:
    values = stream()
    expected = river_indices(ADWIN(delta=0.002), values)
    assert expected and expected[0] > 3000
    assert batched_indices(AdwinDetector(0.002), values, size) == expected


@pytest.mark.parametrize("size", [1, 37, 1000])
def test_page_hinkley_detects_where_river_does(size: int) -> None:
    values = stream()
    expected = river_indices(PageHinkley(delta=0.1, threshold=50, alpha=1.0, min_instances=30), values)
    assert expected and expected[0] > 3000
    assert batched_indices(PageHinkleyDetector(0.1, 50, 1.0, 30), values, size) == expected


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("delta", "threshold", "alpha"), [(0.1, 60, 1.0), (0.005, 20, 1.0), (0.05, 10, 0.999)])
def test_page_hinkley_in_numpy_detects_where_river_does_on_more_streams(
    seed: int, delta: float, threshold: float, alpha: float
) -> None:
    """The numpy Page-Hinkley replaces river's on the hot path: same detections, any batching."""
    values = stream(seed)
    expected = river_indices(PageHinkley(delta=delta, threshold=threshold, alpha=alpha, min_instances=30), values)
    assert len(expected) >= 2
    for size in (1, 250, values.size):
        assert batched_indices(PageHinkleyDetector(delta, threshold, alpha, 30), values, size) == expected


@pytest.mark.parametrize("cls", [AdwinDetector, PageHinkleyDetector])
def test_restore_of_a_snapshot_continues_exactly(cls: type) -> None:
    values = stream(5)
    straight = cls()
    expected = batched_indices(straight, values, 500)
    for cut in (1000, 3100, 4500):
        first = cls()
        found = batched_indices(first, values[:cut], 500)
        blob = msgpack.packb(first.snapshot(), use_bin_type=True)
        second = cls.restore(msgpack.unpackb(blob, raw=False))
        found += [cut + i for i in batched_indices(second, values[cut:], 500)]
        assert found == expected
        assert msgpack.packb(second.snapshot()) == msgpack.packb(straight.snapshot())


def test_adwin_snapshot_bytes_do_not_depend_on_batching_past_the_block_limit() -> None:
    # 40,000 stable values: river keeps one window, whose blocks pass the 256-block limit and merge.
    values = np.random.default_rng(8).standard_normal(40_000)
    snapshots = set()
    for size in (1, 37, 1000, values.size):
        detector = AdwinDetector()
        assert batched_indices(detector, values, size) == []
        assert len(detector._blocks) <= AdwinDetector._MAX_BLOCKS
        snapshots.add(msgpack.packb(detector.snapshot()))
    assert len(snapshots) == 1


def best_block_split(window: np.ndarray, clock: int = 32, delta: float = 0.002,
                     min_window_length: int = 5) -> tuple[float, float, float]:  # fmt: skip
    """|gap|, ADWIN's bound and gap of the split between clock blocks that is furthest past its bound."""
    width = window.size
    n0 = np.arange(clock, width, clock, dtype=np.float64)
    n1 = width - n0
    gap = np.array([window[int(k) :].mean() - window[: int(k)].mean() for k in n0])
    d = np.log(2.0 * np.log(width) / delta)
    m = 1.0 / (n0 - min_window_length + 1) + 1.0 / (n1 - min_window_length + 1)
    bound = np.sqrt(2.0 * m * window.var() * d) + 2.0 / 3.0 * d * m
    best = int(np.argmax(np.abs(gap) / bound))
    return abs(gap[best]), bound[best], gap[best]


@pytest.mark.parametrize("size", [37, 9000])
def test_change_point_reports_a_shift_against_its_threshold(size: int) -> None:
    values = stream()
    points = batched_points(AdwinDetector(delta=0.002), values, size)
    assert len(points) >= 2
    (first_index, first), (second_index, second) = points[:2]
    assert first_index > 3000 and 6000 < second_index
    # the mean rose by 1, then fell by 1 (with 3 times the spread)
    assert first.shift > 0.5 and second.shift < -0.5
    for start, (index, point) in zip((0, first_index + 1), points[:2], strict=True):
        # the best split of river's window (it restarts after a change) at clock blocks:
        # the gap of the two sub-window means there against ADWIN's bound for that split
        statistic, threshold, shift = best_block_split(values[start : index + 1])
        assert point.statistic == pytest.approx(statistic, rel=1e-9)
        assert point.threshold == pytest.approx(threshold, rel=1e-9)
        assert point.shift == pytest.approx(shift, rel=1e-9)
        assert point.statistic == pytest.approx(abs(point.shift))
        # river cut at a split of its own buckets, not of the blocks: near its bound, not always past it
        assert point.statistic > 0.8 * point.threshold


def batched_points(detector: AdwinDetector, values: np.ndarray, size: int) -> list:
    found = []
    for start in range(0, values.size, size):
        found += [(start + p.position, p) for p in detector.update(values[start : start + size])]
    return found


@pytest.mark.parametrize(
    ("factory", "parameter"),
    [
        (lambda: AdwinDetector(delta=0), "delta"),
        (lambda: PageHinkleyDetector(delta=-1), "delta"),
        (lambda: PageHinkleyDetector(threshold=0), "threshold"),
        (lambda: PageHinkleyDetector(alpha=1.5), "alpha"),
        (lambda: PageHinkleyDetector(min_instances=0), "min_instances"),
    ],
)
def test_bad_parameters_are_named(factory, parameter: str) -> None:
    with pytest.raises(ValueError, match=parameter):
        factory()


def test_unknown_snapshot_version_is_refused() -> None:
    snapshot = AdwinDetector().snapshot() | {"v": 99}
    with pytest.raises(SnapshotError):
        AdwinDetector.restore(snapshot)


def test_adwin_state_that_deserialises_but_cannot_run_is_refused_at_restore() -> None:
    detector = AdwinDetector()
    detector.update(stream()[:3000])
    snapshot = detector.snapshot()
    raw = bytearray(snapshot["state"]["_helper"]["bytes"])
    raw[96:104] = b"\xff" * 8  # an index inside river's buckets, out of range
    snapshot["state"]["_helper"]["bytes"] = bytes(raw)
    with pytest.raises(SnapshotError, match="does not run"):
        AdwinDetector.restore(snapshot)
