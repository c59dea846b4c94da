"""Model quality from late labels: metrics, the performance test, concept drift, label health, state."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable

import msgpack
import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from detectors import SnapshotError
from detectors.budget import QUALITY_TESTS, family_size, quality_lines, rate_per_value
from detectors.config import MonitorConfig
from detectors.monitors import Alert, Observation
from detectors.monitors.quality import (
    QUALITY,
    LabeledRows,
    QualityMonitor,
    QualityReference,
    QualitySpec,
    accuracy_line,
    accuracy_test,
    mae_test,
    quality_reference,
)

DEFAULT = MonitorConfig()
T0 = 1.8e9  # event times: 1 s apart from here


def rows_of(labels: list, predictions: list, *, probabilities: list | None = None, versions: list | None = None,
            segments: list | None = None, start: int = 0, lag: float = 3600.0) -> LabeledRows:  # fmt: skip
    n = len(labels)
    times = T0 + np.arange(start, start + n, dtype=np.float64)
    return LabeledRows(
        versions if versions is not None else ["1"] * n,
        segments if segments is not None else [None] * n,
        list(predictions),
        probabilities if probabilities is not None else [None] * n,
        list(labels),
        times,
        times + lag,
    )


def classifier(n: int, error_rate: Callable[[np.ndarray], np.ndarray] | float, seed: int = 0, start: int = 0,
               **options: object) -> LabeledRows:  # fmt: skip
    """A binary classifier sending scores; it is wrong with probability ``error_rate`` (of the row's index)."""
    rng = np.random.default_rng(seed)
    index = np.arange(start, start + n)
    rate = error_rate(index) if callable(error_rate) else np.full(n, error_rate)
    labels = rng.integers(0, 2, n)
    predicted = np.where(rng.random(n) < rate, 1 - labels, labels)
    scores = np.where(predicted == 1, rng.uniform(0.5, 1.0, n), rng.uniform(0.0, 0.5, n))
    return rows_of(labels.tolist(), scores.tolist(), start=start, **options)  # type: ignore[arg-type]


def regressor(n: int, scale: Callable[[np.ndarray], np.ndarray] | float, seed: int = 0, start: int = 0,
              **options: object) -> LabeledRows:  # fmt: skip
    rng = np.random.default_rng(seed)
    index = np.arange(start, start + n)
    sigma = scale(index) if callable(scale) else np.full(n, scale)
    labels = rng.normal(10.0, 3.0, n)
    predictions = labels + rng.normal(0.0, 1.0, n) * sigma
    return rows_of(labels.tolist(), predictions.tolist(), start=start, **options)  # type: ignore[arg-type]


def batches(rows: LabeledRows, size: int) -> Iterable[LabeledRows]:
    for start in range(0, len(rows), size):
        yield rows.rows(start, start + size)


def run(monitor: QualityMonitor, rows: LabeledRows, size: int | None = None, coverage: float | None = None
        ) -> Observation:  # fmt: skip
    out = Observation()
    for part in batches(rows, size or len(rows)):
        out.merge(monitor.observe(part, coverage))
    return out


def firing(alerts: list[Alert], kind: str) -> list[Alert]:
    return [a for a in alerts if a.type == kind and a.status == "firing"]


# -- metrics -----------------------------------------------------------------------------------


def one_window(rows: LabeledRows, spec: QualitySpec = QualitySpec()) -> dict[str, float]:
    """The metrics of one window holding every row."""
    monitor = QualityMonitor("m", dataclasses.replace(DEFAULT, quality_window=len(rows)), spec)
    out = monitor.observe(rows)
    assert out.windows_judged == 1
    return {metric: value for (_, scope, metric), value in out.quality.items() if scope == ""}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_metrics_match_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 2000
    labels = rng.integers(0, 2, n)
    scores = np.clip(labels * 0.3 + rng.random(n) * 0.7, 0, 1).round(3)  # rounded: ties in the ranks
    got = one_window(rows_of(labels.tolist(), scores.tolist()))
    predicted = (scores >= 0.5).astype(int)
    expected = {
        "accuracy": skm.accuracy_score(labels, predicted),
        "precision": skm.precision_score(labels, predicted),
        "recall": skm.recall_score(labels, predicted),
        "f1": skm.f1_score(labels, predicted),
        "f1_macro": skm.f1_score(labels, predicted, average="macro"),
        "roc_auc": skm.roc_auc_score(labels, scores),
        "log_loss": skm.log_loss(labels, scores),
    }
    for metric, value in expected.items():
        assert got[metric] == pytest.approx(value, abs=1e-12), metric
    # String classes with probability objects, the positive class configured; a threshold of 0.3.
    names = np.array(["no", "yes"])
    probabilities = [{"yes": float(s), "no": float(1 - s)} for s in scores]
    got = one_window(rows_of(names[labels].tolist(), [None] * n, probabilities=probabilities),
                     QualitySpec(positive_class="no"))  # fmt: skip
    argmax = np.where(scores > 0.5, "yes", "no")  # ties (0.5) go to the first key, "yes"
    argmax[scores == 0.5] = "yes"
    truth = names[labels]
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(truth, argmax), abs=1e-12)
    assert got["precision"] == pytest.approx(skm.precision_score(truth, argmax, pos_label="no"), abs=1e-12)
    assert got["recall"] == pytest.approx(skm.recall_score(truth, argmax, pos_label="no"), abs=1e-12)
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(truth == "no", 1 - scores), abs=1e-12)
    assert got["log_loss"] == pytest.approx(
        skm.log_loss(truth, np.column_stack([1 - scores, scores]), labels=["no", "yes"]), abs=1e-12)
    threshold = one_window(rows_of(labels.tolist(), scores.tolist()), QualitySpec(score_threshold=0.3))
    assert threshold["accuracy"] == pytest.approx(skm.accuracy_score(labels, scores >= 0.3), abs=1e-12)


