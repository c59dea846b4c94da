"""The two-sample tests give scipy's numbers (or a hand computation) on exact references, and windows slide right."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats
from scipy.spatial import distance

from detectors.reference import PSI_EPSILON, CategoricalReference, NumericReference
from detectors.two_sample import (
    ChiSquareTest,
    JensenShannonTest,
    KSTest,
    NullRateTest,
    PSITest,
    UnseenRateTest,
    WassersteinTest,
    pearson_chi2,
)
from detectors.window import WindowedDetector


def judge_once(reference, test, window):
    """The verdict of ``test`` on one window holding exactly ``window``."""
    detector = WindowedDetector(reference, [test], size=len(window))
    (verdict,) = detector.update(window)
    assert verdict.position == len(window) - 1
    return verdict


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin [edge_i-1, edge_i) of the non-missing values, counted one bin at a time."""
    values = values[~np.isnan(values)]
    bounds = [-np.inf, *edges, np.inf]
    return np.array([((values >= lo) & (values < hi)).sum() for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)])


# -- Kolmogorov-Smirnov ---------------------------------------------------------

KS_CASES = [  # seed, reference size (exact: <= 512 points), window size, shift, decimals (ties) or None
    (0, 300, 100, 0.0, None),
    (1, 512, 250, 0.3, 1),
    (2, 400, 1000, 1.0, None),
    (3, 200, 333, 0.1, 0),
    (4, 500, 50, 0.5, 2),
    (5, 64, 2000, 0.0, 1),
]


@pytest.mark.parametrize(("seed", "n", "m", "shift", "decimals"), KS_CASES)
def test_ks_equals_scipy_on_an_exact_reference(seed: int, n: int, m: int, shift: float, decimals: int | None) -> None:
    rng = np.random.default_rng(seed)
    reference_values, window = rng.normal(size=n), rng.normal(shift, 1.0, size=m)
    if decimals is not None:
        reference_values, window = np.round(reference_values, decimals), np.round(window, decimals)
    reference = NumericReference.build(reference_values, 10)
    assert reference.exact
    test = KSTest(alpha=1e-3)
    verdict = judge_once(reference, test, window)
    expected = stats.ks_2samp(reference_values, window, method="asymp")
    assert verdict.statistic == pytest.approx(expected.statistic, abs=1e-9)
    assert verdict.p_value == pytest.approx(expected.pvalue, abs=1e-9)
    # the line is the D whose asymptotic p-value is alpha, at the effective sample size
    size = round(n * m / (n + m))
    assert verdict.threshold == pytest.approx(stats.kstwo.isf(1e-3, size), abs=1e-12)
    assert stats.kstwo.sf(verdict.threshold, size) == pytest.approx(1e-3, rel=1e-4)  # isf's root search
    assert (verdict.p_value < 1e-3) == (verdict.statistic > verdict.threshold) == verdict.drift
    if verdict.drift:
        assert verdict.severity == ("critical" if verdict.statistic >= test.critical_effect else "warning")


@pytest.mark.parametrize("size", [1, 2, 50, 140, 141, 833, 5000, 100_000, 200_000])
def test_the_ks_p_value_is_scipys_kstwo_sf(size: int) -> None:
    # KSTest calls kstwo._sf directly (the public sf costs ~100 us more per window): same numbers,
    # over every regime of scipy's algorithm (exact, Pomeranz, Pelz-Good, 2 x smirnov, 0 and 1).
    for d in [0.0, 1e-4, 0.003, 0.01, 0.03, 0.05, 0.1, 0.3, 0.5, 0.7, 0.999, 1.0]:
        assert stats.kstwo._sf(d, size) == stats.kstwo.sf(d, size), (d, size)


def test_ks_sees_a_shift_and_not_its_absence() -> None:
    rng = np.random.default_rng(11)
    reference_values = rng.normal(size=500)
    reference = NumericReference.build(reference_values, 10)
    assert not judge_once(reference, KSTest(), rng.normal(size=500)).drift
    shifted = judge_once(reference, KSTest(), rng.normal(0.5, 1.0, size=500))
    assert shifted.severity == "critical" and shifted.statistic >= 0.2


