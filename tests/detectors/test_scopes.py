"""Monitors keyed by segment and version: identity, bounds, restores and batching."""

from __future__ import annotations

import dataclasses

import msgpack
import numpy as np
import pytest
from scipy import stats

from detectors.columns import Column
from detectors.config import MonitorConfig
from detectors.monitors import ModelBatch, ModelMonitor
from detectors.monitors.model import OTHER_SEGMENT, bh_adjusted, segment_key

CONFIG = MonitorConfig(reference_size=1000, window_size=500, max_segments=3, max_versions=2)
PER_DETECTOR = dataclasses.replace(CONFIG, alert_per_detector=True)  # each detector's own alerts
REGIONS = ("eu", "us", "apac")


def traffic(n: int, seed: int = 0, shift_eu_from: int | None = None, switch_at: int | None = None) -> dict:
    """Rows of a model sliced by region: x (numeric), colour (categorical), a score prediction, a version."""
    rng = np.random.default_rng(seed)
    region = rng.choice(REGIONS, n, p=[0.5, 0.3, 0.2])
    x = rng.standard_normal(n)
    if shift_eu_from is not None:
        x[(np.arange(n) >= shift_eu_from) & (region == "eu")] += 1.5
    score = rng.beta(2, 5, n)
    version = np.full(n, "1", dtype=object)
    if switch_at is not None:
        version[switch_at:] = "2"
        score[switch_at:] = rng.beta(5, 2, n - switch_at)  # the new version scores differently
    colour = rng.choice(["red", "green", "blue"], n, p=[0.6, 0.3, 0.1])
    return {"region": region.tolist(), "x": x.tolist(), "colour": colour.tolist(), "score": score.tolist(),
            "version": version.tolist()}  # fmt: skip


def batches(data: dict, size: int, start: int = 0, stop: int | None = None):
    stop = len(data["x"]) if stop is None else stop
    for s in range(start, stop, size):
        e = min(s + size, stop)
        yield ModelBatch(
            {"x": Column.from_values(data["x"][s:e]), "colour": Column.from_values(data["colour"][s:e])},
            np.arange(s, e, dtype=float) + 1.8e9,
            prediction=Column.from_values(data["score"][s:e]),
            versions=data["version"][s:e],
            segments=[{"region": r, "device": "ios"} for r in data["region"][s:e]],
        )


def run(monitor: ModelMonitor, items) -> list:
    alerts = []
    for batch in items:
        alerts += monitor.observe(batch).alerts
    return alerts


def sliced(config: MonitorConfig = CONFIG) -> ModelMonitor:
    return ModelMonitor("m", config, segments=[("region",)])


def test_a_drift_in_one_segment_alerts_that_segment_only() -> None:
    alerts = run(sliced(), batches(traffic(30_000, shift_eu_from=15_000), 500))
    x_alerts = [a for a in alerts if a.feature == "x" and a.status == "firing"]
    segments = {None if a.segment is None else a.segment["region"] for a in x_alerts}
    assert "eu" in segments and not segments & {"us", "apac"}
    first_eu = min(a.event_index for a in x_alerts if a.segment == {"region": "eu"})
    assert first_eu >= 15_000
    assert all("segment region=eu" in a.message for a in x_alerts if a.segment)


def test_a_new_version_gets_its_own_prediction_monitor_and_no_drift_on_the_old() -> None:
    monitor = sliced()
    alerts = run(monitor, batches(traffic(20_000, switch_at=10_000), 500))
    prediction = [a for a in alerts if a.feature is None]
    assert not [a for a in prediction if a.version == "1"], prediction
    assert set(monitor.whole.predictions) == {"1", "2"}
    assert monitor.whole.predictions["2"].rows_seen == 10_000 and monitor.whole.predictions["1"].rows_seen == 10_000
    assert monitor.model_version == "2"

    # One prediction monitor of the whole stream, as before versions, sees the roll-out as drift.
    unversioned = ModelMonitor("m", CONFIG)
    data = traffic(20_000, switch_at=10_000)
    data["version"] = [None] * 20_000
    assert any(a.feature is None and a.type == "prediction_drift" for a in run(unversioned, batches(data, 500)))


