"""Multivariate drift of a model's numeric inputs: PCA reconstruction error and outlier events."""

from __future__ import annotations

from collections.abc import Iterator

import msgpack
import numpy as np
import pytest
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from detectors import SnapshotError
from detectors.budget import window_alpha
from detectors.columns import Column
from detectors.config import MonitorConfig
from detectors.monitors.base import Alert
from detectors.monitors.multivariate import MultivariateMonitor

DEFAULTS = MonitorConfig()
_ALPHA = window_alpha(DEFAULTS, 0)  # what the model monitor passes, no slices: ~1e-9
assert _ALPHA is not None
BUDGET_ALPHA: float = _ALPHA
SMALL = MonitorConfig(reference_size=1000, window_size=250)
T0 = 1.7e9

Data = dict[str, np.ndarray]


def correlated(rng: np.random.Generator, n: int, rho: float) -> tuple[np.ndarray, np.ndarray]:
    """Two N(0, 1) series with correlation ``rho``."""
    a = rng.standard_normal(n)
    return a, rho * a + np.sqrt(1.0 - rho * rho) * rng.standard_normal(n)


def flipped(n: int, flip: int, back: int, seed: int = 1) -> Data:
    """x1, x2 ~ N(0, 1) with rho 0.9, -0.9 in [flip, back); z0..z2 independent N(0, 1)."""
    rng = np.random.default_rng(seed)
    x1, x2 = correlated(rng, n, 0.9)
    y1, y2 = correlated(rng, n, -0.9)
    x1[flip:back], x2[flip:back] = y1[flip:back], y2[flip:back]
    return {"x1": x1, "x2": x2, **{f"z{i}": rng.standard_normal(n) for i in range(3)}}


Batch = tuple[dict[str, Column], np.ndarray, np.ndarray]


def batches(data: Data, sizes: int | list[int], start: int = 0, stop: int | None = None,
            absent: dict[str, set[int]] | None = None) -> Iterator[Batch]:  # fmt: skip
    """The stream's events [start, stop) in batches (``absent``: feature -> batch numbers without it)."""
    stop = len(next(iter(data.values()))) if stop is None else stop
    cuts = iter(sizes) if isinstance(sizes, list) else None
    s, number = start, 0
    while s < stop:
        e = min(stop, s + (next(cuts) if cuts is not None else sizes))  # type: ignore[operator]
        columns = {k: Column.from_numbers(v[s:e]) for k, v in data.items() if number not in (absent or {}).get(k, ())}
        yield columns, np.arange(s, e), T0 + np.arange(s, e) * 0.01
        s, number = e, number + 1


def feed(monitor: MultivariateMonitor, items: Iterator[Batch]) -> list[Alert]:
    alerts: list[Alert] = []
    for features, index, times in items:
        alerts += monitor.observe(features, index, times)
    return alerts


def packed(monitor: MultivariateMonitor) -> bytes:
    return msgpack.packb(monitor.snapshot())


def brief(alerts: list[Alert]) -> list[tuple[str, str, str, int]]:
    return [(a.detector, a.status, a.severity, a.event_index) for a in alerts]


# -- the fit against numpy and scikit-learn ----------------------------------------------------------