@pytest.mark.parametrize("shift", [0.0, 0.05, 0.2, 1.0])
def test_ks_on_a_compacted_reference_is_within_its_rank_error(shift: float) -> None:
    rng = np.random.default_rng(12)
    reference_values = rng.normal(size=50_000)
    reference = NumericReference.build(reference_values, 10)  # default: 512 points
    assert not reference.exact and 0 < reference.rank_error < 0.01
    assert reference.count == reference_values.size
    for m in (100, 1000, 5000):
        window = rng.normal(shift, 1.0, size=m)
        verdict = judge_once(reference, KSTest(), window)
        exact = stats.ks_2samp(reference_values, window, method="asymp").statistic
        assert abs(verdict.statistic - exact) <= reference.rank_error


# -- chi-square -----------------------------------------------------------------


def labels(rng: np.random.Generator, names: list[str], shares: list[float], size: int) -> list[str | None]:
    return list(rng.choice(np.array(names, dtype=object), size=size, p=shares))


@pytest.mark.parametrize(
    ("seed", "max_categories", "window_names", "window_shares"),
    [
        (0, 10, ["a", "b", "c", "d"], [0.4, 0.3, 0.2, 0.1]),  # same mix
        (1, 10, ["a", "b", "c", "d"], [0.25, 0.25, 0.25, 0.25]),  # new mix, no unseen: "other" column dropped
        (2, 3, ["a", "b", "c", "d", "zz"], [0.3, 0.3, 0.2, 0.1, 0.1]),  # "other" in both
        (3, 10, ["a", "b", "zz"], [0.5, 0.3, 0.2]),  # unseen labels only in the window, c and d missing there
    ],
)
def test_chi_square_equals_scipy(seed: int, max_categories: int, window_names: list[str],
                                 window_shares: list[float]) -> None:  # fmt: skip
    rng = np.random.default_rng(seed)
    reference = CategoricalReference.build(labels(rng, ["a", "b", "c", "d"], [0.4, 0.3, 0.2, 0.1], 2000),
                                           max_categories)  # fmt: skip
    window = labels(rng, window_names, window_shares, 600)
    window[::50] = [None] * len(window[::50])  # missing values are not counted
    test = ChiSquareTest(alpha=1e-3)
    verdict = judge_once(reference, test, np.array(window, dtype=object))
    counts = reference.bucket_counts([w for w in window if w is not None])
    table = np.vstack([reference.proportions * reference.present, counts])
    table = table[:, table.sum(axis=0) > 0]
    chi2, p_value, dof, _ = stats.chi2_contingency(table, correction=False)
    assert verdict.statistic == pytest.approx(chi2, rel=1e-9)
    assert verdict.p_value == pytest.approx(p_value, rel=1e-9, abs=1e-300)
    assert verdict.threshold == pytest.approx(stats.chi2.isf(1e-3, dof), rel=1e-12)
    assert verdict.drift == (p_value < 1e-3)
    if verdict.drift:
        # the effect size: Cramér's V with the reference scaled to the window's size
        n = counts.sum()
        scaled = np.vstack([reference.proportions * n, counts])
        scaled = scaled[:, scaled.sum(axis=0) > 0]
        cramers_v = math.sqrt(stats.chi2_contingency(scaled, correction=False)[0] / (2 * n))
        assert verdict.severity == ("critical" if cramers_v >= test.critical_effect else "warning")


def test_pearson_chi2_is_chi2_contingencys() -> None:
    rng = np.random.default_rng(5)
    for _ in range(200):
        k = int(rng.integers(2, 60))
        table = rng.integers(0, 2000, size=(2, k)).astype(float) * rng.random((2, k)) ** 3
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] < 2:
            continue
        chi2, dof = pearson_chi2(table)
        expected = stats.chi2_contingency(table, correction=False)
        assert chi2 == pytest.approx(expected.statistic, rel=1e-12, abs=1e-12)
        assert dof == expected.dof
        assert special.chdtrc(dof, chi2) == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)