def test_versions_beyond_max_versions_retire_the_least_recently_seen() -> None:
    monitor = ModelMonitor("m", CONFIG)  # max_versions=2
    data = traffic(6000)
    data["version"] = ["a"] * 2000 + ["b"] * 2000 + ["a"] * 1000 + ["c"] * 1000
    retired = sum(monitor.observe(batch).versions_retired for batch in batches(data, 700))
    assert list(monitor.versions) == ["a", "c"] and set(monitor.whole.predictions) == {"a", "c"}
    assert monitor.versions_retired == retired == 1


def test_tracked_segments_stay_bounded_and_the_rest_count_as_other() -> None:
    config = MonitorConfig(reference_size=1000, window_size=500, max_segments=20)
    monitor = ModelMonitor("m", config, segments=[("user",)])
    rng = np.random.default_rng(3)
    n = 100_000
    observed: dict[str, int] = {}
    for s in range(0, n, 5000):
        rows = range(s, s + 5000)
        batch = ModelBatch({"x": Column.from_numbers(rng.standard_normal(5000))}, np.zeros(5000),
                           segments=[{"user": f"u{i}"} for i in rows])  # fmt: skip
        for key, count in monitor.observe(batch).segment_events.items():
            observed[key] = observed.get(key, 0) + count
    assert len(monitor.tracked) == 20 and list(monitor.tracked)[:2] == ["user=u0", "user=u1"]
    assert monitor.other_events == n - 20 and observed[OTHER_SEGMENT] == n - 20
    assert len(msgpack.packb(monitor.snapshot())) < 2_000_000


@pytest.mark.parametrize("size", [1, 333, 5000])
def test_batching_changes_nothing_with_segments_and_versions(size: int) -> None:
    data = traffic(12_000, seed=5, shift_eu_from=6000, switch_at=8000)
    straight, batched = sliced(), sliced()
    expected = run(straight, batches(data, 12_000))
    alerts = run(batched, batches(data, size) if size > 1 else batches(data, 1, stop=3000))
    if size == 1:  # one event at a time is slow: the rest in larger batches
        alerts += run(batched, batches(data, 1000, start=3000))
    assert alerts == expected and expected
    assert msgpack.packb(batched.snapshot()) == msgpack.packb(straight.snapshot())


def test_snapshot_restore_continues_exactly_with_segments_and_versions() -> None:
    data = traffic(16_000, seed=9, shift_eu_from=9000, switch_at=7000)
    straight = sliced()
    expected = run(straight, batches(data, 500))
    first = sliced()
    alerts = run(first, batches(data, 500, stop=7500))
    blob = msgpack.packb(first.snapshot(), use_bin_type=True)
    second = ModelMonitor.restore(msgpack.unpackb(blob, raw=False), CONFIG, segments=[("region",)])
    alerts += run(second, batches(data, 500, start=7500))
    assert alerts == expected
    assert msgpack.packb(second.snapshot()) == msgpack.packb(straight.snapshot())


def test_combined_segment_keys_slice_by_both() -> None:
    monitor = ModelMonitor("m", CONFIG, segments=[("region", "device")])
    run(monitor, batches(traffic(3000), 1000))
    assert set(monitor.tracked) == {"region=eu,device=ios", "region=us,device=ios", "region=apac,device=ios"}
    assert monitor.tracked["region=eu,device=ios"].segment == {"region": "eu", "device": "ios"}


def test_firing_alerts_read_right() -> None:
    """A firing alert's statistic is on the far side of its line; change points carry their window."""
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.standard_normal(5000), rng.standard_normal(20_000) + 0.6])
    monitor = ModelMonitor("m", MonitorConfig(reference_size=2000, window_size=500, alert_per_detector=True))
    alerts = run(monitor, [ModelBatch({"v": Column.from_numbers(values[s : s + 500])},
                                      np.arange(s, s + 500, dtype=float) + 1.8e9)
                           for s in range(0, values.size, 500)])  # fmt: skip
    firing = [a for a in alerts if a.status == "firing"]
    assert {a.detector for a in firing} >= {"adwin", "page_hinkley", "psi", "ks"}
    for alert in firing:
        assert alert.statistic >= alert.threshold, alert
        assert alert.window_count > 0 and alert.window_start <= alert.window_end
    for alert in [a for a in firing if a.detector in ("adwin", "page_hinkley")]:
        assert alert.window_start >= 1.8e9 and "values since its last change point" in alert.message
    resolved = [a for a in alerts if a.status == "resolved" and a.detector in ("adwin", "page_hinkley")]
    assert resolved
    for alert in resolved:
        assert alert.statistic >= alert.threshold == 5000 and "no change point in the" in alert.message


