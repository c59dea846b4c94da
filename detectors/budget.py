"""A model's false-alarm budget, turned into the line of every detector it runs.

``FALSE_ALARM_BUDGET`` is the expected number of false alarms per model per week
at ``EVENT_RATE`` events per second. It is split evenly over the model's family of
detectors, as a false-alarm probability per value a detector judges:

    rate = budget / (event_rate x 1 week x ((columns x tests + quality) x (1 + slices) + model))

* ``columns`` is ``max_features + 1`` (the features a model may ever have, and its
  prediction): the configured bound, so a feature that appears later never moves the
  line of a running detector, and the budget holds however many appear.
* ``tests`` is the most detectors one column runs (numeric: its window tests and
  change detectors; categorical: its window tests).
* ``model`` counts the whole model's own tests (``model_tests``): with ``schema_checks``
  the two schema checks of each input feature (missing_feature, kind_change:
  ``SCHEMA_TESTS`` x ``max_features``) and new_feature, then pca_reconstruction and
  outliers, each judging at most one window of ``window_size`` events per ``window_size``
  events. They run on the whole model only, so slices do not multiply them. A config's
  explicit constraints are assertions, not tests: no share.
* Model quality from late labels adds ``QUALITY_TESTS`` (2) detectors per slice share:
  the performance test of each quality window and the concept-drift detector of the
  error stream. Labels come at most one per prediction, so each judges at most
  ``event_rate`` labeled values per second, and the versions and segment values of one
  slice split them as they split the events. They are counted whether or not the
  model's labels ever come, like features that have not appeared yet.
* Segments and versions do not multiply the family by their number of values: the
  values of one slice (``region``, or ``region`` x ``device``) split the model's events
  between them, and so do versions, so together a slice's monitors judge at most
  ``event_rate`` values per second, as the whole model's do. Each slice the model is
  cut by adds one such share (``1 + slices``).

A detector that judges at most ``event_rate`` values per second at ``rate`` false
alarms per value spends at most its share, so the family spends at most the budget.
The quality tests' lines (``quality_lines``): the performance test of a window of
``count`` labeled events gets alpha ``rate x count`` (a window closed early by
``quality_window_seconds`` gets less, so short windows never spend more per label);
the concept-drift detector's share is split between its two lines, ``0.9 rate`` for
the warning zone (a ``warning`` alert: nearly every incident begins there) and
``0.1 rate`` for the drift (``critical``), so the two together stay within the share.
Their calibrations need the reference's error rate ``p`` (``error_lines``): DDM's
fit covers ``p`` in [0.05, 0.5] and HDDM_W's [0.1, 0.5]; a ``p`` outside is clipped
into the range, so below 5% errors DDM gets the 5% line, which is *not* proven
conservative there (Bernoulli tails at small ``p`` are heavier than the fit's). HDDM_A
is not calibrated and is refused under a budget (``MonitorConfig``); ADWIN on the 0/1
error stream gets its line for normal input, not checked on 0/1 values. A regressor's
change detector judges normal scores of its absolute errors against the reference's,
so the Page-Hinkley and ADWIN calibrations hold with the reference's count as
``reference_size`` (``regression_lines``).
Each detector's line is then the stricter of its own option and the one its share
needs: a windowed test judged every ``step`` values may cross its line with
probability ``rate x step`` per window (from its null distribution); a change
detector's line is the one whose run length under no change is ``1 / rate`` values
(``detectors.calibration``). A budget of 0 turns this off: every detector keeps its
configured line.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

from detectors import calibration
from detectors.config import MonitorConfig, named

SECONDS_PER_WEEK = 7 * 24 * 3600
_NULL_ALPHAS = ("psi_alpha", "jensen_shannon_alpha", "unseen_rate_alpha", "null_rate_alpha", "out_of_range_alpha")
_SMALLER_IS_STRICTER = frozenset({"ks_alpha", "chi_square_alpha", "adwin_delta", *_NULL_ALPHAS})


QUALITY_TESTS = 2  # per slice share: the performance test and the concept-drift detector (late labels)
ERROR_WARNING_SHARE = 0.9  # of the concept-drift share, for its warning zone; the rest for its drift line


SCHEMA_TESTS = 2  # per input feature, with schema_checks: missing_feature and kind_change


def model_tests(config: MonitorConfig) -> int:
    """The whole model's own tests (not per slice): the schema checks of each input feature, new_feature,
    pca_reconstruction and outliers."""
    schema = SCHEMA_TESTS * config.max_features + 1 if config.schema_checks else 0
    return schema + int(config.pca_variance > 0) + int(config.outlier_sigma > 0)


def family_size(config: MonitorConfig, slices: int) -> int:
    """How many shares the model's budget is split into."""
    numeric = len(config.numeric_tests) + len(config.change_detectors)
    tests = max(numeric, len(config.categorical_tests), 1)
    return ((config.max_features + 1) * tests + QUALITY_TESTS) * (1 + slices) + model_tests(config)