def mixed(n: int, seed: int = 3, d: int = 6) -> Data:
    """Correlated Gaussian inputs with distinct variances (so distinct eigenvalues), one skewed."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((d, d)) * np.linspace(2.0, 0.3, d)[:, None]
    values = rng.standard_normal((n, d)) @ mixing + np.arange(d) * 10.0
    values[:, -1] = np.exp(values[:, -1] / 10.0)
    return {f"f{j}": values[:, j].copy() for j in range(d)}


def test_the_fit_matches_sklearn_pca_and_the_reconstruction_error_a_direct_computation() -> None:
    config = SMALL
    data = mixed(3000)
    monitor = MultivariateMonitor(config, alpha=None)
    feed(monitor, batches(data, 137, stop=2 * config.reference_size + config.window_size))
    names = sorted(data)
    rows = np.column_stack([data[k] for k in names])
    fit, calibration = rows[:1000], rows[1000:2000]
    window = rows[2000:2250]

    scaler = StandardScaler().fit(fit)
    np.testing.assert_allclose(monitor.mean, scaler.mean_, rtol=1e-12)
    np.testing.assert_allclose(monitor.std, scaler.scale_, rtol=1e-10)
    pca = PCA(n_components=config.pca_variance, svd_solver="full").fit(scaler.transform(fit))
    assert monitor.columns == names
    k = monitor.kept
    assert monitor.components is not None and k == pca.n_components_ and 2 <= k < len(names)
    # Components equal up to sign; the monitor's sign: its largest |component| positive.
    mine = monitor.components.T
    signs = np.sign(np.sum(mine * pca.components_, axis=1))
    np.testing.assert_allclose(mine, pca.components_ * signs[:, None], atol=1e-9)
    assert np.all(mine[np.arange(k), np.argmax(np.abs(mine), axis=1)] > 0)
    np.testing.assert_allclose(monitor.eigenvalues[:k], pca.explained_variance_, rtol=1e-10)
    assert monitor.explained_variance == pytest.approx(pca.explained_variance_ratio_.sum(), rel=1e-10)
    # ... and every eigenvalue that of numpy's SVD of the standardised rows.
    singular = np.linalg.svd(scaler.transform(fit), compute_uv=False)
    np.testing.assert_allclose(monitor.eigenvalues, singular**2 / (len(fit) - 1), rtol=1e-9, atol=1e-12)

    def errors(x: np.ndarray) -> np.ndarray:
        z = np.clip(scaler.transform(x), -6.0, 6.0)  # the monitor clips standardised values at 6
        assert np.abs(scaler.transform(x)).max() < 6.0  # ... which these never reach
        return np.linalg.norm(z - pca.inverse_transform(pca.transform(z)), axis=1)

    direct = errors(calibration)
    assert monitor.error_mean == pytest.approx(direct.mean(), rel=1e-10)
    assert monitor.error_sd == pytest.approx(direct.std(ddof=1), rel=1e-9)
    assert monitor.error_skew == pytest.approx(stats.skew(direct), rel=1e-7)
    statistic, line = monitor.statistics()["pca_reconstruction"]
    assert statistic == pytest.approx(errors(window).mean(), rel=1e-10)
    assert (line - monitor.error_mean) * (statistic - monitor.error_mean) > 0  # the line on the statistic's side


def test_missing_values_give_the_pairwise_complete_covariance_and_mean_imputation() -> None:
    config = SMALL
    data = mixed(2600, seed=8, d=4)
    rng = np.random.default_rng(9)
    for values in data.values():
        values[1:][rng.random(len(values) - 1) < 0.15] = np.nan  # event 0 complete: every column counts
    monitor = MultivariateMonitor(config)
    feed(monitor, batches(data, 91, stop=2250))
    names = sorted(data)
    fit = np.column_stack([data[k] for k in names])[:1000]
    mean, std = np.nanmean(fit, axis=0), np.nanstd(fit, axis=0)
    np.testing.assert_allclose(monitor.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(monitor.std, std, rtol=1e-10)
    d = len(names)
    covariance = np.empty((d, d))
    for i in range(d):
        for j in range(d):
            both = ~np.isnan(fit[:, i]) & ~np.isnan(fit[:, j])
            covariance[i, j] = np.cov(fit[both, i], fit[both, j])[0, 1] / (std[i] * std[j])
    values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(-values)
    np.testing.assert_allclose(monitor.eigenvalues, values[order], rtol=1e-9)
    assert monitor.components is not None
    for c in range(monitor.kept):
        assert abs(monitor.components[:, c] @ vectors[:, order[c]]) == pytest.approx(1.0, abs=1e-9)
    # Missing values reconstruct from the reference mean (0 once standardised), as NannyML imputes.
    window = np.column_stack([data[k] for k in names])[2000:2250]
    z = np.nan_to_num((window - mean) / std)
    kept = monitor.components
    direct = np.linalg.norm(z - z @ kept @ kept.T, axis=1).mean()
    assert monitor.statistics()["pca_reconstruction"][0] == pytest.approx(direct, rel=1e-10)


# -- what it catches, and what it lets be -------------------------------------------------------------


def test_a_correlation_flip_with_unchanged_marginals_is_caught_while_ks_on_each_feature_is_not() -> None:
    data = flipped(22_000, flip=15_000, back=18_000)
    monitor = MultivariateMonitor(DEFAULTS, alpha=BUDGET_ALPHA)
    alerts = feed(monitor, batches(data, 1000))
    assert brief(alerts) == [("pca_reconstruction", "firing", "critical", 15_999),
                             ("pca_reconstruction", "resolved", "critical", 18_999)]  # fmt: skip
    fired = alerts[0]
    assert (fired.type, fired.feature, fired.p_value is not None) == ("data_drift", None, True)
    assert fired.statistic > 1.5 * fired.reference["error_mean"] and fired.statistic > fired.threshold
    assert fired.threshold == fired.current["upper_line"] < 1.2 * fired.reference["error_mean"]
    assert fired.p_value is not None and fired.p_value < 1e-100
    assert (fired.window_count, fired.window_start, fired.window_end) == (1000, T0 + 150.0, T0 + 159.99)
    assert fired.reference["components"] == 3 and fired.reference["columns"] == ["x1", "x2", "z0", "z1", "z2"]
    assert [name for name, *_ in fired.current["residual_columns"][:2]] == ["x1", "x2"]
    assert "most of it in x1, x2" in fired.message and fired.message.endswith("(data_drift, critical)")
    # Each feature's own distribution did not move: KS on the same window against the reference
    # rows does not reject, not even at pca_alpha (1e-4), let alone at the budget's alpha.
    for name, values in data.items():
        p_value = stats.ks_2samp(values[:5000], values[15_000:16_000]).pvalue
        assert p_value > DEFAULTS.pca_alpha > BUDGET_ALPHA, (name, p_value)


def test_stable_inputs_raise_nothing_at_the_budgets_alpha() -> None:
    n = 200_000
    for seed in (11, 12):
        rng = np.random.default_rng(seed)
        a, b = correlated(rng, n, 0.7)
        data = {"a": a, "b": b, "c": 0.5 * a + rng.standard_normal(n), "d": rng.standard_normal(n),
                "skewed": rng.lognormal(0.0, 1.0, n)}  # fmt: skip
        monitor = MultivariateMonitor(DEFAULTS, alpha=BUDGET_ALPHA)
        assert feed(monitor, batches(data, 1000)) == []
        error, line = monitor.statistics()["pca_reconstruction"]
        assert abs(error - monitor.error_mean) < abs(line - monitor.error_mean)
        assert monitor.statistics()["outliers"][0] < monitor.statistics()["outliers"][1]


def test_one_extreme_value_moves_neither_test() -> None:
    """A single legitimate but extreme value (an amount of money, say): PCA clips standardised values
    at 6, so it cannot move a window's mean error on its own; one event out is no outlier burst."""
    data = flipped(13_000, flip=13_000, back=13_000)
    data["z0"][12_345] = 1e4  # 10^4 reference std: unclipped, +10 on its window's mean error
    monitor = MultivariateMonitor(DEFAULTS, alpha=BUDGET_ALPHA)
    assert feed(monitor, batches(data, 1000)) == []
    assert monitor.statistics()["pca_reconstruction"][0] < monitor.error_mean + 0.1