def test_chi_square_counts_are_what_the_window_holds() -> None:
    reference = CategoricalReference.build(["a"] * 50 + ["b"] * 30 + ["c"] * 20, 2)  # c goes to "other"
    window = np.array(["a"] * 10 + ["b"] * 20 + ["c"] * 5 + ["x"] * 5 + [None] * 10, dtype=object)
    verdict = judge_once(reference, ChiSquareTest(), window)
    table = np.array([[50.0, 30.0, 20.0], [10.0, 20.0, 10.0]])
    assert verdict.statistic == pytest.approx(stats.chi2_contingency(table, correction=False).statistic, rel=1e-12)


# -- Wasserstein ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "n", "m", "shift", "scale"),
    [(0, 300, 200, 0.0, 1.0), (1, 512, 1000, 0.7, 1.0), (2, 100, 50, -2.0, 3.0), (3, 400, 400, 0.0, 0.5)],
)
def test_wasserstein_equals_scipy_in_reference_stds(seed: int, n: int, m: int, shift: float, scale: float) -> None:
    rng = np.random.default_rng(seed)
    reference_values = rng.normal(10.0, 4.0, size=n)
    window = rng.normal(10.0 + 4.0 * shift, 4.0 * scale, size=m)
    window[::17] = np.nan  # missing values are left out
    reference = NumericReference.build(reference_values, 10)
    assert reference.exact
    verdict = judge_once(reference, WassersteinTest(), window)
    present = window[~np.isnan(window)]
    expected = stats.wasserstein_distance(present, reference_values) / np.std(reference_values)
    assert verdict.statistic == pytest.approx(expected, rel=1e-9)
    assert verdict.threshold in (0.15, 0.5)


# -- Jensen-Shannon and PSI -----------------------------------------------------


@pytest.mark.parametrize(("seed", "shift"), [(0, 0.0), (1, 0.5), (2, 2.0)])
def test_jensen_shannon_equals_scipy_on_numeric_bins(seed: int, shift: float) -> None:
    rng = np.random.default_rng(seed)
    reference_values = rng.normal(size=500)
    reference = NumericReference.build(reference_values, 10)
    window = rng.normal(shift, 1.0, size=800)
    verdict = judge_once(reference, JensenShannonTest(), window)
    expected_shares = bin_shares(reference_values, reference.edges) / reference_values.size
    assert reference.proportions == pytest.approx(expected_shares, abs=1e-12)
    counts = bin_shares(window, reference.edges)
    expected = distance.jensenshannon(reference.proportions, counts / counts.sum(), base=2)
    assert verdict.statistic == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_jensen_shannon_equals_scipy_on_categories() -> None:
    reference = CategoricalReference.build(["a"] * 50 + ["b"] * 30 + ["c"] * 20, 10)
    window = np.array(["a"] * 20 + ["b"] * 30 + ["c"] * 40 + ["z"] * 10 + [None] * 7, dtype=object)
    verdict = judge_once(reference, JensenShannonTest(), window)
    expected = distance.jensenshannon([0.5, 0.3, 0.2, 0.0], [0.2, 0.3, 0.4, 0.1], base=2)
    assert verdict.statistic == pytest.approx(expected, rel=1e-12)
    assert verdict.severity == "critical"  # about 0.27 > 0.2


def test_psi_on_categories_equals_a_hand_computation() -> None:
    reference = CategoricalReference.build(["a"] * 50 + ["b"] * 30 + ["c"] * 20, 10)
    window = np.array(["a"] * 20 + ["b"] * 30 + ["c"] * 40 + ["z"] * 10 + [None] * 5, dtype=object)
    verdict = judge_once(reference, PSITest(), window)
    # expected shares a .5, b .3, c .2, other 0 (floored at PSI_EPSILON); observed .2, .3, .4, .1
    expected = ((0.2 - 0.5) * math.log(0.2 / 0.5) + 0.0 + (0.4 - 0.2) * math.log(0.4 / 0.2)
                + (0.1 - PSI_EPSILON) * math.log(0.1 / PSI_EPSILON))  # fmt: skip
    assert verdict.statistic == pytest.approx(expected, rel=1e-12)
    assert (verdict.severity, verdict.threshold) == ("critical", 0.25)


