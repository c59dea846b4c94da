from __future__ import annotations

import dataclasses

import msgpack
import numpy as np
import pytest

from detectors import SnapshotError
from detectors.columns import Column
from detectors.config import MonitorConfig
from detectors.monitors import PREDICTION, ModelBatch, ModelMonitor

# The per-column monitors; the whole model's joint tests have their own (tests/detectors/test_multivariate.py).
CONFIG = MonitorConfig(reference_size=2000, window_size=500, pca_variance=0.0, outlier_sigma=0.0)
PER_DETECTOR = dataclasses.replace(CONFIG, alert_per_detector=True)  # each detector's own alerts


def batch_of(columns: dict, times: np.ndarray, version: str | None = None) -> ModelBatch:
    """A batch from raw column values; the prediction under PREDICTION, one version for every row."""
    prediction = columns.get(PREDICTION)
    features = {name: Column.from_values(list(values)) for name, values in columns.items() if name != PREDICTION}
    return ModelBatch(features, times, None if prediction is None else Column.from_values(list(prediction)),
                      versions=None if version is None else [version] * len(times))  # fmt: skip


def batches(n: int = 12_000, shift_from: int = 6000, size: int = 250, seed: int = 0):
    rng = np.random.default_rng(seed)
    data = {f"x{i}": rng.standard_normal(n) for i in range(4)}
    data["x1"][shift_from:] += 1.0
    colour = rng.choice(["red", "green", "blue"], n, p=[0.6, 0.3, 0.1]).tolist()
    for start in range(0, n, size):
        columns = {name: values[start : start + size].tolist() for name, values in data.items()}
        columns["colour"] = colour[start : start + size]
        yield batch_of(columns, np.arange(start, start + len(columns["x0"]), dtype=float) + 1.8e9, "7")


def run(monitor: ModelMonitor, items) -> list:
    alerts = []
    for batch in items:
        alerts += monitor.observe(batch).alerts
    return alerts


def test_only_the_shifted_feature_alerts() -> None:
    monitor = ModelMonitor("m", PER_DETECTOR)
    alerts = run(monitor, batches())
    firing = [a for a in alerts if a.status == "firing"]
    assert {a.feature for a in firing} == {"x1"}
    assert {a.detector for a in firing} == {"adwin", "page_hinkley", "psi", "ks"}
    assert all(a.detectors == (a.detector,) for a in alerts)
    psi_alert = next(a for a in firing if a.detector == "psi")
    assert psi_alert.severity == "critical" and psi_alert.statistic >= 0.25
    assert 6000 <= psi_alert.event_index < 6500 + CONFIG.window_size
    assert psi_alert.window_count == CONFIG.window_size
    assert psi_alert.current["mean"] > psi_alert.reference["mean"] + 0.8
    assert all(a.event_index >= 6000 for a in alerts)
    assert monitor.model_version == "7"


def test_the_shifted_feature_is_one_incident_of_every_detector() -> None:
    monitor = ModelMonitor("m", CONFIG)
    alerts = run(monitor, batches())
    assert {a.feature for a in alerts} == {"x1"} and all(a.status == "firing" for a in alerts)
    # caught by a change point, escalated at most once; the shift lasts to the end: no resolve
    assert [a.severity for a in alerts] in (["warning", "critical"], ["critical"])
    assert alerts[0].detector in ("adwin", "page_hinkley") and alerts[0].detectors == (alerts[0].detector,)
    assert all(a.detector in a.detectors for a in alerts)
    # the detectors that joined at no higher severity are members, named in its next alert
    incident = monitor.whole.features["x1"].policy.incidents["drift"]
    assert incident.fired == {"adwin", "page_hinkley", "psi", "ks"} and incident.severity == "critical"
    assert incident.firing >= {"psi", "ks"}  # the windows still see the shift


def test_one_firing_alert_per_feature_and_detector_until_resolved() -> None:
    alerts = run(ModelMonitor("m", PER_DETECTOR), batches(n=20_000))
    psi_alerts = [(a.status, a.severity) for a in alerts if a.detector == "psi"]
    assert psi_alerts == [("firing", "critical")]  # the shift persists: no repeats, no resolve