def test_multiclass_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(4)
    n, classes = 3000, ["a", "b", "c", "d"]
    labels = rng.integers(0, 4, n)
    proba = rng.dirichlet(np.ones(4), n)
    proba[np.arange(n), labels] += rng.random(n)  # informative
    proba /= proba.sum(axis=1, keepdims=True)
    rows = rows_of([classes[i] for i in labels], [None] * n,
                   probabilities=[dict(zip(classes, map(float, row), strict=True)) for row in proba])  # fmt: skip
    got = one_window(rows)
    predicted = proba.argmax(axis=1)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted), abs=1e-12)
    assert got["f1_macro"] == pytest.approx(skm.f1_score(labels, predicted, average="macro"), abs=1e-12)
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, proba, multi_class="ovr"), abs=1e-12)
    assert got["log_loss"] == pytest.approx(skm.log_loss(labels, proba), abs=1e-12)
    assert "precision" not in got and "f1" not in got  # binary metrics need two classes
    # Class predictions (integers) without probabilities: accuracy and macro F1, with a class never predicted.
    predicted[predicted == 3] = 2
    got = one_window(rows_of(labels.tolist(), predicted.tolist()))
    assert got["f1_macro"] == pytest.approx(skm.f1_score(labels, predicted, average="macro"), abs=1e-12)
    assert "roc_auc" not in got and "log_loss" not in got