def test_psi_on_numeric_bins_equals_a_hand_computation() -> None:
    reference_values = np.arange(100.0)
    reference = NumericReference.build(reference_values, 4)  # quartile bins
    assert reference.edges.size == 3 and np.all(np.abs(reference.edges - [25.0, 50.0, 75.0]) <= 1)
    shares = bin_shares(reference_values, reference.edges) / 100
    assert reference.proportions == pytest.approx(shares, abs=1e-15)
    window = np.array([1.0] * 10 + [30.0] * 20 + [60.0] * 30 + [80.0] * 40 + [np.nan] * 3)  # one value per bin
    verdict = judge_once(reference, PSITest(), window)
    expected = sum((a - e) * math.log(a / e) for a, e in zip((0.1, 0.2, 0.3, 0.4), shares, strict=True))
    assert verdict.statistic == pytest.approx(expected, rel=1e-12)
    assert 0.1 < expected < 0.25 and (verdict.severity, verdict.threshold) == ("warning", 0.1)
    same = np.repeat([10.0, 40.0, 60.0, 90.0], (shares * 100).astype(int))
    quiet = judge_once(reference, PSITest(), same)
    assert quiet.statistic == pytest.approx(0.0, abs=1e-15) and quiet.severity is None


# -- unseen and missing shares --------------------------------------------------


def test_unseen_rate_is_the_rise_of_the_other_share() -> None:
    reference = CategoricalReference.build(["a"] * 50 + ["b"] * 30 + ["c"] * 20, 2)  # other share 0.2
    assert reference.other_share == pytest.approx(0.2, abs=1e-15)
    window = np.array(["a"] * 40 + ["b"] * 30 + ["c"] * 10 + ["d"] * 10 + [None] * 10, dtype=object)
    verdict = judge_once(reference, UnseenRateTest(), window)
    assert verdict.statistic == pytest.approx(20 / 90 - 0.2, abs=1e-15)  # missing values are not counted
    assert verdict.severity is None
    verdict = judge_once(reference, UnseenRateTest(), np.array(["x"] * 6 + ["a"] * 4, dtype=object))
    assert verdict.statistic == pytest.approx(0.6 - 0.2, abs=1e-15) and verdict.severity == "critical"


def test_null_rate_is_the_rise_of_the_missing_share() -> None:
    categorical = CategoricalReference.build(["a"] * 80 + [None] * 20, 5)  # null rate 0.2
    window = np.array(["a"] * 65 + [None] * 35, dtype=object)
    verdict = judge_once(categorical, NullRateTest(), window)
    assert verdict.statistic == pytest.approx(0.35 - 0.2, abs=1e-15) and verdict.severity == "warning"

    numeric = NumericReference.build(np.arange(90.0), 5, missing=10)  # null rate 0.1
    window = np.where(np.arange(100) % 10 < 5, np.nan, 1.0)  # half missing
    verdict = judge_once(numeric, NullRateTest(), window)
    assert verdict.statistic == pytest.approx(0.5 - 0.1, abs=1e-15) and verdict.severity == "critical"
    verdict = judge_once(numeric, NullRateTest(), np.ones(40))
    assert verdict.statistic == pytest.approx(-0.1, abs=1e-15) and verdict.severity is None


# -- windows --------------------------------------------------------------------


@pytest.mark.parametrize(("size", "step", "n", "positions"), [
    (1000, 100, 4000, list(range(999, 4000, 100))),  # after 1000 values, then every 100
    (1000, 1000, 4000, [999, 1999, 2999, 3999]),
    (1000, None, 4050, [999, 1999, 2999, 3999]),  # tumbling by default
    (2, 1, 300, list(range(1, 300))),
])  # fmt: skip
def test_windows_are_judged_at_the_right_values(size: int, step: int | None, n: int, positions: list[int]) -> None:
    rng = np.random.default_rng(5)
    reference_values = rng.normal(size=300)
    reference = NumericReference.build(reference_values, 10)
    values = rng.normal(size=n)
    values[::13] = np.nan
    times = rng.permutation(n) + 1e9  # out of order: the window's start is its earliest time
    detector = WindowedDetector(reference, [KSTest(), NullRateTest()], size=size, step=step)
    seen: list[int] = []
    start = 0
    for batch in rng.integers(1, min(n, 700), size=n):
        chunk = values[start : start + batch]
        for evaluation in detector.evaluate(chunk, times[start : start + batch], summaries=True):
            end = start + evaluation.position  # global index of the value that closed the window
            seen.append(end)
            window = values[max(0, end - size + 1) : end + 1]
            assert evaluation.count == size == window.size
            assert evaluation.start_time == times[max(0, end - size + 1) : end + 1].min()
            present = window[~np.isnan(window)]
            assert evaluation.summary["count"] == size
            assert evaluation.summary["mean"] == pytest.approx(present.mean(), rel=1e-12)
            if size > 2:
                assert evaluation.scores["ks"].statistic == pytest.approx(
                    stats.ks_2samp(reference_values, present).statistic, abs=1e-12)  # fmt: skip
            assert evaluation.scores["null_rate"].statistic == pytest.approx(1 - present.size / size, abs=1e-12)
        start += batch
        if start >= values.size:
            break
        if detector.fill == size:  # the ring holds exactly the last `size` values, oldest first
            np.testing.assert_array_equal(detector.recent(), values[start - size : start])
    assert seen == positions