def test_psi_alert_resolves_when_the_window_is_back_under_the_line() -> None:
    monitor = ModelMonitor("m", PER_DETECTOR)
    rng = np.random.default_rng(4)
    values = np.concatenate([rng.standard_normal(3000), rng.standard_normal(1000) + 2, rng.standard_normal(1000)])
    alerts = run(monitor, [batch_of({"v": values[s : s + 500].tolist()}, np.zeros(500)) for s in range(0, 5000, 500)])
    psi = [(a.status, a.event_index) for a in alerts if a.detector == "psi"]
    # Windows close every 500 rows after the 2000 reference rows; the shift covers rows 3000-3999.
    assert psi == [("firing", 3499), ("resolved", 4499)]


def test_null_rate_jump_is_a_data_quality_alert() -> None:
    monitor = ModelMonitor("m", CONFIG)
    values: list[float | None] = np.random.default_rng(2).standard_normal(4000).tolist()
    for i in range(3000, 4000, 2):
        values[i] = None
    alerts = run(monitor, [batch_of({"v": values[s : s + 500]}, np.zeros(500)) for s in range(0, 4000, 500)])
    quality = [a for a in alerts if a.detector == "null_rate"]
    assert quality and quality[0].type == "data_quality" and quality[-1].severity == "critical"


def test_wrong_types_are_counted_and_treated_as_missing() -> None:
    monitor = ModelMonitor("m", CONFIG)
    observation = monitor.observe(batch_of({"v": [1.0, "oops", None, True, 2.0]}, np.zeros(5)))
    assert observation.invalid_values == 2
    assert monitor.whole.features["v"].kind == "numeric"


def test_prediction_drift_has_its_own_type_and_no_feature() -> None:
    monitor = ModelMonitor("m", CONFIG)
    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.random(3000) * 0.5, 0.5 + rng.random(1000) * 0.5])
    alerts = run(monitor, [batch_of({PREDICTION: scores[s : s + 500].tolist()}, np.zeros(500))
                           for s in range(0, 4000, 500)])  # fmt: skip
    assert alerts and all(a.feature is None for a in alerts)
    # Scores past the reference's range are data quality too (out_of_range); every other alert is drift.
    assert {a.type for a in alerts if a.detector != "out_of_range"} == {"prediction_drift"}
    assert {a.type for a in alerts if a.detector == "out_of_range"} == {"data_quality"}


def test_features_per_model_are_bounded() -> None:
    monitor = ModelMonitor("m", MonitorConfig(max_features=3))
    observation = monitor.observe(batch_of({f"f{i}": [1.0] for i in range(10)}, np.zeros(1)))
    assert len(monitor.whole.features) == 3 and observation.ignored_features == 7


def test_high_cardinality_categories_stay_bounded() -> None:
    config = MonitorConfig(reference_size=1000, window_size=1000, max_categories=20)
    monitor = ModelMonitor("m", config)
    for start in range(0, 100_000, 10_000):
        labels = [f"id-{i}" for i in range(start, start + 10_000)]
        monitor.observe(batch_of({"user": labels}, np.zeros(10_000)))
    feature = monitor.whole.features["user"]
    # 1000 distinct ids overflow the frequent-items map: none is frequent, all are "other".
    assert feature.reference is not None and feature.reference.categories == ()
    assert feature.reference.other_share == 1.0 and feature.reference.distinct > 900
    assert len(msgpack.packb(monitor.snapshot())) < 40_000


def test_snapshot_restore_continues_byte_identically() -> None:
    items = list(batches())
    straight = ModelMonitor("m", CONFIG)
    expected = run(straight, items)
    for cut in (3, 8, 25, 40):
        first = ModelMonitor("m", CONFIG)
        alerts = run(first, items[:cut])
        blob = msgpack.packb(first.snapshot(), use_bin_type=True)
        second = ModelMonitor.restore(msgpack.unpackb(blob, raw=False), CONFIG)
        alerts += run(second, items[cut:])
        assert alerts == expected
        assert msgpack.packb(second.snapshot()) == msgpack.packb(straight.snapshot())