def test_a_burst_of_huge_values_fires_outliers_and_resolves_when_it_ends() -> None:
    n = 20_000
    rng = np.random.default_rng(21)
    data = {f"f{j}": rng.standard_normal(n) for j in range(5)}
    burst = np.arange(15_000, 17_000)
    hit = burst[rng.random(burst.size) < 0.05]
    for row, column in zip(hit, rng.integers(0, 5, hit.size), strict=True):
        data[f"f{column}"][row] = 1e6
    alerts = feed(MultivariateMonitor(DEFAULTS, alpha=BUDGET_ALPHA), batches(data, 500))
    outliers = [a for a in alerts if a.detector == "outliers"]
    assert brief(outliers) == [("outliers", "firing", "warning", 15_999), ("outliers", "resolved", "warning", 17_999)]
    fired = outliers[0]
    assert (fired.type, fired.feature, fired.p_value) == ("data_quality", None, None)
    assert fired.statistic == pytest.approx(np.sum((hit >= 15_000) & (hit < 16_000)) / 1000)
    assert 0.01 <= fired.threshold < fired.statistic  # the option's line, or the null line if higher
    assert fired.reference["outlier_share"] == 0.0
    assert sum(count for _, count in fired.current["outlier_columns"]) == fired.current["outliers"]
    assert fired.message.endswith("(data_quality, warning)")


def test_stable_heavy_tailed_inputs_do_not_fire_outliers() -> None:
    n = 100_000
    rng = np.random.default_rng(31)
    data = {**{f"t{j}": rng.standard_t(3, n) for j in range(4)}, "skewed": rng.lognormal(0.0, 1.0, n)}
    monitor = MultivariateMonitor(DEFAULTS, alpha=BUDGET_ALPHA)
    alerts = feed(monitor, batches(data, 1000))
    assert [a for a in alerts if a.detector == "outliers"] == []
    share, line = monitor.statistics()["outliers"]
    # About 1% of these events lie 6 std out, the option's warning line: the reference's own share
    # (the null line) keeps them quiet.
    assert monitor.cal_outliers / monitor.cal_rows > DEFAULTS.outlier_warning
    assert share < line and line > DEFAULTS.outlier_warning