def rate_per_value(config: MonitorConfig, slices: int) -> float | None:
    """The false-alarm probability per judged value of each detector; None when the budget is off."""
    if config.false_alarm_budget == 0:
        return None
    events = config.event_rate * SECONDS_PER_WEEK
    return config.false_alarm_budget / (events * family_size(config, slices))


def window_alpha(config: MonitorConfig, slices: int) -> float | None:
    """Per-window alpha of a test judged every ``window_size`` events at the budget's rate (None: the
    budget is off): the schema checks' and the multivariate tests' share, as a window test's."""
    rate = rate_per_value(config, slices)
    return None if rate is None else min(rate * config.window_size, 0.5)


@functools.lru_cache(maxsize=256)  # one per model config, slices and kind: every model monitor asks
def budgeted(config: MonitorConfig, slices: int, kind: str) -> MonitorConfig:
    """``config`` with each line of a ``kind`` column's detectors the stricter of its option and the budget's."""
    rate = rate_per_value(config, slices)
    if rate is None:
        return config
    return budget_lines(config, rate, kind)


def budget_lines(config: MonitorConfig, rate: float, kind: str) -> MonitorConfig:
    """The config whose lines are the stricter of its options and those that meet ``rate``."""
    stricter: dict[str, Any] = {}
    for name, line in detector_lines(config, rate, kind).items():
        option = getattr(config, name)
        if name in _NULL_ALPHAS:  # 0: no null line of its own
            stricter[name] = min(option, line) if option else line
        else:
            stricter[name] = (min if name in _SMALLER_IS_STRICTER else max)(option, line)
    return dataclasses.replace(config, **stricter)


def detector_lines(config: MonitorConfig, rate: float, kind: str) -> dict[str, float]:
    """What each calibrated detector of a ``kind`` column needs to meet ``rate`` false alarms per
    value, by option name (``kind``: numeric, or categorical for the rest).

    Windowed tests are judged every ``step`` values, so a window may cross its line with
    probability ``rate x step``: the alpha of the p-value tests, and of the distance tests'
    null lines (``detectors.nulls``, computed per window from its counts). The change
    detectors' lines come from ``detectors.calibration``, for those the config runs.
    ``wasserstein`` has no tractable null: it keeps its option.
    """
    window_alpha = min(rate * config.step, 0.5)
    lines = {name: window_alpha for name in ("ks_alpha", "chi_square_alpha", *_NULL_ALPHAS)}
    if kind == "numeric":
        # Past the calibrated range (a budget of thousands of false alarms a week) the stricter
        # rate: the options' own lines are stricter there anyway.
        change_rate = min(rate, calibration.MAX_RATE)
        if "page_hinkley" in config.change_detectors:
            lines["ph_threshold"] = named(
                {"delta": "ph_delta", "min_instances": "ph_min_instances"},
                lambda: calibration.page_hinkley_threshold(change_rate, config.ph_delta, config.ph_min_instances,
                                                           config.reference_size))  # fmt: skip
        if "adwin" in config.change_detectors:
            lines["adwin_delta"] = calibration.adwin_delta(change_rate, reference_size=config.reference_size)
    # Three significant digits, rounded the strict way: the last bits of another scipy do not
    # move a line (but at a rounding boundary).
    return {name: _three_digits(line, up=name not in _SMALLER_IS_STRICTER) for name, line in lines.items()}


def _three_digits(value: float, up: bool) -> float:
    """``value`` rounded to three significant digits, up or down.

    >>> _three_digits(118.91, up=True), _three_digits(8.2268e-09, up=False)
    (119.0, 8.22e-09)
    """
    if value <= 0:  # a line at zero (alpha 0.5 for the missing share): nothing to round
        return 0.0
    unit = 10.0 ** (math.floor(math.log10(value)) - 2)
    steps = math.ceil(value / unit - 1e-9) if up else math.floor(value / unit + 1e-9)
    return float(f"{steps * unit:.3g}")


# -- model quality from late labels -----------------------------------------------------------------