def test_bh_over_the_p_values_given_agrees_with_scipy() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.uniform(0, 0.05, rng.integers(1, 30)) ** rng.uniform(0.5, 3)
        assert np.allclose(bh_adjusted(p, p.size), stats.false_discovery_control(p, method="bh"))


def test_segment_p_value_tests_are_corrected_over_the_segment_family_without_a_budget() -> None:
    monitor = sliced(dataclasses.replace(PER_DETECTOR, false_alarm_budget=0))
    alerts = run(monitor, batches(traffic(30_000, shift_eu_from=15_000), 500))
    ks = [a for a in alerts if a.detector == "ks" and a.segment]
    assert ks and all("none over 3: alpha 3.3e-05" in a.message for a in ks)


def test_under_a_budget_segment_tests_keep_the_budget_alpha() -> None:
    """The budget's alpha already shares the model's budget with the segments: no second correction."""
    monitor = sliced(PER_DETECTOR)
    alerts = run(monitor, batches(traffic(30_000, shift_eu_from=15_000), 500))
    ks = [a for a in alerts if a.detector == "ks" and a.segment]
    assert ks and not any("none over" in a.message for a in ks)
    assert all(a.p_value is not None and a.p_value < monitor.lines("numeric").ks_alpha for a in ks)


def _one_column(kind: str, n: int = 9000, seed: int = 2) -> tuple[list, bool]:
    """A drifting column of one monitor kind, and whether it is the prediction."""
    rng = np.random.default_rng(seed)
    numbers = np.concatenate([rng.standard_normal(n // 2), rng.standard_normal(n - n // 2) + 0.8])
    if kind.startswith("numeric"):
        return numbers.tolist(), kind.endswith("prediction")
    classes = np.where(numbers > 0.3, "high", np.where(numbers < -0.8, "low", "mid"))
    return classes.tolist(), kind.endswith("prediction")


def _column_batches(values: list, prediction: bool, size: int, start: int = 0):
    for s in range(start, len(values), size):
        column = Column.from_values(values[s : s + size])
        times = np.arange(s, s + len(values[s : s + size]), dtype=float) + 1.8e9
        yield ModelBatch({} if prediction else {"v": column}, times, prediction=column if prediction else None,
                         versions=["1"] * len(times), segments=[{"region": "eu"}] * len(times))  # fmt: skip


@pytest.mark.parametrize("kind", ["numeric feature", "categorical feature", "numeric prediction", "class prediction"])
def test_every_monitor_kind_conforms(kind: str) -> None:
    """Each kind of monitor, in a segment and the whole model: restoring a snapshot midway and
    cutting the stream into other batches change neither its alerts nor its snapshot bytes."""
    values, prediction = _one_column(kind)
    straight = sliced()
    expected = run(straight, _column_batches(values, prediction, len(values)))
    assert any(a.status == "firing" for a in expected) and any(a.segment for a in expected)
    for size in (37, 1000):
        first = sliced()
        alerts = run(first, (b for b in _column_batches(values, prediction, size) if b.timestamps[0] < 1.8e9 + 4000))
        cut = first.events_seen
        blob = msgpack.packb(first.snapshot(), use_bin_type=True)
        second = ModelMonitor.restore(msgpack.unpackb(blob, raw=False), CONFIG, segments=[("region",)])
        alerts += run(second, _column_batches(values, prediction, size, start=cut))
        assert alerts == expected, (kind, size)
        assert msgpack.packb(second.snapshot()) == msgpack.packb(straight.snapshot()), (kind, size)


def test_a_slice_the_config_no_longer_names_is_dropped_on_restore() -> None:
    config = MonitorConfig(reference_size=1000, window_size=500)
    monitor = ModelMonitor("m", config, segments=[("region",), ("device",)])
    run(monitor, batches(traffic(2000), 1000))
    assert set(monitor.tracked) == {"region=eu", "region=us", "region=apac", "device=ios"}
    data = msgpack.unpackb(msgpack.packb(monitor.snapshot()))
    assert set(ModelMonitor.restore(data, config, segments=[("device",)]).tracked) == {"device=ios"}


def _prediction_batches(scores: list, versions: list, regions: list, cuts: list[int]):
    for s, e in zip(cuts, cuts[1:], strict=False):
        yield ModelBatch({}, np.arange(s, e, dtype=float) + 1.8e9, prediction=Column.from_values(scores[s:e]),
                         versions=versions[s:e], segments=[{"region": r} for r in regions[s:e]])  # fmt: skip


def test_a_version_retired_and_back_in_one_batch_meets_a_fresh_monitor() -> None:
    config = MonitorConfig(reference_size=100, window_size=50, max_versions=2)
    versions = ["1"] * 200 + ["2"] * 200 + ["3"] + ["1"] * 199
    scores = np.random.default_rng(0).random(600).tolist()
    regions = ["eu"] * 600

    def run_cut(cuts: list[int]) -> ModelMonitor:
        monitor = ModelMonitor("m", config)
        run(monitor, _prediction_batches(scores, versions, regions, cuts))
        return monitor

    whole, one_by_one = run_cut([0, 600]), run_cut(list(range(601)))
    assert whole.whole.predictions["1"].rows_seen == 199 and whole.versions_retired == 2
    assert msgpack.packb(whole.snapshot()) == msgpack.packb(one_by_one.snapshot())


def test_a_segments_prediction_monitor_takes_the_whole_models_kind() -> None:
    scores: list = ["a", "b"] * 100 + [1, 2] * 200  # classes sent as text, then as numbers
    versions = ["1"] * 200 + ["1", "2"] * 200
    regions = ["us", "eu"] * 300
    monitors = []
    for cuts in ([0, 200, 400, 401, 600], [0, 200, 401, 600]):
        monitor = ModelMonitor("m", MonitorConfig(reference_size=50, window_size=50), segments=[("region",)])
        run(monitor, _prediction_batches(scores, versions, regions, cuts))
        monitors.append(monitor)
    for monitor in monitors:
        assert monitor.tracked["region=us"].predictions["1"].kind == monitor.whole.predictions["1"].kind
    assert msgpack.packb(monitors[0].snapshot()) == msgpack.packb(monitors[1].snapshot())


def test_segment_keys_cannot_collide() -> None:
    assert segment_key({"a": "x,b=y"}) != segment_key({"a": "x", "b": "y"})
    assert segment_key({"region": "eu"}) == "region=eu"
    monitor = ModelMonitor("m", CONFIG, segments=[("a",), ("a", "b")])
    batch = ModelBatch({"v": Column.from_values([1.0, 2.0])}, np.zeros(2),
                       segments=[{"a": "x,b=y"}, {"a": "x", "b": "y"}])  # fmt: skip
    monitor.observe(batch)
    assert len(monitor.tracked) == 3 and sum(s.features["v"].rows_seen for s in monitor.tracked.values()) == 3


def test_the_family_of_a_test_does_not_depend_on_other_windows_closing_with_it() -> None:
    config = MonitorConfig(reference_size=1000, window_size=500, max_segments=3, multiple_testing="bonferroni",
                           alert_per_detector=True)  # fmt: skip
    monitor = ModelMonitor("m", config, segments=[("region",)])
    alerts = run(monitor, batches(traffic(30_000, shift_eu_from=15_000), 500))
    ks = [a for a in alerts if a.detector == "ks"]
    # x (ks) and colour (chi_square) and the score (ks), in the whole model and 3 segments: 3 x 4.
    assert ks and all("bonferroni over 12:" in a.message for a in ks)


def test_a_change_points_shift_does_not_depend_on_the_batching_with_missing_values() -> None:
    rng = np.random.default_rng(7)
    values: list = np.concatenate([rng.standard_normal(3000), rng.standard_normal(3000) + 0.7]).tolist()
    for i in rng.choice(6000, 2000, replace=False):
        values[i] = None
    config = MonitorConfig(reference_size=500, window_size=20, alert_per_detector=True)
    runs = []
    for size in (6000, 7, 250):
        monitor = ModelMonitor("m", config)
        runs.append((run(monitor, [ModelBatch({"v": Column.from_values(values[s : s + size])},
                                              np.arange(s, min(s + size, 6000), dtype=float))
                                   for s in range(0, 6000, size)]), msgpack.packb(monitor.snapshot())))  # fmt: skip
    assert any(a.detector == "page_hinkley" for a in runs[0][0])
    assert runs[1] == runs[0] and runs[2] == runs[0]


@pytest.mark.parametrize("per_detector", [True, False])
def test_a_retired_versions_firing_alerts_resolve_with_it(per_detector: bool) -> None:
    config = MonitorConfig(reference_size=1000, window_size=500, max_versions=2, alert_per_detector=per_detector,
                           numeric_tests=("psi", "ks", "null_rate"))  # the drift incident alone
    rng = np.random.default_rng(4)
    scores = np.concatenate([rng.standard_normal(2000), rng.standard_normal(1000) + 2.0,
                             rng.standard_normal(2000)]).tolist()  # fmt: skip
    versions = ["a"] * 3000 + ["b"] * 1000 + ["c"] * 1000
    results = []
    for size in (1000, 137):
        monitor = ModelMonitor("m", config)
        results.append(run(monitor, _prediction_batches(scores, versions, ["eu"] * 5000,
                                                        list(range(0, 5000, size)) + [5000])))  # fmt: skip
    assert results[0] == results[1]
    firing = [a for a in results[0] if a.version == "a" and a.status == "firing"]
    closed = [a for a in results[0] if a.version == "a" and a.status == "resolved" and "closed" in a.message]
    if per_detector:
        assert {a.detector for a in firing} == {"adwin", "page_hinkley", "ks", "psi"}
        assert {a.detector for a in closed} == {a.detector for a in firing} and len(closed) == 4
    else:  # one incident: fired critical at once (the others joined it), closed as one alert naming them all
        assert [a.severity for a in firing] == ["critical"]
        assert [a.detectors for a in closed] == [("adwin", "ks", "page_hinkley", "psi")]
        assert [a for a in results[0] if a.version == "a" and a.status == "resolved"] == closed
        assert closed[0].severity == "critical" and "also fired during the incident" in closed[0].message
    for alert in closed:
        assert alert.event_index == 4000 and alert.statistic == 3 and alert.threshold == 2
        assert "version 'a' retired" in alert.message


@pytest.mark.parametrize("per_detector", [True, False])
def test_a_window_closing_in_the_batch_that_retires_its_version_is_judged_before_the_close(
    per_detector: bool,
) -> None:  # fmt: skip
    """Version a's last window (drifted) closes at row 2499; b and c arrive at 2500 and 2501 and
    retire a. Fed in one batch or a few rows at a time, the same alerts: the window's alert is
    sent, then closed with the version, never left firing."""
    config = MonitorConfig(reference_size=1000, window_size=500, max_versions=2, alert_per_detector=per_detector,
                           change_detectors=())  # fmt: skip
    rng = np.random.default_rng(6)
    scores = np.concatenate([rng.standard_normal(2000), rng.standard_normal(500) + 2.0,
                             rng.standard_normal(500)]).tolist()  # fmt: skip
    versions = ["a"] * 2500 + ["b"] + ["c"] * 499
    results = []
    for size in (3000, 7):
        monitor = ModelMonitor("m", config)
        results.append(run(monitor, _prediction_batches(scores, versions, ["eu"] * 3000,
                                                        list(range(0, 3000, size)) + [3000])))  # fmt: skip
    assert results[0] == results[1]
    of_a = [a for a in results[0] if a.version == "a"]
    assert [a.status for a in of_a][-1] == "resolved" and "retired" in of_a[-1].message
    assert any(a.status == "firing" and a.event_index == 2499 for a in of_a)