@pytest.mark.parametrize("step", [None, 250])
def test_a_version_1_window_snapshot_restores_with_its_start_time(step: int | None) -> None:
    # Version 1 kept a ring of times for every window; version 2 keeps it for sliding windows only.
    rng = np.random.default_rng(9)
    reference = NumericReference.build(rng.normal(size=500), 10)
    values, times = rng.normal(size=2600), rng.permutation(2600) + 1e9
    straight = WindowedDetector(reference, [PSITest()], size=1000, step=step)
    expected = [e.start_time for e in straight.evaluate(values, times)]
    first = WindowedDetector(reference, [PSITest()], size=1000, step=step)
    found = [e.start_time for e in first.evaluate(values[:1700], times[:1700])]
    ring_times = np.zeros(1000)
    ring_times[np.arange(1700) % 1000] = times[:1700]  # what version 1 held: the time of each ring value
    old = first.snapshot() | {"v": 1, "times": ring_times.tobytes()}
    del old["earliest"]
    second = WindowedDetector.restore(old)
    found += [e.start_time for e in second.evaluate(values[1700:], times[1700:])]
    assert found == expected and len(expected) == (2 if step is None else 7)
    assert second.snapshot() == straight.snapshot()


def test_a_categorical_window_holds_the_last_values() -> None:
    reference = CategoricalReference.build(["a", "b", "c"] * 10, 2)
    values = np.array((["a", "b", "c", "x", None] * 30)[:137], dtype=object)
    detector = WindowedDetector(reference, [UnseenRateTest()], size=10, step=3)
    for start in range(0, values.size, 9):
        detector.update(values[start : start + 9])
        end = min(start + 9, values.size)
        np.testing.assert_array_equal(detector.recent(), reference.codes(list(values[max(0, end - 10) : end])))


def test_chi_square_severity_does_not_depend_on_the_reference_size() -> None:
    from detectors.reference import CategoricalReference
    from detectors.two_sample import CategoricalWindow, ChiSquareTest

    rng = np.random.default_rng(12)
    shares = [0.4, 0.3, 0.2, 0.1]
    window = CategoricalWindow(np.array([100, 200, 300, 400, 0]), 0)  # the mix reversed; nothing "other"
    test = ChiSquareTest()
    effects = []
    for size in (5_000, 100_000):
        labels = rng.choice(list("abcd"), size, p=shares).tolist()
        reference = CategoricalReference.build(labels, max_categories=10)
        score = test.score(reference, window)
        assert test.judge(score)[0] == "critical"
        effects.append(score.effect)
    assert effects[0] == pytest.approx(effects[1], abs=0.02)


@pytest.mark.parametrize("earliest", [math.nan, math.inf, -math.inf, True, "1", b"7"])
def test_a_window_snapshot_with_a_bad_earliest_time_is_refused(earliest) -> None:
    from detectors import SnapshotError

    reference = NumericReference.build(np.random.default_rng(3).normal(size=300), 10)
    detector = WindowedDetector(reference, [PSITest()], size=100)
    detector.evaluate(np.zeros(40), np.full(40, 1e9))
    assert detector.snapshot()["earliest"] == 1e9
    with pytest.raises(SnapshotError):
        WindowedDetector.restore(detector.snapshot() | {"earliest": earliest})