def test_restore_refuses_unknown_versions_and_garbage() -> None:
    with pytest.raises(SnapshotError):
        ModelMonitor.restore({"v": 3}, CONFIG)
    with pytest.raises(SnapshotError):
        ModelMonitor.restore({"v": 1, "model": "m"}, CONFIG)
    with pytest.raises(SnapshotError):
        ModelMonitor.restore([1, 2], CONFIG)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"window_size": 0}, "window_size"),
        ({"psi_bins": 1}, "psi_bins"),
        ({"psi_warning": 0.3, "psi_critical": 0.2}, "psi_critical"),
        ({"adwin_delta": 2.0}, "adwin_delta"),
        ({"reference_size": "many"}, "reference_size"),
    ],
)
def test_config_errors_name_the_parameter(kwargs: dict, parameter: str) -> None:
    with pytest.raises(ValueError, match=parameter):
        MonitorConfig(**kwargs)


def test_a_million_distinct_strings_do_not_grow_a_feature_past_its_bound() -> None:
    config = MonitorConfig(reference_size=100_000, window_size=1000, category_map_size=8)
    monitor = ModelMonitor("m", config)
    sizes = {}
    for start in range(0, 1_000_000, 50_000):
        labels = [f"session-{i:08d}" for i in range(start, start + 50_000)]
        monitor.observe(batch_of({"session": labels}, np.zeros(50_000)))
        sizes[start + 50_000] = len(msgpack.packb(monitor.snapshot()))
    feature = monitor.whole.features["session"]
    assert feature.window is not None and feature.window.recent().size == 1000  # the window holds codes
    # The reference is 2^8 map slots and a HyperLogLog; the window 1000 codes. Nothing grows with the stream.
    assert sizes[1_000_000] == sizes[150_000] and sizes[1_000_000] < 32_000
    assert sizes[50_000] < 32_000  # even while the reference is still being collected