# -- the stream's cut, snapshots ----------------------------------------------------------------------


def eventful(n: int, config: MonitorConfig, seed: int = 41) -> Data:
    """A correlation flip, then a burst of outliers, with missing values throughout."""
    r, w = config.reference_size, config.window_size
    data = flipped(n, flip=2 * r + 2 * w, back=2 * r + 4 * w, seed=seed)
    rng = np.random.default_rng(seed)
    burst = np.arange(2 * r + 6 * w, 2 * r + 8 * w)
    data["z1"][burst[rng.random(burst.size) < 0.2]] = 1e6
    for values in data.values():
        values[1:][rng.random(n - 1) < 0.03] = np.nan
    return data


def test_the_same_alerts_whatever_the_batching() -> None:
    config = SMALL
    data = eventful(5000, config)
    runs = {}
    for sizes in (1, 7, 1000, [int(s) for s in np.random.default_rng(5).integers(1, 400, 1000)]):
        monitor = MultivariateMonitor(config, alpha=1e-6)
        runs[str(sizes)[:10]] = (feed(monitor, batches(data, sizes)), packed(monitor), monitor.statistics())
    (alerts, snapshot, statistics), *others = runs.values()
    assert {a.detector for a in alerts} == {"pca_reconstruction", "outliers"}
    assert {a.status for a in alerts} == {"firing", "resolved"}
    for other in others:
        assert other[0] == alerts  # every field, the dicts included
        assert other[1] == snapshot and other[2] == statistics


def test_the_same_alerts_in_batches_of_7_and_1000_at_the_defaults() -> None:
    data = eventful(24_000, DEFAULTS, seed=43)
    first, second = MultivariateMonitor(DEFAULTS, alpha=BUDGET_ALPHA), MultivariateMonitor(DEFAULTS, alpha=BUDGET_ALPHA)
    alerts = feed(first, batches(data, 7))
    assert len(alerts) >= 4 and alerts == feed(second, batches(data, 1000))
    assert packed(first) == packed(second)


@pytest.mark.parametrize("cut", [300, 1000, 1600, 2000, 2000 + 250 * 2 + 100, 2000 + 250 * 7 + 3])
def test_a_restored_snapshot_continues_identically(cut: int) -> None:
    """Cut during the fit (a block held), at its end, in calibration, at its end, mid-window while firing."""
    config = SMALL
    data = eventful(5000, config)
    whole = MultivariateMonitor(config, alpha=1e-6)
    expected = feed(whole, batches(data, 97))
    first = MultivariateMonitor(config, alpha=1e-6)
    before = feed(first, batches(data, 97, stop=cut))
    wire = msgpack.unpackb(packed(first))
    restored = MultivariateMonitor.restore(wire, config, alpha=1e-6)
    assert packed(restored) == packed(first)
    after = feed(restored, batches(data, 97, start=cut))
    assert before + after == expected
    assert packed(restored) == packed(whole)


def test_a_malformed_snapshot_is_refused() -> None:
    monitor = MultivariateMonitor(SMALL)
    feed(monitor, batches(eventful(5000, SMALL), 100, stop=2600))
    good = monitor.snapshot()
    assert good["model"] is not None and good["window"] is not None
    broken = [
        {**good, "v": 99},
        {key: value for key, value in good.items() if key != "calibration"},
        {**good, "shift": good["shift"][:-1]},
        {**good, "columns": "x1"},
        {**good, "model": {**good["model"], "kept": 9}},
        {**good, "firing": ["loud", None]},
        {**good, "window": {**good["window"], "column_outliers": [1, 2]}},
        {**good, "latest": [["psi", 1.0, 2.0]]},
        {**good, "calibration": {**good["calibration"], "sums": [1.0]}},
    ]
    for data in broken:
        with pytest.raises(SnapshotError):
            MultivariateMonitor.restore(data, SMALL)


# -- which inputs, and what is missing ---------------------------------------------------------------


