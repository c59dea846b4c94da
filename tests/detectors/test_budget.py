"""The false-alarm budget: its split over a model's detectors, and the lines it gives them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats

from detectors import budget, nulls
from detectors.budget import SECONDS_PER_WEEK, budget_lines, detector_lines, family_size, rate_per_value
from detectors.columns import Column
from detectors.config import MonitorConfig
from detectors.monitors import ModelBatch, ModelMonitor
from detectors.reference import CategoricalReference, NumericReference
from detectors.two_sample import TESTS
from detectors.window import WindowedDetector

DEFAULT = MonitorConfig()


def test_the_budget_is_split_evenly_over_the_configured_family() -> None:
    # 201 columns (200 features + the prediction) x 6 detectors (psi, ks, null_rate, out_of_range, adwin,
    # page_hinkley), plus the 2 quality tests of late labels (the performance test and the error stream's
    # detector), plus the whole model's own tests, which slices do not multiply: the 2 schema checks of each
    # of the 200 features (missing_feature, kind_change), new_feature, pca_reconstruction and outliers
    whole = 2 * 200 + 3
    assert family_size(DEFAULT, 0) == 201 * 6 + 2 + whole
    assert family_size(DEFAULT, 2) == (201 * 6 + 2) * 3 + whole  # each slice's values split the same events once more
    rate = rate_per_value(DEFAULT, 0)
    assert rate == pytest.approx(1.0 / (1000 * SECONDS_PER_WEEK * (201 * 6 + 2 + whole)))
    # The whole family at its share, each judging every event of a week, spends exactly the budget.
    assert rate * 1000 * SECONDS_PER_WEEK * family_size(DEFAULT, 0) == pytest.approx(DEFAULT.false_alarm_budget)
    doubled = dataclasses.replace(DEFAULT, false_alarm_budget=2.0, event_rate=2000.0)
    assert rate_per_value(doubled, 0) == pytest.approx(rate)
    fewer = dataclasses.replace(DEFAULT, max_features=20, categorical_tests=("psi",))
    assert family_size(fewer, 0) == 21 * 6 + 2 + 2 * 20 + 3
    alone = dataclasses.replace(fewer, schema_checks=False, pca_variance=0.0, outlier_sigma=0.0,
                                numeric_tests=("psi", "ks", "null_rate"))
    assert family_size(alone, 0) == 21 * 5 + 2
    assert rate_per_value(dataclasses.replace(DEFAULT, false_alarm_budget=0.0), 0) is None


def test_a_budget_of_zero_leaves_every_line_as_configured() -> None:
    off = dataclasses.replace(DEFAULT, false_alarm_budget=0.0)
    assert budget.budgeted(off, 3, "numeric") is off


def test_each_line_is_the_stricter_of_its_option_and_the_budget() -> None:
    rate = rate_per_value(DEFAULT, 0)
    assert rate is not None
    lines = budget_lines(DEFAULT, rate, "numeric")
    own = detector_lines(DEFAULT, rate, "numeric")
    assert lines.ks_alpha == pytest.approx(rate * DEFAULT.window_size, rel=1e-2)
    assert lines.ks_alpha < DEFAULT.ks_alpha
    assert lines.chi_square_alpha == lines.ks_alpha == lines.psi_alpha == lines.null_rate_alpha
    assert lines.ph_threshold == own["ph_threshold"] > DEFAULT.ph_threshold
    assert lines.adwin_delta == own["adwin_delta"] < DEFAULT.adwin_delta
    assert lines.psi_warning == DEFAULT.psi_warning  # the option stays, as a floor under the null line
    # A generous budget (10^6 false alarms a week) leaves the options stricter than its lines.
    loose = budget_lines(DEFAULT, 1e-4, "numeric")
    assert (loose.ks_alpha, loose.ph_threshold, loose.adwin_delta) == (
        DEFAULT.ks_alpha, DEFAULT.ph_threshold, DEFAULT.adwin_delta)  # fmt: skip
    # Sliding windows are judged more often: each judgement gets less.
    sliding = dataclasses.replace(DEFAULT, window_step=100)
    assert detector_lines(sliding, rate, "numeric")["ks_alpha"] == pytest.approx(rate * 100, rel=1e-2)
    # Categorical columns have no change detectors, and detectors the config does not run get no line.
    assert "ph_threshold" not in detector_lines(DEFAULT, rate, "categorical")
    assert "adwin_delta" not in detector_lines(dataclasses.replace(DEFAULT, change_detectors=("page_hinkley",)),
                                               rate, "numeric")  # fmt: skip


def test_a_budget_past_the_calibrated_range_keeps_the_options() -> None:
    huge = dataclasses.replace(DEFAULT, false_alarm_budget=1e12)
    lines = budget.budgeted(huge, 0, "numeric")
    assert lines.psi_alpha == 0.5  # the budget's null lines are there, and below the options
    assert (lines.ph_threshold, lines.adwin_delta, lines.ks_alpha) == (
        DEFAULT.ph_threshold, DEFAULT.adwin_delta, DEFAULT.ks_alpha)


def test_lines_grow_stricter_as_the_share_shrinks() -> None:
    shares = [1e-4, 1e-6, 1e-8, 1e-10, 1e-12]
    lines = [detector_lines(DEFAULT, share, "numeric") for share in shares]
    for looser, stricter in zip(lines, lines[1:], strict=False):
        for alpha in ("ks_alpha", "psi_alpha", "null_rate_alpha", "adwin_delta"):
            assert stricter[alpha] < looser[alpha]
        assert stricter["ph_threshold"] > looser["ph_threshold"]
    line = [nulls.psi_line(share * 1000, 10, 1000, 5000) for share in shares]
    assert line == sorted(line)


def _stable_windows(test: str, missing: float, categorical: bool, rng: np.random.Generator) -> tuple[int, int]:
    """False alarms and windows of one test at its null line for 1% of windows, over 40 references."""
    alarms = windows = 0
    for _ in range(40):
        if categorical:
            labels = rng.choice(list("abcdef"), size=4000, p=[0.3, 0.25, 0.2, 0.1, 0.1, 0.05]).tolist()
            ref_rows = [None if gone else label for label, gone in zip(labels, rng.random(4000) < missing, strict=True)]
            reference: NumericReference | CategoricalReference = CategoricalReference.build(ref_rows, 50)
            stream = rng.choice(list("abcdef"), size=50_000, p=[0.3, 0.25, 0.2, 0.1, 0.1, 0.05]).astype(object)
            stream[rng.random(stream.size) < missing] = None
            values: object = stream.tolist()
        else:
            rows = rng.standard_normal(4000)
            absent = rng.random(rows.size) < missing
            reference = NumericReference.build(rows[~absent], bins=10, missing=int(absent.sum()))
            values = rng.standard_normal(50_000)
            values[rng.random(50_000) < missing] = np.nan  # type: ignore[index]
        detector = WindowedDetector(reference, [TESTS[test](warning=1e-9, critical=1e-9, alpha=0.01)], 500)
        verdicts = detector.update(values)  # type: ignore[arg-type]
        alarms, windows = alarms + sum(v.drift for v in verdicts), windows + len(verdicts)
    return alarms, windows


@pytest.mark.parametrize("test", ["psi", "jensen_shannon"])
@pytest.mark.parametrize("missing", [0.0, 0.6])
@pytest.mark.parametrize("categorical", [False, True])
def test_a_distance_null_line_is_crossed_as_often_as_its_window_alpha(test: str, missing: float,
                                                                      categorical: bool) -> None:  # fmt: skip
    """At 1% of windows, stable windows cross the null line at most about that often, with values
    missing too (the line follows the present counts): the count's exact 99.9% interval reaches
    the target or lies under it (the 3% margin makes the lines a little conservative)."""
    alarms, windows = _stable_windows(test, missing, categorical, np.random.default_rng(7))
    expected = 0.01 * windows
    low = stats.chi2.ppf(0.0005, 2 * alarms) / 2 if alarms else 0.0
    high = stats.chi2.ppf(0.9995, 2 * alarms + 2) / 2
    assert low <= expected and high >= 0.6 * expected, f"{alarms} false alarms in {windows} windows"


@pytest.mark.parametrize("test", ["null_rate", "unseen_rate"])
def test_a_share_null_line_is_conservative(test: str) -> None:
    """The missing and unseen shares' lines are union bounds: at most their alpha, with half the
    values missing (the largest spread) as with none."""
    for missing in (0.0, 0.5):
        alarms, windows = _stable_windows(test, missing, test == "unseen_rate", np.random.default_rng(3))
        assert windows >= 3900 and alarms <= 0.01 * windows, (missing, alarms, windows)


def test_the_model_judges_with_its_budget_lines() -> None:
    sliced = ModelMonitor("m", DEFAULT, segments=[("region",)])
    whole = ModelMonitor("m", DEFAULT)
    rate = rate_per_value(DEFAULT, 1)
    assert rate is not None
    assert sliced.lines("numeric").ks_alpha == pytest.approx(rate * 1000, rel=1e-2)
    assert sliced.lines("boolean") is sliced.lines("categorical")
    assert whole.lines("numeric").ph_threshold < sliced.lines("numeric").ph_threshold
    batch = ModelBatch({"x": Column.from_numbers(np.random.default_rng(1).standard_normal(6000))},
                       np.arange(6000.0), None)  # fmt: skip
    whole.observe(batch)
    monitor = whole.whole.features["x"]
    assert monitor.changes["page_hinkley"].limit == whole.lines("numeric").ph_threshold
    assert monitor.window is not None
    ks = next(t for t in monitor.window.tests if t.name == "ks")
    assert ks.alpha == whole.lines("numeric").ks_alpha  # type: ignore[attr-defined]
    restored = ModelMonitor.restore(whole.snapshot(), DEFAULT)
    assert restored.whole.features["x"].changes["page_hinkley"].limit == monitor.changes["page_hinkley"].limit


def test_a_forgetting_page_hinkley_is_refused_under_a_budget() -> None:
    with pytest.raises(ValueError, match="ph_alpha must be 1 under a false-alarm budget"):
        MonitorConfig(ph_alpha=0.999)
    assert MonitorConfig(ph_alpha=0.999, false_alarm_budget=0).ph_alpha == 0.999


@pytest.mark.parametrize("option, value", [("false_alarm_budget", -1.0), ("event_rate", 0.0)])
def test_bad_budget_settings_are_named(option: str, value: float) -> None:
    with pytest.raises(ValueError, match=option):
        MonitorConfig(**{option: value})


def test_a_change_detector_built_for_other_lines_restarts_with_the_configs() -> None:
    """An upgrade to a budget (or a changed option) must not leave restored detectors on their old lines."""
    before = dataclasses.replace(DEFAULT, false_alarm_budget=0.0)
    monitor = ModelMonitor("m", before)
    values = np.random.default_rng(3).standard_normal(8000)
    monitor.observe(ModelBatch({"x": Column.from_numbers(values)}, np.arange(8000.0)))
    old = monitor.whole.features["x"].changes["page_hinkley"]
    assert old.limit == before.ph_threshold and old.snapshot()["state"][0] > 0
    same = ModelMonitor.restore(monitor.snapshot(), before).whole.features["x"].changes["page_hinkley"]
    assert same.snapshot() == old.snapshot()
    upgraded = ModelMonitor.restore(monitor.snapshot(), DEFAULT)
    fresh = upgraded.whole.features["x"].changes["page_hinkley"]
    assert fresh.limit == upgraded.lines("numeric").ph_threshold > before.ph_threshold
    assert fresh.snapshot()["state"][0] == 0  # no values yet: its sums were built for the old line


def test_change_detectors_judge_normal_scores_so_a_skewed_feature_keeps_its_share() -> None:
    """Page-Hinkley at the line for 10^-4 false alarms per value, on a stable lognormal feature:
    fed normal scores against the reference (what the monitor feeds) it stays at its share; fed
    z-scores, the long tail makes it fire too often (the further out the line, the more so)."""
    from detectors.calibration import page_hinkley_threshold
    from detectors.streaming import PageHinkleyDetector

    threshold = page_hinkley_threshold(1e-4, 0.1, 30, 5000)
    rng = np.random.default_rng(5)
    by_scores = by_z = values = 0
    for _ in range(20):
        reference = NumericReference.build(rng.lognormal(size=5000), bins=10)
        stream = rng.lognormal(size=100_000)
        scored, plain = PageHinkleyDetector(0.1, threshold), PageHinkleyDetector(0.1, threshold)
        by_scores += len(scored.update(reference.normal_scores(stream)))
        by_z += len(plain.update((stream - reference.mean) / reference.std))
        values += stream.size
    expected = 1e-4 * values
    assert stats.chi2.ppf(0.0005, 2 * by_scores) / 2 <= expected <= stats.chi2.ppf(0.9995, 2 * by_scores + 2) / 2
    assert stats.chi2.ppf(0.0005, 2 * by_z) / 2 > expected, by_z  # 1.7 times here; far more further out
    # The monitor feeds its change detectors exactly those scores.
    monitor = ModelMonitor("m", dataclasses.replace(DEFAULT, false_alarm_budget=0.0))
    values_ = rng.lognormal(size=7000)
    monitor.observe(ModelBatch({"x": Column.from_numbers(values_)}, np.arange(7000.0)))
    feature = monitor.whole.features["x"]
    assert isinstance(feature.reference, NumericReference)
    fed = feature.reference.normal_scores(values_[5000:])
    assert feature.changes["page_hinkley"].snapshot()["state"][1] == pytest.approx(float(fed.sum()))