def test_regression_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(5)
    labels = rng.lognormal(1.0, 1.0, 2500)
    predictions = labels * rng.normal(1.05, 0.2, labels.size)
    got = one_window(rows_of(labels.tolist(), predictions.tolist()))
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(labels, predictions), abs=1e-12)
    assert got["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(labels, predictions)), abs=1e-12)
    assert got["mape"] == pytest.approx(skm.mean_absolute_percentage_error(labels, predictions), abs=1e-12)
    assert got["mean_error"] == pytest.approx(float(np.mean(predictions - labels)), abs=1e-12)
    # Zero labels are skipped by MAPE (sklearn would divide by its epsilon), and said so.
    labels[:100] = 0.0
    rows = rows_of(labels.tolist(), predictions.tolist())
    got = one_window(rows)
    assert got["mape"] == pytest.approx(skm.mean_absolute_percentage_error(labels[100:], predictions[100:]),
                                        abs=1e-12)  # fmt: skip
    reference = quality_reference(rows, QualitySpec())
    assert reference.summary["errors"]["mape_zero_labels_skipped"] == 100


def test_the_task_is_inferred_from_the_first_labeled_row() -> None:
    assert quality_reference(rows_of([True, False], [True, True]), QualitySpec()).task == "classification"
    assert quality_reference(rows_of([1, 0], [0.9, 0.2]), QualitySpec()).task == "classification"  # scores
    assert quality_reference(rows_of([3, 5], [3.5, 4.0]), QualitySpec()).task == "regression"
    assert quality_reference(rows_of([1.5, 2.0], [1.0, 2.0]), QualitySpec()).task == "regression"
    forced = quality_reference(rows_of([1, 0], [0.9, 0.2]), QualitySpec(task="regression"))
    assert forced.task == "regression" and forced.metrics["mae"] == pytest.approx(0.15)
    with pytest.raises(ValueError, match="no labeled row"):
        quality_reference(rows_of([None], [0.3]), QualitySpec())


def test_classes_past_max_classes_share_other() -> None:
    labels = [f"c{i % 30}" for i in range(600)]
    predictions = [f"c{(i + (i % 7 == 0)) % 30}" for i in range(600)]
    reference = quality_reference(rows_of(labels, predictions), QualitySpec(), max_classes=5)
    assert reference.classes == ("c0", "c1", "c2", "c3", "c4", "other")
    assert len(reference.matrix) == 6 and sum(map(sum, reference.matrix)) == 600
    # two different classes past the bound are no right prediction for sharing "other"
    assert reference.metrics["accuracy"] == pytest.approx(np.mean([a == b for a, b in zip(labels, predictions,
                                                                                           strict=True)]))


# -- the performance test ------------------------------------------------------------------------


def test_the_accuracy_test_is_fishers_exact_test_or_the_binomial_tail() -> None:
    measured = QualityReference("classification", 1000, {}, errors=100)
    test = accuracy_test(1000, 140, measured, 1e-3)
    _, p = stats.fisher_exact([[140, 860], [100, 900]], alternative="greater")
    assert test.p_value == pytest.approx(p, rel=1e-9)
    pooled = 240 / 2000
    assert test.z == pytest.approx((0.86 - 0.9) / math.sqrt(pooled * (1 - pooled) * 2 / 1000))
    configured = QualityReference.expected("classification", {"accuracy": 0.9})
    test = accuracy_test(1000, 140, configured, 1e-3)
    assert test.p_value == pytest.approx(stats.binomtest(140, 1000, 0.1, alternative="greater").pvalue, rel=1e-9)
    # The line: the highest accuracy flagged at alpha.
    line = accuracy_line(1000, measured, 1e-3)
    errors = round((1 - line) * 1000)
    assert accuracy_test(1000, errors, measured, 1e-3).p_value < 1e-3 <= accuracy_test(1000, errors - 1, measured,
                                                                                         1e-3).p_value


def test_the_mae_test_is_welchs_t_test() -> None:
    rng = np.random.default_rng(6)
    before, after = np.abs(rng.normal(size=800)), np.abs(rng.normal(scale=1.2, size=1000))
    reference = quality_reference(rows_of(np.zeros(800).tolist(), before.tolist()), QualitySpec(task="regression"))
    test = mae_test(after, reference, 1e-4)
    expected = stats.ttest_ind(after, before, equal_var=False, alternative="greater")
    assert (test.z, test.p_value) == pytest.approx((expected.statistic, expected.pvalue), rel=1e-9)
    one = mae_test(after, QualityReference.expected("regression", {"mae": 0.8}), 1e-4)
    assert one.p_value == pytest.approx(stats.ttest_1samp(after, 0.8, alternative="greater").pvalue, rel=1e-9)


# -- alerts --------------------------------------------------------------------------------------


def test_a_stable_error_rate_raises_no_alert_at_the_default_budget() -> None:
    monitor = QualityMonitor("m", DEFAULT)
    out = run(monitor, classifier(100_000, 0.1, seed=11), 10_000)
    assert out.alerts == [] and out.windows_judged == 100
    track = monitor.whole.tracks["1"]
    assert track.built is not None and track.built.count == 1000  # the first window
    assert track.detector is not None and track.detector.params["drift_threshold"] > 5  # the budget's line
    assert out.statistics[("1", "", QUALITY, "ddm")] > 0
    # a regressor too
    regression = QualityMonitor("r", DEFAULT)
    out = run(regression, regressor(50_000, 1.0, seed=12), 10_000)
    assert out.alerts == [] and regression.whole.tracks["1"].detector is not None


def test_an_error_rate_step_fires_concept_drift_and_performance() -> None:
    monitor = QualityMonitor("fraud", DEFAULT)
    rows = classifier(30_000, lambda i: np.where(i < 20_000, 0.1, 0.3), seed=3)
    alerts = run(monitor, rows, 5000).alerts
    performance = firing(alerts, "performance")
    assert performance and performance[0].severity == "critical" and performance[0].detector == "accuracy_test"
    first = performance[0]
    assert first.event_index == 20_999  # the first window after the step
    assert first.window_count == 1000 and first.window_end - first.window_start == 999.0
    assert first.window_start == T0 + 20_000
    assert first.statistic == pytest.approx(first.current["accuracy"]) and first.statistic < first.threshold < 0.9
    assert first.p_value is not None and first.p_value < quality_lines(DEFAULT, 0).performance_alpha(1000)
    assert first.reference["source"] == "stream" and first.reference["count"] == 1000
    assert first.reference["error_rate"] == pytest.approx(0.1, abs=0.03)
    assert first.current["error_rate"] == pytest.approx(0.3, abs=0.04)
    confusion = first.current["confusion"]
    assert confusion["labels"] == ["0", "1"] or confusion["labels"] == ["1", "0"]
    assert sum(map(sum, confusion["matrix"])) == 1000 and first.current["label_lag_p50"] == 3600.0
    assert first.message.startswith(f"accuracy of version '1' is {first.statistic:.4g} against ")
    assert "in the reference over 1000 labeled events (z=-" in first.message
    assert first.feature is None and first.version == "1" and first.segment is None
    concept = firing(alerts, "concept_drift")
    assert concept and concept[-1].severity == "critical" and concept[-1].detector == "ddm"
    assert all(20_000 <= a.event_index < 26_000 for a in concept)  # soon after the step, not before
    assert concept[-1].current["recent_error_rate"] > 0.2 and concept[-1].reference["source"] == "stream"


def test_a_regressor_whose_mae_doubles_fires_performance() -> None:
    monitor = QualityMonitor("price", DEFAULT)
    alerts = run(monitor, regressor(12_000, lambda i: np.where(i < 8000, 1.0, 2.0), seed=8), 3000).alerts
    performance = firing(alerts, "performance")
    assert performance[0].detector == "mae_test" and performance[0].severity == "critical"
    assert performance[0].event_index == 8999
    assert performance[0].statistic > performance[0].threshold > performance[0].reference["mae"]
    assert performance[0].current["errors"]["abs_error_quantiles"]["p90"] > 2.0
    assert "MAE of version '1' is " in performance[0].message and "(t=" in performance[0].message
    concept = firing(alerts, "concept_drift")
    assert concept and concept[0].detector == "page_hinkley" and concept[0].event_index >= 8000
    # The MAE halving is no alert: a better model is not on call.
    better = QualityMonitor("price", DEFAULT)
    assert run(better, regressor(12_000, lambda i: np.where(i < 8000, 2.0, 1.0), seed=8), 3000).alerts == []


def test_a_window_past_a_floor_is_critical_until_one_is_back() -> None:
    spec = QualitySpec(floors={"accuracy": 0.85, "recall": 0.5})
    monitor = QualityMonitor("m", DEFAULT, spec)
    rows = classifier(6000, lambda i: np.where((i >= 2000) & (i < 4000), 0.2, 0.1), seed=9)
    alerts = [a for a in run(monitor, rows, 1500).alerts if a.type == "performance"]
    # one performance incident: the test and the floor fire together, and resolve together
    assert [(a.status, a.severity, a.event_index, a.detectors) for a in alerts] == [
        ("firing", "critical", 2999, ("accuracy_test", "floor")),
        ("resolved", "critical", 4999, ("accuracy_test", "floor"))]  # fmt: skip
    assert "also firing: floor" in alerts[0].message
    each = QualityMonitor("m", dataclasses.replace(DEFAULT, alert_per_detector=True), spec)
    floors = [a for a in run(each, rows, 1500).alerts if a.detector == "floor"]
    assert [(a.status, a.severity, a.event_index) for a in floors] == [("firing", "critical", 2999),
                                                                        ("resolved", "critical", 4999)]
    assert floors[0].statistic < 0.85 == floors[0].threshold and "accuracy" in floors[0].message
    # before any reference: the first window is judged against its floors too
    early = QualityMonitor("m", DEFAULT, QualitySpec(floors={"accuracy": 0.95}))
    assert [a.event_index for a in firing(early.observe(classifier(1000, 0.1)).alerts, "performance")] == [999]


def test_expected_values_are_the_reference_without_a_baseline() -> None:
    rows = classifier(3000, 0.1, seed=10)
    high = QualityMonitor("m", DEFAULT, QualitySpec(expected={"accuracy": 0.97}))
    alerts = firing(run(high, rows).alerts, "performance")
    assert alerts and alerts[0].event_index == 999  # from the first window: no stream reference needed
    assert alerts[0].reference == {"source": "config", "count": 0, "accuracy": 0.97, "error_rate": pytest.approx(0.03)}
    assert run(QualityMonitor("m", DEFAULT, QualitySpec(expected={"accuracy": 0.9})), rows).alerts == []
    # a baseline wins over the config; a baseline for another version does not apply
    baseline = quality_reference(classifier(2000, 0.01, seed=1), QualitySpec())
    judged = QualityMonitor("m", DEFAULT, QualitySpec(expected={"accuracy": 0.9}), references={"1": baseline})
    assert firing(run(judged, rows).alerts, "performance")[0].reference["source"] == "baseline"
    other = QualityMonitor("m", DEFAULT, QualitySpec(expected={"accuracy": 0.9}), references={"2": baseline})
    assert run(other, rows).alerts == []
    # regression: an expected MAE
    mae = QualityMonitor("r", DEFAULT, QualitySpec(expected={"mae": 0.5}))
    assert firing(run(mae, regressor(2000, 1.0)).alerts, "performance")[0].event_index == 999


def test_a_baseline_loaded_while_running_is_judged_from_the_next_window() -> None:
    monitor = QualityMonitor("m", DEFAULT)
    run(monitor, classifier(3000, 0.1, seed=2))
    good = quality_reference(classifier(5000, 0.02, seed=3), QualitySpec())
    assert QualityReference.from_plain(msgpack.unpackb(msgpack.packb(good.to_plain()))).to_plain() == good.to_plain()
    data = monitor.snapshot()
    assert monitor.rebase({None: good}) == [QUALITY + "@1"] and monitor.rebase({None: good}) == []
    alerts = run(monitor, classifier(1000, 0.1, seed=4, start=3000)).alerts
    assert firing(alerts, "performance")[0].reference["source"] == "baseline"
    # one loaded while no worker ran: the restored monitor judges against it
    restored = QualityMonitor.restore(data, DEFAULT, references={None: good})
    assert run(restored, classifier(1000, 0.1, seed=4, start=3000)).alerts == alerts


def test_the_least_recently_labeled_version_retires_and_its_alerts_resolve() -> None:
    config = dataclasses.replace(DEFAULT, max_versions=2)
    monitor = QualityMonitor("m", config, QualitySpec(floors={"accuracy": 0.95}))
    out = monitor.observe(classifier(1000, 0.1, versions=["1"] * 1000))
    assert [a.version for a in firing(out.alerts, "performance")] == ["1"]
    monitor.observe(classifier(500, 0.0, versions=["2"] * 500, start=1000))
    out = monitor.observe(classifier(10, 0.0, versions=["3"] * 10, start=1500))
    assert out.retired_versions == ["1"] and set(monitor.versions) == {"2", "3"}
    closed = [a for a in out.alerts if a.status == "resolved"]
    assert [(a.version, a.detector, a.event_index) for a in closed] == [("1", "floor", 1500)]
    assert "retired" in closed[0].message and "1" not in monitor.whole.tracks
    # a retired version that comes back in the same batch starts afresh
    back = monitor.observe(classifier(4, 0.0, versions=["1", "1", "2", "1"], start=1510))
    # ("2" was the least recently labeled: "1" retires it, then "2" retires "3")
    assert back.retired_versions == ["2", "3"] and monitor.whole.tracks["1"].window.count == 3
    # late labels of more versions than max_versions, interleaved at every row: as one label at a time
    interleaved = classifier(3000, 0.1, versions=[str(i % 3) for i in range(3000)])
    whole, single = QualityMonitor("m", config), QualityMonitor("m", config)
    assert whole.observe(interleaved).retired_versions == run(single, interleaved, 1).retired_versions
    assert whole.versions_retired == 2998 and msgpack.packb(whole.snapshot()) == msgpack.packb(single.snapshot())


def test_segments_are_tracked_in_label_order_and_judged_on_their_own() -> None:
    config = dataclasses.replace(DEFAULT, max_segments=2)
    n = 24_000
    regions = np.random.default_rng(1).choice(["eu", "us", "apac"], n, p=[0.5, 0.4, 0.1])
    regions[:3] = ["eu", "us", "apac"]
    rows = classifier(n, lambda i: np.where((regions[i] == "eu") & (i >= 12_000), 0.35, 0.1), seed=5,
                      segments=[{"region": str(r)} for r in regions])  # fmt: skip
    monitor = QualityMonitor("m", config, segments=[("region",)])
    out = run(monitor, rows, 4000)
    assert list(monitor.tracked) == ["region=eu", "region=us"]  # the first two in label order; apac is "other"
    assert monitor.other_labels == int((regions == "apac").sum())
    by_segment = {(a.segment or {}).get("region") for a in firing(out.alerts, "performance")}
    assert "eu" in by_segment and "us" not in by_segment
    eu = next(a for a in firing(out.alerts, "performance") if a.segment == {"region": "eu"})
    assert eu.reference["source"] == "stream" and "in segment region=eu" in eu.message
    assert ("1", "region=eu", "accuracy") in out.quality


def test_the_warning_zone_is_a_warning_alert() -> None:
    """DDM's warning zone, entered by a short bump in the error rate that never reaches its drift line
    (lines of 3 and 4.5 standard errors, the budget off, so that a seeded stream shows the zone)."""
    config = dataclasses.replace(DEFAULT, false_alarm_budget=0.0, quality_window=2000, ddm_warning_threshold=3.0)
    rows = classifier(16_000, lambda i: np.where((i >= 6000) & (i < 6600), 0.2, 0.1), seed=25)
    monitor = QualityMonitor("m", config)
    alerts = run(monitor, rows, 1000).alerts
    assert [(a.type, a.status, a.severity, a.event_index) for a in alerts] == [
        ("concept_drift", "firing", "warning", 6437), ("concept_drift", "resolved", "warning", 13999)]
    warning = alerts[0]
    assert "entered its warning zone" in warning.message and warning.detector == "ddm"
    assert warning.statistic > warning.threshold == pytest.approx(warning.statistic, abs=1e-3)  # just past it
    # its window: the labeled events since the detector started, once the first window made the reference
    assert (warning.window_count, warning.window_start, warning.window_end) == (4438, T0 + 2000, T0 + 6437)
    assert warning.current["recent_error_rate"] > 0.15
    # the same bump does cross the drift line of a detector whose lines are closer: critical
    closer = dataclasses.replace(config, ddm_drift_threshold=3.2)
    escalated = [a for a in run(QualityMonitor("m", closer), rows, 1000).alerts if a.status == "firing"]
    assert [a.severity for a in escalated] == ["warning", "critical"]


def test_label_lag_and_coverage_raise_data_quality() -> None:
    config = dataclasses.replace(DEFAULT, label_lag_max=7200.0, label_coverage_min=0.5)
    monitor = QualityMonitor("m", config)
    out = monitor.observe(classifier(1000, 0.1, lag=3 * 3600.0), coverage=0.3)
    health = firing(out.alerts, "data_quality")
    assert {a.detector for a in health} | {d for a in health for d in a.detectors} == {"label_lag", "label_coverage"}
    assert out.quality[("1", "", "label_lag_p50")] == 3 * 3600.0 and out.quality[("1", "", "coverage")] == 0.3
    out = monitor.observe(classifier(1000, 0.1, start=1000), coverage=0.9)
    assert [a.status for a in out.alerts] == ["resolved"]  # one incident, resolved when both are back


def test_a_window_also_closes_on_event_time() -> None:
    config = dataclasses.replace(DEFAULT, quality_window_seconds=100.0)
    out = QualityMonitor("m", config).observe(classifier(1000, 0.1))
    assert out.windows_judged == 9  # 101 labels span 100 s of event time
    alpha = quality_lines(config, 0).performance_alpha(101)
    rate = rate_per_value(config, 0)
    assert rate is not None and alpha == pytest.approx(rate * 101, rel=1e-2)  # a shorter window spends less
    # Windows too short to judge report their metrics, but fire nothing and make no reference.
    short = dataclasses.replace(DEFAULT, quality_window_seconds=5.0)
    monitor = QualityMonitor("m", short, QualitySpec(floors={"accuracy": 0.99}))
    out = monitor.observe(classifier(300, 0.1))
    assert out.windows_judged == 50 and ("1", "", "accuracy") in out.quality and out.alerts == []
    track = monitor.whole.tracks["1"]
    assert track.built is not None and track.built.count == 30  # five windows of 6: the first 30 labels
    assert firing(monitor.observe(classifier(100, 0.1, start=300)).alerts, "performance") == []


def test_a_window_restored_under_a_smaller_quality_window_closes_at_the_next_label() -> None:
    monitor = QualityMonitor("m", DEFAULT)
    monitor.observe(classifier(1800, 0.1))
    smaller = dataclasses.replace(DEFAULT, quality_window=500)
    restored = QualityMonitor.restore(monitor.snapshot(), smaller)
    out = restored.observe(classifier(600, 0.1, start=1800))
    assert out.windows_judged == 2 and restored.whole.tracks["1"].window.count == 99  # 801, then 500, then 99


@pytest.mark.parametrize("detector", ["hddm_w", "adwin"])
def test_the_other_error_detectors_catch_the_step_under_the_budget(detector: str) -> None:
    config = dataclasses.replace(DEFAULT, error_detector=detector)
    monitor = QualityMonitor("m", config)
    alerts = firing(run(monitor, classifier(16_000, lambda i: np.where(i < 8000, 0.1, 0.35), seed=2)).alerts,
                    "concept_drift")  # fmt: skip
    assert alerts and alerts[-1].severity == "critical" and alerts[-1].detector == detector
    assert all(a.event_index >= 8000 for a in alerts)


# -- state ---------------------------------------------------------------------------------------


def test_snapshots_round_trip_mid_window_and_while_firing() -> None:
    spec = QualitySpec(floors={"accuracy": 0.85})
    config = dataclasses.replace(DEFAULT, max_versions=2)
    rows = classifier(9500, lambda i: np.where(i >= 4000, 0.3, 0.1), seed=7,
                      versions=[["1", "2"][i % 2] for i in range(9500)],
                      segments=[{"region": ["eu", "us"][i % 3 == 0]} for i in range(9500)])  # fmt: skip
    whole = QualityMonitor("m", config, spec, segments=[("region",)])
    expected = run(whole, rows).alerts
    monitor = QualityMonitor("m", config, spec, segments=[("region",)])
    alerts = run(monitor, rows.rows(0, 6500)).alerts
    assert any(a.status == "firing" for a in alerts) and monitor.whole.tracks["1"].window.count
    packed = msgpack.packb(monitor.snapshot())
    restored = QualityMonitor.restore(msgpack.unpackb(packed), config, spec, segments=[("region",)])
    assert msgpack.packb(restored.snapshot()) == packed
    alerts += run(restored, rows.rows(6500, 9500)).alerts
    assert alerts == expected
    with pytest.raises(SnapshotError):
        QualityMonitor.restore({"v": 99}, config)
    broken = msgpack.unpackb(packed)
    broken["scopes"][0][1]["tracks"][0][1]["window"]["time"] = b"\x00" * 3
    with pytest.raises(SnapshotError):
        QualityMonitor.restore(broken, config, spec, segments=[("region",)])


def test_a_detector_restored_under_other_lines_starts_afresh() -> None:
    monitor = QualityMonitor("m", DEFAULT)
    run(monitor, classifier(5000, 0.1))
    data = monitor.snapshot()
    same = QualityMonitor.restore(data, DEFAULT).whole.tracks["1"].detector
    assert same is not None and same.snapshot() == monitor.whole.tracks["1"].detector.snapshot()  # type: ignore[union-attr]
    looser = dataclasses.replace(DEFAULT, false_alarm_budget=100.0)
    fresh = QualityMonitor.restore(data, looser).whole.tracks["1"]
    assert fresh.detector is not None and fresh.detector.params != same.params
    assert fresh.detector.snapshot()["state"]["_p"]["attrs"]["n"] == 0 and fresh.stretch[0] == 0
    switched = QualityMonitor.restore(data, dataclasses.replace(DEFAULT, error_detector="hddm_w"))
    assert switched.whole.tracks["1"].detector.name == "hddm_w"  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_batching_does_not_change_alerts_or_snapshots(kind: str) -> None:
    config = dataclasses.replace(DEFAULT, quality_window=500, max_classes=3)
    spec = QualitySpec(floors={"accuracy": 0.8} if kind == "classifier" else {"mae": 1.2})
    if kind == "classifier":
        rows = classifier(6000, lambda i: np.where(i >= 3000, 0.3, 0.1), seed=13,
                          segments=[{"region": ["eu", "us"][i % 5 == 0]} for i in range(6000)])  # fmt: skip
    else:
        rows = regressor(6000, lambda i: np.where(i >= 3000, 2.0, 1.0), seed=13,
                         segments=[{"region": ["eu", "us"][i % 5 == 0]} for i in range(6000)])  # fmt: skip
    results = []
    for size in (1, 7, 1000):
        monitor = QualityMonitor("m", config, spec, segments=[("region",)])
        alerts = run(monitor, rows.rows(0, 5750), size).alerts  # the last window left open
        results.append((alerts, msgpack.packb(monitor.snapshot())))
    assert results[0][0] and {a.type for a in results[0][0]} >= {"performance", "concept_drift"}
    assert results[0] == results[1] == results[2]


def test_multiclass_probabilities_are_batching_invariant() -> None:
    rng = np.random.default_rng(3)
    names = [f"k{i}" for i in range(6)]
    n = 1500
    labels = rng.integers(0, 6, n)
    probabilities = [dict(zip(names[: 2 + i % 5], map(float, rng.dirichlet(np.ones(2 + i % 5))), strict=True))
                     for i in range(n)]  # fmt: skip
    rows = rows_of([names[i] for i in labels], [None] * n, probabilities=probabilities)
    snapshots = set()
    for size in (1, 13, n):
        monitor = QualityMonitor("m", dataclasses.replace(DEFAULT, quality_window=400))
        run(monitor, rows, size)
        snapshots.add(msgpack.packb(monitor.snapshot()))
    assert len(snapshots) == 1


# -- config and budget -----------------------------------------------------------------------------


def test_the_quality_tests_take_their_share_of_the_budget() -> None:
    assert QUALITY_TESTS == 2
    assert family_size(DEFAULT, 1) == (201 * 6 + 2) * 2 + 2 * 200 + 3
    lines = quality_lines(DEFAULT, 0)
    assert lines is quality_lines(DEFAULT, 0) and lines.rate == rate_per_value(DEFAULT, 0)
    assert lines.performance_alpha(1000) == pytest.approx(lines.rate * 1000, rel=1e-2)  # type: ignore[operator]
    assert quality_lines(dataclasses.replace(DEFAULT, false_alarm_budget=0.0), 0).performance_alpha(1000) == 1e-4
    ddm = lines.error_lines(0.1)
    assert 5 < ddm["ddm_warning_threshold"] < ddm["ddm_drift_threshold"] < 7
    assert lines.error_lines(0.001) == lines.error_lines(0.05)  # clipped into the calibrated range
    assert lines.error_lines(0.1) != lines.error_lines(0.3)
    assert quality_lines(DEFAULT, 3).regression_lines(1000)["ph_threshold"] > lines.regression_lines(1000)[
        "ph_threshold"] > DEFAULT.ph_threshold  # fmt: skip


@pytest.mark.parametrize("options, message", [
    ({"error_detector": "hddm_a"}, "hddm_a is not calibrated"),
    ({"error_detector": "eddm"}, "error_detector"),
    ({"regression_detector": "ddm"}, "regression_detector"),
    ({"quality_window": 1}, "quality_window"),
    ({"quality_window": 10.5}, "quality_window"),
    ({"performance_alpha": 0.0}, "performance_alpha"),
    ({"label_coverage_min": 1.5}, "label_coverage_min"),
    ({"ddm_drift_threshold": 1.0}, "ddm_drift_threshold"),
    ({"hddm_w_drift_confidence": 2.0}, "hddm_w_drift_confidence"),
    ({"max_classes": 1}, "max_classes"),
    ({"ph_alpha": 0.99, "change_detectors": ("adwin",)}, "regression_detector is page_hinkley"),
])  # fmt: skip
def test_bad_quality_options_are_named(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MonitorConfig(**options)


def test_hddm_a_runs_only_without_a_budget() -> None:
    config = MonitorConfig(error_detector="hddm_a", false_alarm_budget=0.0)
    monitor = QualityMonitor("m", config)
    run(monitor, classifier(3000, 0.1))
    assert monitor.whole.tracks["1"].detector.name == "hddm_a"  # type: ignore[union-attr]


def test_quality_spec_is_validated_and_hashable() -> None:
    spec = QualitySpec(expected={"accuracy": 0.9}, floors={"f1": 0.5})
    assert hash(spec) == hash(QualitySpec(expected={"accuracy": 0.9}, floors={"f1": 0.5}))
    assert spec.expected == {"accuracy": 0.9}
    bad: list[tuple[dict, str]] = [
        ({"task": "ranking"}, "task"),
        ({"expected": {"acc": 0.9}}, "expected"),
        ({"floors": {"accuracy": 1.5}}, "floors"),
        ({"score_threshold": math.nan}, "score_threshold"),
        ({"task": "regression", "floors": {"accuracy": 0.5}}, "floors"),
        ({"positive_class": ""}, "positive_class"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            QualitySpec(**kwargs)


def test_a_performance_alert_at_the_line_stands_until_the_model_is_clearly_back() -> None:
    """Hysteresis: a window just under the alpha line keeps a firing alert; a good one resolves it."""
    from detectors.config import MonitorConfig
    from detectors.monitors.quality import LabeledRows, QualityMonitor

    config = MonitorConfig(quality_window=1000, false_alarm_budget=0, performance_alpha=1e-6)
    monitor = QualityMonitor("m", config)

    def window(errors: int, start: float) -> LabeledRows:
        wrong = np.zeros(1000, dtype=bool)
        wrong[np.random.default_rng(errors).choice(1000, errors, replace=False)] = True
        labels = [0 if bad else 1 for bad in wrong]
        return LabeledRows([None] * 1000, [None] * 1000, [1] * 1000, [None] * 1000, labels,
                           np.full(1000, start), np.full(1000, start + 60))  # fmt: skip

    alerts = [monitor.observe(window(errors, 1.8e9 + i)).alerts
              for i, errors in enumerate((100, 200, 155, 100))]  # fmt: skip
    # The reference (10% errors); fires at 20%; 15.5% is p ~ 1e-4 (over alpha 1e-6, under sqrt(alpha)
    # 1e-3): it stands; back at 10%: resolved.
    assert [[(a.type, a.status) for a in found] for found in alerts] == [
        [], [("performance", "firing")], [], [("performance", "resolved")]]


def test_firing_says_what_fires_now_per_version_and_type() -> None:
    monitor = QualityMonitor("fraud", DEFAULT)
    assert monitor.firing() == []
    run(monitor, classifier(25_000, lambda i: np.where(i < 20_000, 0.1, 0.3), seed=3), 5000)
    found = {(version, key, kind): (severity, names) for version, key, kind, severity, names in monitor.firing()}
    assert found[("1", "", "performance")] == ("critical", ("accuracy_test",))
    assert found[("1", "", "concept_drift")][1] == ("ddm",)