def test_a_version_1_window_snapshot_with_times_of_the_wrong_size_is_refused() -> None:
    from detectors import SnapshotError

    reference = NumericReference.build(np.random.default_rng(3).normal(size=300), 10)
    detector = WindowedDetector(reference, [PSITest()], size=100)
    detector.evaluate(np.zeros(40), np.full(40, 1e9))
    old = detector.snapshot() | {"v": 1, "times": np.zeros(99).tobytes()}
    del old["earliest"]
    with pytest.raises(SnapshotError):
        WindowedDetector.restore(old)


@pytest.mark.parametrize("step", [None, 10])
def test_window_times_must_be_finite_and_one_per_value(step: int | None) -> None:
    reference = NumericReference.build(np.random.default_rng(3).normal(size=300), 10)
    detector = WindowedDetector(reference, [PSITest()], size=100, step=step)
    for times in ([1e9, math.nan, 1e9], [1e9, math.inf, 1e9], [1e9, 1e9]):
        with pytest.raises(ValueError, match="finite"):
            detector.evaluate(np.zeros(3), times)
    assert detector.fill == 0
    detector.evaluate(np.zeros(3), [3.0, 1.0, 2.0])  # a list is fine
    assert detector.fill == 3


# -- out_of_range ---------------------------------------------------------------------------------


def _out_of_range(reference_values: np.ndarray, window: np.ndarray, alpha: float = 1.02e-9):
    from detectors.two_sample import NumericWindow, OutOfRangeTest

    reference = NumericReference.build(reference_values, 10)
    values = np.sort(window)
    test = OutOfRangeTest(alpha=alpha)
    score = test.score(reference, NumericWindow(values, 0, reference.bin_counts(values)))
    return reference, score, test.judge(score)


def test_out_of_range_counts_the_window_outside_the_widened_quantiles() -> None:
    rng = np.random.default_rng(3)
    reference_values = rng.normal(size=400)  # exact: every value held
    reference, score, _ = _out_of_range(reference_values, np.array([-10.0, -2.0, 0.0, 2.0, 10.0, 50.0]))
    low, high = np.quantile(reference_values, [0.01, 0.99], method="inverted_cdf")
    first, last, beyond = reference.value_range(0.01, 0.5)
    assert (first, last) == pytest.approx((low - 0.5 * (high - low), high + 0.5 * (high - low)))
    assert beyond == int(((reference_values < first) | (reference_values > last)).sum())
    first, last, _ = reference.value_range(0.001, 0.1)
    window = np.array([-10.0, -2.0, 0.0, 2.0, 10.0, 50.0])
    assert score.statistic == pytest.approx(((window < first) | (window > last)).mean())


@pytest.mark.parametrize("seed", range(5))
def test_a_compacted_reference_never_counts_fewer_values_outside_than_there_are(seed: int) -> None:
    values = np.random.default_rng(seed).standard_t(3, size=5000)
    reference = NumericReference.build(values, 10)
    assert reference.rank_error > 0
    for quantile, margin in ((0.001, 0.0), (0.001, 0.1), (0.01, 0.0), (0.05, 0.2)):
        first, last, beyond = reference.value_range(quantile, margin)
        assert beyond >= int(((values < first) | (values > last)).sum()), (quantile, margin)


def test_ties_at_a_quantile_leave_the_line_under_every_share() -> None:
    """A 0/1 flag or a count that is mostly 0: their quantiles sit on ties, which may not lift the line
    over a window that is all garbage, and a stable window stays quiet."""
    rng = np.random.default_rng(1)
    flag = (rng.random(5000) < 0.3).astype(float)
    _, score, (severity, line) = _out_of_range(flag, np.full(1000, -999.0))
    assert score.statistic == 1.0 and severity == "critical" and line == 0.1  # the critical option, not a tie count
    _, _, (severity, _) = _out_of_range(flag, (rng.random(1000) < 0.3).astype(float))
    assert severity is None
    counts = np.where(rng.random(5000) < 0.7, 0.0, rng.poisson(5, 5000))
    window = np.where(rng.random(1000) < 0.7, 0.0, rng.poisson(5, 1000))
    assert _out_of_range(counts, window)[2][0] is None
    window[:300] = 1e6
    assert _out_of_range(counts, window)[2][0] == "critical"
