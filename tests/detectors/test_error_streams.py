"""DDM, EDDM, HDDM_A and HDDM_W: river's detections, batch by batch, on 0/1 error streams."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from river.drift import binary

from detectors.streaming import DDMDetector, EDDMDetector, HDDMADetector, HDDMWDetector, RiverDetector

JUMP = 2000


def errors(seed: int, rates: tuple[float, ...] = (0.1, 0.3, 0.1, 0.5), length: int = 1000) -> np.ndarray:
    """A 0/1 error stream whose error rate steps through ``rates``, ``length`` values each."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.random(length) < rate for rate in rates]).astype(np.float64)


def river_indices(detector: Any, values: np.ndarray) -> list[int]:
    found = []
    for i, value in enumerate(values):
        detector.update(int(value))
        if detector.drift_detected:
            found.append(i)
    return found


def batched(detector: RiverDetector, values: np.ndarray, size: int) -> list[tuple[int, float, float]]:
    found = []
    for start in range(0, values.size, size):
        found += [(start + v.position, v.statistic, v.threshold) for v in detector.update(values[start : start + size])]
    return found


PAIRS = [  # ours, river's, parameters for both, seed of the stream
    pytest.param(DDMDetector, binary.DDM, {}, 0, id="ddm"),
    pytest.param(DDMDetector, binary.DDM, {}, 1, id="ddm-seed1"),
    pytest.param(DDMDetector, binary.DDM, {"warm_start": 100, "warning_threshold": 1.5, "drift_threshold": 2.5}, 2,
                 id="ddm-tuned"),
    pytest.param(EDDMDetector, binary.EDDM, {}, 0, id="eddm"),
    pytest.param(EDDMDetector, binary.EDDM, {}, 1, id="eddm-seed1"),
    pytest.param(EDDMDetector, binary.EDDM, {"warm_start": 60, "alpha": 0.9, "beta": 0.8}, 2, id="eddm-tuned"),
    pytest.param(HDDMADetector, binary.HDDMA, {}, 0, id="hddm_a"),
    pytest.param(HDDMADetector, binary.HDDMA, {}, 1, id="hddm_a-seed1"),
    pytest.param(HDDMADetector, binary.HDDMA, {"two_sided_test": True, "drift_confidence": 0.0005}, 2,
                 id="hddm_a-two-sided"),
    pytest.param(HDDMWDetector, binary.HDDMW, {}, 0, id="hddm_w"),
    pytest.param(HDDMWDetector, binary.HDDMW, {}, 1, id="hddm_w-seed1"),
    pytest.param(HDDMWDetector, binary.HDDMW, {"two_sided_test": True, "lambda_val": 0.1}, 2, id="hddm_w-two-sided"),
]  # fmt: skip


@pytest.mark.parametrize(("ours", "theirs", "params", "seed"), PAIRS)
def test_detects_where_river_does(ours: type[RiverDetector], theirs: Any, params: dict[str, Any], seed: int) -> None:
    values = errors(seed)
    # river's class with the very parameters ours runs with (ours has its own defaults)
    expected = river_indices(theirs(**ours(**params).params), values)
    assert expected, "the stream should make river signal"
    for size in (1, 37, 1000):
        found = batched(ours(**params), values, size)
        assert [index for index, _, _ in found] == expected, f"batch size {size}"
        # a drift verdict reports a statistic at or past its line (a float rounding aside)
        assert all(statistic >= threshold - 1e-12 for _, statistic, threshold in found), found


@pytest.mark.parametrize("cls", [DDMDetector, HDDMADetector, HDDMWDetector])
@pytest.mark.parametrize("seed", [2, 3, 4])
def test_a_jump_from_10_to_30_percent_errors_is_detected(cls: type[RiverDetector], seed: int) -> None:
    values = errors(seed, rates=(0.1, 0.3), length=JUMP)
    found = [index for index, _, _ in batched(cls(), values, 500)]
    assert found, "no detection"
    assert found[0] >= JUMP, f"false alarm at {found[0]} on the stable 10% part"
    assert found[0] < JUMP + 500, f"the jump took {found[0] - JUMP} values to detect"


@pytest.mark.parametrize("cls", [EDDMDetector])
@pytest.mark.parametrize("seed", [2, 3, 4])
def test_a_jump_is_detected_soon_by_the_noisier_ones(cls: type[RiverDetector], seed: int) -> None:
    # EDDM fires every few hundred values on a stable 10% stream (the distance between errors is noisy):
    # here only the prompt signal after the jump is asserted.
    values = errors(seed, rates=(0.1, 0.3), length=JUMP)
    found = [index for index, _, _ in batched(cls(), values, 500)]
    after = [index - JUMP for index in found if index >= JUMP]
    assert after and after[0] < 200, f"first signal {after[:1]} values after the jump"


def test_readable_results_follow_river_during_warm_up() -> None:
    ddm = DDMDetector(warm_start=30)
    ddm.update(np.array([0.0, 1.0, 0.0]))  # river has no minimum yet
    assert ddm.statistic == pytest.approx(1 / 3 + (2 / 9 / 3) ** 0.5)
    assert ddm.threshold == float("inf") and not ddm.drift_detected


@pytest.mark.parametrize("cls", [DDMDetector, EDDMDetector, HDDMADetector, HDDMWDetector])
def test_booleans_and_integers_are_an_error_stream_too(cls: type[RiverDetector]) -> None:
    values = errors(5, rates=(0.1, 0.4), length=1500)
    expected = batched(cls(), values, 100)
    assert expected
    as_bool = cls()
    assert batched(as_bool, values.astype(bool), 100) == expected  # type: ignore[arg-type]
    assert batched(cls(), values.astype(np.int8), 100) == expected  # type: ignore[arg-type]