def _stable_features(n_features: int, rows: int, seed: int) -> list[ModelBatch]:
    rng = np.random.default_rng(seed)
    data = {f"f{i}": rng.standard_normal(rows) for i in range(n_features)}
    data["f0"][rows // 2 :] += 1.0  # one real shift among stable features
    return [batch_of({n: v[s : s + 500].tolist() for n, v in data.items()}, np.zeros(500))
            for s in range(0, rows, 500)]  # fmt: skip


@pytest.mark.parametrize("method", ["bonferroni", "benjamini_hochberg"])
def test_multiple_testing_correction_spans_the_models_features(method: str) -> None:
    loose = {"reference_size": 1000, "window_size": 500, "ks_alpha": 0.05, "change_detectors": (),
             "numeric_tests": ("ks",), "false_alarm_budget": 0}  # fmt: skip
    items = _stable_features(20, 20_000, seed=11)
    plain = [a for a in run(ModelMonitor("m", MonitorConfig(**loose)), items) if a.status == "firing"]
    corrected = [a for a in run(ModelMonitor("m", MonitorConfig(**loose, multiple_testing=method)), items)
                 if a.status == "firing"]  # fmt: skip
    # At alpha 0.05 over 20 stable features the plain test fires somewhere; corrected, only the shift does.
    assert {a.feature for a in plain} > {"f0"}
    assert {a.feature for a in corrected} == {"f0"}
    assert all(a.p_value < 0.05 and f"{method} over 20" in a.message for a in corrected)
    # the line reported is the statistic at the corrected alpha, so a firing window is past it
    assert all(a.statistic >= a.threshold for a in corrected)
    assert min(a.threshold for a in corrected) > min(a.threshold for a in plain if a.detector == "ks")
    first = corrected[0]
    assert 10_000 <= first.event_index < 11_000


def test_categorical_drift_new_categories_and_their_alerts() -> None:
    rng = np.random.default_rng(5)
    before = rng.choice(["a", "b", "c"], 4000, p=[0.5, 0.3, 0.2]).tolist()
    after = rng.choice(["a", "b", "c", "new"], 2000, p=[0.35, 0.25, 0.2, 0.2]).tolist()
    labels = before + after
    monitor = ModelMonitor("m", PER_DETECTOR)
    alerts = run(monitor, [batch_of({"plan": labels[s : s + 500]}, np.zeros(500)) for s in range(0, 6000, 500)])
    firing: dict = {}
    for alert in alerts:
        if alert.status == "firing":
            firing.setdefault(alert.detector, alert)  # the first of each
    assert set(firing) == {"chi_square", "psi", "unseen_rate"}
    assert firing["unseen_rate"].statistic == pytest.approx(after[:500].count("new") / 500)
    assert firing["chi_square"].p_value < 1e-4 and firing["chi_square"].event_index == 4499
    assert firing["psi"].current["top_categories"]["__other__"] > 0.1


def test_restore_under_a_new_config_keeps_the_window_and_uses_the_new_tests() -> None:
    items = list(batches())
    first = ModelMonitor("m", CONFIG)
    run(first, items[:20])  # references built, a window half full
    wider = MonitorConfig(reference_size=2000, window_size=500, numeric_tests=("wasserstein",), change_detectors=(),
                          pca_variance=0.0, outlier_sigma=0.0)  # fmt: skip
    second = ModelMonitor.restore(msgpack.unpackb(msgpack.packb(first.snapshot())), wider)
    feature = second.whole.features["x1"]
    assert [t.name for t in feature.window.tests] == ["wasserstein"] and feature.changes == {}
    assert feature.window.fill == first.whole.features["x1"].window.fill
    firing = [a for a in run(second, items[20:]) if a.status == "firing"]
    assert {(a.feature, a.detector) for a in firing} == {("x1", "wasserstein")}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"numeric_tests": ("chi_square",)}, "numeric_tests: 'chi_square'"),
        ({"categorical_tests": ("nope",)}, "categorical_tests: 'nope'"),
        ({"change_detectors": ("ddm",)}, "change_detectors: 'ddm'"),
        ({"multiple_testing": "holm"}, "multiple_testing"),
        ({"ks_alpha": 1.5}, "ks_alpha"),
        ({"wasserstein_warning": 0.6}, "wasserstein_critical"),
        ({"reference_size": 10**6}, "reference_size"),
        ({"window_step": 2000}, "window_step"),
        ({"multiple_testing": 3}, "multiple_testing"),
        ({"window_size": 1}, "window_size"),
        ({"reference_points": 1}, "reference_points"),
        ({"psi_warning": float("inf")}, "psi_warning"),
    ],
)
def test_detection_options_are_validated_by_name(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MonitorConfig(**kwargs)


@pytest.mark.parametrize("size", [1, 7, 100, 1000])
def test_the_reference_ends_on_the_same_row_whatever_the_batching(size: int) -> None:
    rng = np.random.default_rng(13)
    values: list[float | None] = [None] * 150 + rng.standard_normal(3000).tolist()
    for i in range(200, 3150, 3):
        values[i] = None  # a third missing
    config = MonitorConfig(reference_size=500, window_size=250)
    monitor = ModelMonitor("m", config, kinds={"v": "numeric"})
    run(monitor, [batch_of({"v": values[s : s + size]}, np.zeros(len(values[s : s + size])))
                  for s in range(0, len(values), size)])  # fmt: skip
    feature = monitor.whole.features["v"]
    assert feature.reference is not None and feature.reference.count == 500  # the first 500 values
    expected = ModelMonitor("m", config, kinds={"v": "numeric"})
    run(expected, [batch_of({"v": values}, np.zeros(len(values)))])
    # (whole snapshots differ only in batch positions: where in its batch the last verdict fell)
    again = expected.whole.features["v"]
    assert feature.reference.to_plain() == again.reference.to_plain()
    np.testing.assert_array_equal(feature.window.recent(), again.window.recent())
    assert feature.builder is None and feature.rows_seen == again.rows_seen == len(values) - 150


def test_a_large_sudden_shift_is_a_critical_change_point() -> None:
    rng = np.random.default_rng(14)
    values = np.concatenate([rng.standard_normal(3000), rng.standard_normal(3000) + 3.0])
    monitor = ModelMonitor("m", PER_DETECTOR)
    alerts = run(monitor, [batch_of({"v": values[s : s + 250].tolist()}, np.zeros(250)) for s in range(0, 6000, 250)])
    changes = {a.detector: a for a in alerts if a.detector in ("adwin", "page_hinkley") and a.status == "firing"}
    assert set(changes) == {"adwin", "page_hinkley"}
    for alert in changes.values():
        assert alert.severity == "critical" and 3000 <= alert.event_index < 3100
        assert alert.current["mean_shift_sigma"] > 1.0


def test_a_change_point_that_grows_escalates_at_a_window() -> None:
    rng = np.random.default_rng(15)
    ramp = np.linspace(0.0, 2.0, 3000)  # a slow drift: caught small, then it keeps going
    values = np.concatenate([rng.standard_normal(3000), rng.standard_normal(3000) + ramp])
    monitor = ModelMonitor("m", PER_DETECTOR)
    alerts = run(monitor, [batch_of({"v": values[s : s + 250].tolist()}, np.zeros(250)) for s in range(0, 6000, 250)])
    page_hinkley = [(a.status, a.severity) for a in alerts if a.detector == "page_hinkley"][:2]
    assert page_hinkley == [("firing", "warning"), ("firing", "critical")]


@pytest.mark.parametrize("size", [1, 37, 4000])
def test_change_alerts_fire_and_resolve_in_event_order_whatever_the_batching(size: int) -> None:
    rng = np.random.default_rng(16)
    values = rng.standard_normal(4000)
    values[1500:2500] += 3.0  # up, then back down: two changes, a quiet stretch between
    config = MonitorConfig(reference_size=1000, window_size=100, resolve_after=500, alert_per_detector=True)
    straight, batched = ModelMonitor("m", config), ModelMonitor("m", config)
    expected = run(straight, [batch_of({"v": values.tolist()}, np.zeros(4000))])
    alerts = run(batched, [batch_of({"v": values[s : s + size].tolist()}, np.zeros(len(values[s : s + size])))
                           for s in range(0, 4000, size)])  # fmt: skip
    # Crash recovery compares checkpoints byte for byte: the batching must not show in them.
    assert msgpack.packb(batched.snapshot()) == msgpack.packb(straight.snapshot())
    def key(alert):
        return (alert.detector, alert.status, alert.severity, alert.event_index)

    assert sorted(map(key, alerts)) == sorted(map(key, expected))
    page_hinkley = [(a.status, a.event_index) for a in expected if a.detector == "page_hinkley"]
    # fired on the way up, resolved in the quiet stretch, fired again on the way down
    assert [status for status, _ in page_hinkley][:3] == ["firing", "resolved", "firing"]
    assert 1500 <= page_hinkley[0][1] < 1600 and page_hinkley[1][1] < 2500 <= page_hinkley[2][1]


def test_the_whole_models_statistics_read_crossed_at_or_over_their_line() -> None:
    """pca_reconstruction is two-sided: its metric is the distance from the reference's mean error, so a
    stable window reads under its line (a plain error under the lower line would read as over) and the
    window that fires reads over it."""
    config = MonitorConfig(reference_size=1000, window_size=500)
    monitor = ModelMonitor("m", config)
    rng = np.random.default_rng(5)
    ratios, fired = [], []
    for start in range(0, 12_000, 500):
        x1 = rng.standard_normal(500)
        rho = -0.9 if start >= 9000 else 0.9
        columns = {"x1": x1, "x2": rho * x1 + np.sqrt(1 - rho**2) * rng.standard_normal(500),
                   "x3": rng.standard_normal(500)}  # fmt: skip
        observation = monitor.observe(batch_of({k: v.tolist() for k, v in columns.items()},
                                               np.arange(start, start + 500, dtype=float)))  # fmt: skip
        key = (None, "", "__inputs__", "pca_reconstruction")
        if key in observation.statistics:
            ratios.append((start, observation.statistics[key] / observation.lines[key]))
        fired += [a for a in observation.alerts if a.detector == "pca_reconstruction"]
    assert all(ratio < 1 for start, ratio in ratios if start < 9000) and len(ratios) > 10
    assert fired and fired[0].event_index >= 9000 and max(ratio for _, ratio in ratios) >= 1
