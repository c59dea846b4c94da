"""The false-alarm budget: its split over a model's detectors, and the lines it gives them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats

from detectors import budget
from detectors.budget import SECONDS_PER_WEEK, budget_lines, detector_lines, family_size, rate_per_value
from detectors.columns import Column
from detectors.config import MonitorConfig
from detectors.monitors import ModelBatch, ModelMonitor
from detectors.reference import CategoricalReference, NumericReference
from detectors.two_sample import TESTS
from detectors.window import WindowedDetector

DEFAULT = MonitorConfig()


def test_the_budget_is_split_evenly_over_the_configured_family() -> None:
    # 201 columns (200 features + the prediction) x 5 detectors (psi, ks, null_rate, adwin, page_hinkley)
    assert family_size(DEFAULT, 0) == 201 * 5
    assert family_size(DEFAULT, 2) == 201 * 5 * 3  # each slice's values split the same events once more
    rate = rate_per_value(DEFAULT, 0)
    assert rate == pytest.approx(1.0 / (1000 * SECONDS_PER_WEEK * 201 * 5))
    # The whole family at its share, each judging every event of a week, spends exactly the budget.
    assert rate * 1000 * SECONDS_PER_WEEK * family_size(DEFAULT, 0) == pytest.approx(DEFAULT.false_alarm_budget)
    doubled = dataclasses.replace(DEFAULT, false_alarm_budget=2.0, event_rate=2000.0)
    assert rate_per_value(doubled, 0) == pytest.approx(rate)
    fewer = dataclasses.replace(DEFAULT, max_features=20, categorical_tests=("psi",))
    assert family_size(fewer, 0) == 21 * 5
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
    assert lines.chi_square_alpha == lines.ks_alpha
    assert lines.ph_threshold == own["ph_threshold"] > DEFAULT.ph_threshold
    assert lines.adwin_delta == own["adwin_delta"] < DEFAULT.adwin_delta
    assert lines.psi_warning == max(DEFAULT.psi_warning, own["psi_warning"])
    for test in ("psi", "jensen_shannon", "null_rate"):
        assert getattr(lines, f"{test}_critical") >= getattr(lines, f"{test}_warning")
    # A generous budget (10^6 false alarms a week) leaves the options stricter than its lines.
    loose = budget_lines(DEFAULT, 1e-4, "numeric")
    assert (loose.ks_alpha, loose.psi_warning, loose.ph_threshold, loose.adwin_delta) == (
        DEFAULT.ks_alpha,
        DEFAULT.psi_warning,
        DEFAULT.ph_threshold,
        DEFAULT.adwin_delta,
    )
    # Sliding windows are judged more often: each judgement gets less.
    sliding = dataclasses.replace(DEFAULT, window_step=100)
    assert detector_lines(sliding, rate, "numeric")["ks_alpha"] == pytest.approx(rate * 100, rel=1e-2)


def test_a_budget_past_the_calibrated_range_keeps_the_options() -> None:
    huge = dataclasses.replace(DEFAULT, false_alarm_budget=1e12)
    lines = budget.budgeted(huge, 0, "numeric")
    assert (lines.ph_threshold, lines.adwin_delta, lines.ks_alpha) == (
        DEFAULT.ph_threshold, DEFAULT.adwin_delta, DEFAULT.ks_alpha)


def test_lines_grow_stricter_as_the_share_shrinks() -> None:
    shares = [1e-4, 1e-6, 1e-8, 1e-10, 1e-12]
    lines = [detector_lines(DEFAULT, share, "numeric") for share in shares]
    for looser, stricter in zip(lines, lines[1:], strict=False):
        assert stricter["ks_alpha"] < looser["ks_alpha"]
        assert stricter["psi_warning"] > looser["psi_warning"]
        assert stricter["jensen_shannon_warning"] > looser["jensen_shannon_warning"]
        assert stricter["null_rate_warning"] > looser["null_rate_warning"]
        assert stricter["ph_threshold"] > looser["ph_threshold"]
        assert stricter["adwin_delta"] < looser["adwin_delta"]


def _window_alarms(reference: NumericReference | CategoricalReference, values: object, test: str, line: float,
                   window: int) -> tuple[int, int]:  # fmt: skip
    params = {"alpha": line} if TESTS[test].has_p_value else {"warning": line, "critical": max(line, 10.0)}
    detector = WindowedDetector(reference, [TESTS[test](**params)], window)
    verdicts = detector.update(values)  # type: ignore[arg-type]
    return sum(v.drift for v in verdicts), len(verdicts)


@pytest.mark.parametrize("test", ["psi", "jensen_shannon", "null_rate"])
def test_a_distance_line_from_the_null_is_crossed_as_often_as_its_window_alpha(test: str) -> None:
    """At a share where false alarms are frequent (1% of windows), stable windows cross the line
    the budget gives about 1% of the time: within the exact Poisson interval of the count."""
    window_alpha = 0.01
    config = dataclasses.replace(DEFAULT, window_size=500, reference_size=2000)
    line = detector_lines(config, window_alpha / config.step, "numeric")[f"{test}_warning"]
    rng = np.random.default_rng(7)
    alarms = windows = 0
    for _ in range(40):
        missing = 0.5 if test == "null_rate" else 0.0  # null_rate's line is set for its worst case, half missing
        reference_values = rng.standard_normal(2000)
        reference = NumericReference.build(reference_values, bins=10, missing=2000 if missing else 0)
        values = rng.standard_normal(100 * 500)
        if missing:
            values[rng.random(values.size) < missing] = np.nan
        found, judged = _window_alarms(reference, values, test, line, 500)
        alarms, windows = alarms + found, windows + judged
    expected = window_alpha * windows
    low = stats.chi2.ppf(0.0005, 2 * alarms) / 2 if alarms else 0.0
    high = stats.chi2.ppf(0.9995, 2 * alarms + 2) / 2
    assert low <= expected <= high, f"{test}: {alarms} false alarms in {windows} windows, expected {expected:.0f}"


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