@dataclass(frozen=True)
class QualityLines:
    """The lines of a model's quality tests under its budget (``rate`` None: the budget is off)."""

    config: MonitorConfig
    rate: float | None  # false alarms per labeled value of each quality test

    def performance_alpha(self, count: int) -> float:
        """The performance test's alpha for a window of ``count`` labeled events: the stricter of
        ``performance_alpha`` and the budget's ``rate x count``."""
        option = self.config.performance_alpha
        if self.rate is None:
            return option
        return min(option, _three_digits(min(self.rate * count, 0.5), up=False))

    def error_lines(self, p: float) -> dict[str, float]:
        """Options of the classifier's error-stream detector, by name, at reference error rate ``p``."""
        if self.rate is None:
            return {}
        return error_lines(self.config, self.rate, calibrated_p(self.config.error_detector, p))

    def regression_lines(self, reference_size: int) -> dict[str, float]:
        """Options of the regressor's change detector for a reference of ``reference_size`` absolute errors."""
        if self.rate is None:
            return {}
        return regression_lines(self.config, self.rate, reference_size)


@functools.lru_cache(maxsize=256)  # one per model config and slices: every quality monitor asks
def quality_lines(config: MonitorConfig, slices: int) -> QualityLines:
    """The quality tests' lines of a model cut by ``slices`` slices (its share: ``rate_per_value``)."""
    return QualityLines(config, rate_per_value(config, slices))


def calibrated_p(detector: str, p: float) -> float:
    """The reference error rate ``p`` clipped into ``detector``'s calibrated range, to three digits
    (so the lines, and a restored detector's parameters, do not move with its last bits)."""
    low = calibration.HDDM_P_MIN if detector == "hddm_w" else calibration.DDM_P_MIN
    clipped = min(max(float(p), low), calibration.ERROR_P_MAX) if math.isfinite(p) else calibration.ERROR_P_MAX
    return float(f"{clipped:.3g}")


@functools.lru_cache(maxsize=1024)
def error_lines(config: MonitorConfig, rate: float, p: float) -> dict[str, float]:
    """What the error-stream detector needs to meet ``rate`` at error rate ``p``: each line the stricter
    of its option and the budget's (the warning zone gets ``ERROR_WARNING_SHARE`` of the rate,
    the drift the rest; the warning line never past the drift line)."""
    name = config.error_detector
    rate = min(rate, calibration.MAX_RATE)
    warning_rate, drift_rate = rate * ERROR_WARNING_SHARE, rate * (1.0 - ERROR_WARNING_SHARE)
    if name == "ddm":
        warm = config.ddm_warm_start
        drift = max(config.ddm_drift_threshold, _three_digits(calibration.ddm_threshold(drift_rate, p, warm), up=True))
        warning = max(config.ddm_warning_threshold,
                      _three_digits(calibration.ddm_threshold(warning_rate, p, warm), up=True))  # fmt: skip
        return {"ddm_drift_threshold": drift, "ddm_warning_threshold": min(warning, drift)}
    if name == "hddm_w":
        drift = min(config.hddm_w_drift_confidence,
                    _three_digits(calibration.hddm_w_confidence(drift_rate, p, config.hddm_w_lambda), up=False))
        warning = min(config.hddm_w_warning_confidence,
                      _three_digits(calibration.hddm_w_confidence(warning_rate, p, config.hddm_w_lambda), up=False))
        return {"hddm_w_drift_confidence": drift, "hddm_w_warning_confidence": max(warning, drift)}  # fmt: skip
    if name == "adwin":  # no warning zone: the whole share for its one line
        return {"adwin_delta": min(config.adwin_delta, _three_digits(calibration.adwin_delta(rate), up=False))}
    raise ValueError(f"error_detector {name} is not calibrated: it has no line for a false-alarm budget")


@functools.lru_cache(maxsize=1024)
def regression_lines(config: MonitorConfig, rate: float, reference_size: int) -> dict[str, float]:
    """What the regressor's change detector needs to meet ``rate`` on normal scores against a
    reference of ``reference_size`` absolute errors."""
    rate = min(rate, calibration.MAX_RATE)
    size = max(int(reference_size), 2)
    if config.regression_detector == "page_hinkley":
        line = named({"delta": "ph_delta", "min_instances": "ph_min_instances"},
                     lambda: calibration.page_hinkley_threshold(rate, config.ph_delta, config.ph_min_instances, size))
        return {"ph_threshold": max(config.ph_threshold, _three_digits(line, up=True))}  # fmt: skip
    delta = calibration.adwin_delta(rate, reference_size=size)
    return {"adwin_delta": min(config.adwin_delta, _three_digits(delta, up=False))}