def test_columns_are_the_numbers_at_the_first_event_and_nothing_later() -> None:
    config = MonitorConfig(reference_size=100, window_size=50, max_features=3)
    monitor = MultivariateMonitor(config, kinds={"declared": "categorical"})
    first = {
        "b": Column.from_values([1.5, 2.0]), "a": Column.from_values([3, 4]), "c": Column.from_values([0.5, None]),
        "d": Column.from_values([7.0, 1.0]),
        "late": Column.from_values([None, 1.0]), "flag": Column.from_values([True, False]),
        "text": Column.from_values(["x", "y"]), "declared": Column.from_values([1.0, 2.0]),
        "inf": Column.from_numbers(np.array([np.inf, 1.0])),
    }  # fmt: skip
    monitor.observe(first, np.arange(2), np.zeros(2))
    assert monitor.columns == ["a", "b", "c"]  # sorted, at most max_features; d is the fourth
    monitor.observe({"late": Column.from_values([1.0]), "a": Column.from_values([1.0])}, np.array([2]), np.zeros(1))
    assert monitor.columns == ["a", "b", "c"]


def test_one_column_runs_outliers_without_pca_and_both_off_does_nothing() -> None:
    rng = np.random.default_rng(51)
    values = rng.standard_normal(4000)
    values[3000:3250:16] = 1e3
    data = {"only": values, "word": np.full(4000, np.nan)}
    alerts = feed(MultivariateMonitor(SMALL), batches(data, 100))
    assert brief(alerts) == [("outliers", "firing", "warning", 3249), ("outliers", "resolved", "warning", 3499)]
    off = MultivariateMonitor(MonitorConfig(reference_size=1000, window_size=250, pca_variance=0, outlier_sigma=0))
    assert feed(off, batches(flipped(4000, 2500, 4000), 100)) == [] and off.statistics() == {}
    assert off.columns == []


def test_each_test_can_be_turned_off() -> None:
    data = eventful(5000, SMALL)
    no_pca = MultivariateMonitor(MonitorConfig(reference_size=1000, window_size=250, pca_variance=0), alpha=1e-6)
    no_outliers = MultivariateMonitor(MonitorConfig(reference_size=1000, window_size=250, outlier_sigma=0), alpha=1e-6)
    assert {a.detector for a in feed(no_pca, batches(data, 500))} == {"outliers"}
    assert {a.detector for a in feed(no_outliers, batches(data, 500))} == {"pca_reconstruction"}
    assert set(no_pca.statistics()) == {"outliers"} and set(no_outliers.statistics()) == {"pca_reconstruction"}


def test_a_feature_absent_from_a_batch_is_missing_in_each_of_its_rows() -> None:
    config = SMALL
    data = eventful(5000, config)
    absent = {"x2": {3, 11, 12, 30}, "z0": {25, 26}}  # during the fit, calibration and judging
    monitor = MultivariateMonitor(config, alpha=1e-6)
    alerts = feed(monitor, batches(data, 100, absent=absent))
    blanked = {name: values.copy() for name, values in data.items()}
    for name, numbers in absent.items():
        for number in numbers:
            blanked[name][number * 100:(number + 1) * 100] = np.nan
    same = MultivariateMonitor(config, alpha=1e-6)
    assert feed(same, batches(blanked, 100)) == alerts and packed(same) == packed(monitor)
    assert {a.detector for a in alerts} == {"pca_reconstruction", "outliers"}


def test_missing_and_wrongly_typed_values_are_missing() -> None:
    config = MonitorConfig(reference_size=300, window_size=100)
    rng = np.random.default_rng(61)
    raw = {name: rng.standard_normal(900).tolist() for name in ("p", "q", "r")}
    for i in range(1, 900, 9):
        raw["p"][i] = None
        raw["q"][i] = "n/a"
        raw["r"][i] = True
    typed = {name: np.array([v if type(v) is float else np.nan for v in values]) for name, values in raw.items()}
    monitor, same = MultivariateMonitor(config), MultivariateMonitor(config)
    for s in range(0, 900, 50):
        part = {name: Column.from_values(values[s:s + 50]) for name, values in raw.items()}
        monitor.observe(part, np.arange(s, s + 50), np.zeros(50))
    feed(same, batches(typed, 50))
    assert packed(monitor) == packed(same)
    # Every ninth event has no number at all: not a row of the statistics.
    assert np.isfinite(monitor.error_mean) and monitor.cal_rows == 300 - sum(300 <= i < 600 for i in range(1, 900, 9))


def test_events_seen_already_are_skipped() -> None:
    data = eventful(5000, SMALL)
    once, twice = MultivariateMonitor(SMALL, alpha=1e-6), MultivariateMonitor(SMALL, alpha=1e-6)
    expected = feed(once, batches(data, 250))
    replayed = []
    for start in range(0, 5000, 250):
        replayed += feed(twice, batches(data, 250, start=max(0, start - 100), stop=start + 250))
    assert replayed == expected and packed(once) == packed(twice)
