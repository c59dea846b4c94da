"""Tunable parameters of a model's monitor, validated once.

The defaults come from the detection benchmark (``bench/detection.py``; why
each was chosen: docs/detection.md, the tables: docs/detection-table.md and
docs/detection-sweeps.md): each default raised no more than 1 false alarm per
10^6 stable events there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from detectors import streaming
from detectors.reference import EXACT_LIMIT
from detectors.two_sample import TESTS

CHANGE_DETECTORS = ("adwin", "page_hinkley")
ERROR_DETECTORS = ("ddm", "hddm_w", "hddm_a", "adwin")  # on a classifier's 0/1 error stream
REGRESSION_DETECTORS = ("page_hinkley", "adwin")  # on normal scores of a regressor's absolute errors
MULTIPLE_TESTING = ("none", "bonferroni", "benjamini_hochberg")
MAX_REFERENCE_SIZE = EXACT_LIMIT


@dataclass(frozen=True)
class MonitorConfig:
    """Every knob of the per-feature detectors and the alert policy.

    PSI lines follow the industry convention: < 0.1 stable, 0.1-0.25 moderate
    shift (warning), >= 0.25 major shift (critical).
    """

    reference_size: int = 5000  # rows of the stream taken as reference when no baseline exists
    window_size: int = 1000  # rows per window of the windowed tests
    window_step: int = 0  # rows between evaluations; 0 = window_size (tumbling windows)
    numeric_tests: tuple[str, ...] = ("psi", "ks", "null_rate", "out_of_range")
    categorical_tests: tuple[str, ...] = ("psi", "chi_square", "unseen_rate", "null_rate")
    change_detectors: tuple[str, ...] = CHANGE_DETECTORS  # on numeric features, over z-scores
    multiple_testing: str = "none"  # over a model's features: none | bonferroni | benjamini_hochberg
    psi_bins: int = 10
    psi_warning: float = 0.1
    psi_critical: float = 0.25
    ks_alpha: float = 1e-4
    ks_critical_effect: float = 0.2  # KS D from which a significant window is critical
    chi_square_alpha: float = 1e-4
    chi_square_critical_effect: float = 0.2  # Cramér's V from which a significant window is critical
    wasserstein_warning: float = 0.15  # in reference standard deviations
    wasserstein_critical: float = 0.5
    jensen_shannon_warning: float = 0.1
    jensen_shannon_critical: float = 0.2
    unseen_rate_warning: float = 0.05
    unseen_rate_critical: float = 0.2
    null_rate_warning: float = 0.1  # rise of the missing share over the reference's
    null_rate_critical: float = 0.3
    # Per-window alpha of the distance tests' null lines (detectors/nulls.py); 0: their options
    # alone. The false-alarm budget sets them.
    psi_alpha: float = 0.0
    jensen_shannon_alpha: float = 0.0
    unseen_rate_alpha: float = 0.0
    null_rate_alpha: float = 0.0
    max_categories: int = 50  # reference categories kept; the rest share one bucket
    reference_points: int = 512  # points of a numeric reference summary (rank error <= 1/512)
    category_map_size: int = 10  # log2 slots of the categorical reference's frequent-items sketch
    adwin_delta: float = streaming.ADWIN_DELTA
    ph_delta: float = streaming.PH_DELTA
    ph_threshold: float = streaming.PH_THRESHOLD
    ph_alpha: float = 1.0
    ph_min_instances: int = 30
    change_critical_sigma: float = 1.0  # a change-point shift this large (in reference std) is critical
    resolve_after: int = 5000  # rows without a new change point before its alert resolves
    max_features: int = 200  # per model; further features are ignored and counted
    max_versions: int = 3  # live model versions per model; the least recently seen is retired
    max_segments: int = 20  # segment values tracked per model (first seen first); the rest count as "other"
    # Expected false alarms per model per week, split over every detector the model may run
    # (detectors/budget.py); each line is the stricter of its option and the budget's. 0: off.
    false_alarm_budget: float = 1.0
    event_rate: float = 1000.0  # events per second per model that the budget assumes
    alert_per_detector: bool = False  # one alert per detector instead of one incident per feature
    # -- model quality from late labels (detectors/monitors/quality.py) --
    quality_window: int = 1000  # labeled events per quality window (per version and scope)
    quality_window_seconds: float = 0.0  # > 0: a window also closes once its predictions span this much event time
    quality_reference_windows: int = 1  # windows a reference is built from when neither a baseline nor config gives one
    max_classes: int = 20  # classes tracked per version (first seen first); the rest count as "other"
    performance_alpha: float = 1e-4  # per window of the performance test; the budget's share per window if stricter
    performance_critical_drop: float = 0.05  # accuracy drop (absolute) from which a performance alert is critical
    performance_critical_rise: float = 0.25  # MAE rise (relative to the reference's) from which it is critical
    error_detector: str = "ddm"  # concept drift on a classifier's 0/1 errors: ddm | hddm_w | hddm_a | adwin
    regression_detector: str = "page_hinkley"  # on normal scores of a regressor's absolute errors: page_hinkley | adwin
    ddm_warm_start: int = streaming.DDM_WARM_START
    ddm_warning_threshold: float = 2.0
    ddm_drift_threshold: float = streaming.DDM_DRIFT_THRESHOLD
    hddm_w_drift_confidence: float = 0.001
    hddm_w_warning_confidence: float = 0.005
    hddm_w_lambda: float = streaming.HDDM_W_LAMBDA
    hddm_a_drift_confidence: float = 0.001
    hddm_a_warning_confidence: float = 0.005
    label_lag_max: float = 0.0  # seconds; a window whose median label lag exceeds it raises data_quality. 0: off
    label_coverage_min: float = 0.0  # share of predictions labeled; below it at a window close: data_quality. 0: off
    # -- dataset drift (detectors/monitors/dataset.py): a model-level data_drift alert --
    dataset_drift_features: int = 2  # input features in critical data drift at once; 0: off
    dataset_drift_events: int = 1000  # events they must have been so before it fires
    # -- the inputs' schema (detectors/monitors/schema.py): per model, tumbling windows of window_size events --
    schema_checks: bool = True  # missing_feature, new_feature, kind_change and the config's constraints
    missing_feature_share: float = 0.5  # rise of a reference feature's absent-or-null share over the reference's
    new_feature_share: float = 0.5  # share of a window's events carrying a feature the reference never had
    kind_change_share: float = 0.05  # share of a feature's present values of another kind than the reference's
    # -- out_of_range (a numeric window test): values outside the reference's range --
    out_of_range_quantile: float = 0.001  # the range: the reference's quantiles at this level and at 1 - it
    out_of_range_margin: float = 0.1  # ... widened on each side by this share of the span between them
    out_of_range_warning: float = 0.01  # share of a window's values outside the range from which it warns
    out_of_range_critical: float = 0.1
    out_of_range_alpha: float = 0.0  # per-window alpha of its null line (0: off; the budget sets it)
    # -- multivariate (detectors/monitors/multivariate.py): over a model's numeric features, whole model only --
    pca_variance: float = 0.65  # share of variance the kept components explain (NannyML's default); 0: off
    pca_alpha: float = 1e-4  # per window, two-sided; the budget's share per window if stricter
    pca_critical_change: float = 0.25  # relative change of the mean reconstruction error from which it is critical
    outlier_sigma: float = 6.0  # an event is an outlier when a numeric feature lies this many reference std out; 0: off
    outlier_warning: float = 0.01  # share of a window's events that are outliers from which it warns
    outlier_critical: float = 0.1
    outlier_alpha: float = 1e-4  # per window, against the outlier share the reference itself showed
    # -- freshness (detectors/monitors/freshness.py) --
    stale_after: float = 600.0  # seconds without an event of a model that has been sending: data_quality; 0: off

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, tuple):
                if not all(isinstance(item, str) for item in value):
                    raise ValueError(f"{field.name} must be a list of names, got {value!r}")
            elif isinstance(field.default, str):
                if not isinstance(value, str):
                    raise ValueError(f"{field.name} must be a name, got {value!r}")
            elif isinstance(field.default, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{field.name} must be true or false, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ValueError(f"{field.name} must be a number, got {value!r}")
            elif not math.isfinite(value):
                raise ValueError(f"{field.name} must be finite, got {value!r}")
        positive = ("reference_size", "max_categories", "resolve_after", "max_features", "change_critical_sigma",
                    "max_versions", "event_rate", "quality_reference_windows", "performance_critical_drop",
                    "performance_critical_rise")  # fmt: skip
        for name in ("quality_window", "quality_reference_windows", "max_classes", "ddm_warm_start",
                     "dataset_drift_features", "dataset_drift_events"):
            if not isinstance(getattr(self, name), int):
                raise ValueError(f"{name} must be a whole number, got {getattr(self, name)!r}")
        for name in ("max_segments", "false_alarm_budget", "quality_window_seconds", "label_lag_max",
                     "dataset_drift_features", "dataset_drift_events", "pca_variance", "outlier_sigma",
                     "stale_after", "out_of_range_margin"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("window_size", "reference_points"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be >= 2, got {getattr(self, name)!r}")
        if self.reference_size > MAX_REFERENCE_SIZE:
            raise ValueError(f"reference_size must be <= {MAX_REFERENCE_SIZE} (the stream's reference rows are "
                             f"held until it is built; load a larger baseline instead), got {self.reference_size}")
        if not 3 <= self.category_map_size <= 16:
            raise ValueError(f"category_map_size must be in [3, 16], got {self.category_map_size!r}")
        if not 0 <= self.window_step <= self.window_size:
            raise ValueError(f"window_step must be in [0, window_size], got {self.window_step!r}")
        for name in ("missing_feature_share", "new_feature_share", "kind_change_share", "outlier_warning",
                     "outlier_critical"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)!r}")
        if self.outlier_critical < self.outlier_warning:
            raise ValueError(f"outlier_critical must be >= outlier_warning ({self.outlier_warning}), "
                             f"got {self.outlier_critical!r}")
        if not 0 <= self.out_of_range_quantile < 0.5:
            raise ValueError(f"out_of_range_quantile must be in [0, 0.5), got {self.out_of_range_quantile!r}")
        if self.pca_variance > 1:
            raise ValueError(f"pca_variance must be in [0, 1], got {self.pca_variance!r}")
        for name in ("pca_alpha", "outlier_alpha"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)!r}")
        if self.pca_critical_change <= 0:
            raise ValueError(f"pca_critical_change must be > 0, got {self.pca_critical_change!r}")
        if self.psi_bins < 2:
            raise ValueError(f"psi_bins must be >= 2, got {self.psi_bins!r}")
        if self.multiple_testing not in MULTIPLE_TESTING:
            raise ValueError(f"multiple_testing must be one of {', '.join(MULTIPLE_TESTING)}, "
                             f"got {self.multiple_testing!r}")  # fmt: skip
        for option, kind in (("numeric_tests", "numeric"), ("categorical_tests", "categorical")):
            for name in getattr(self, option):
                if name not in TESTS or kind not in TESTS[name].kinds:
                    usable = sorted(n for n, t in TESTS.items() if kind in t.kinds)
                    raise ValueError(f"{option}: {name!r} is not one of {', '.join(usable)}")
        for name in self.change_detectors:
            if name not in CHANGE_DETECTORS:
                raise ValueError(f"change_detectors: {name!r} is not one of {', '.join(CHANGE_DETECTORS)}")
        if self.false_alarm_budget and self.ph_alpha != 1 and "page_hinkley" in self.change_detectors:
            raise ValueError(f"ph_alpha must be 1 under a false-alarm budget (a forgetting Page-Hinkley's run "
                             f"length is not calibrated), got {self.ph_alpha!r}; or set false_alarm_budget = 0")
        self._check_quality()
        # Build every detector once so a bad value fails here, named after its option.
        from detectors.registry import change_detectors, window_test

        for name in TESTS:
            window_test(self, name)
        change_detectors(self, CHANGE_DETECTORS)

    def _check_quality(self) -> None:
        """The quality options (model quality from late labels), each error named after its option."""
        if self.quality_window < 2:
            raise ValueError(f"quality_window must be >= 2, got {self.quality_window!r}")
        if self.max_classes < 2:
            raise ValueError(f"max_classes must be >= 2, got {self.max_classes!r}")
        if not 0 < self.performance_alpha < 1:
            raise ValueError(f"performance_alpha must be in (0, 1), got {self.performance_alpha!r}")
        if self.performance_critical_drop > 1:
            raise ValueError(f"performance_critical_drop must be in (0, 1], got {self.performance_critical_drop!r}")
        if not 0 <= self.label_coverage_min <= 1:
            raise ValueError(f"label_coverage_min must be in [0, 1], got {self.label_coverage_min!r}")
        if self.error_detector not in ERROR_DETECTORS:
            raise ValueError(f"error_detector: {self.error_detector!r} is not one of {', '.join(ERROR_DETECTORS)}")
        if self.regression_detector not in REGRESSION_DETECTORS:
            raise ValueError(f"regression_detector: {self.regression_detector!r} is not one of "
                             f"{', '.join(REGRESSION_DETECTORS)}")  # fmt: skip
        if self.false_alarm_budget:
            if self.error_detector == "hddm_a":
                raise ValueError("error_detector hddm_a is not calibrated, so it cannot be held to a false-alarm "
                                 "budget (detectors/calibration.py): use ddm or hddm_w, or set false_alarm_budget = 0")
            if self.error_detector == "hddm_w" and self.hddm_w_lambda != streaming.HDDM_W_LAMBDA:
                raise ValueError(f"hddm_w_lambda must be {streaming.HDDM_W_LAMBDA} under a false-alarm budget (the "
                                 f"only calibrated value), got {self.hddm_w_lambda!r}; or set false_alarm_budget = 0")
            if self.error_detector == "ddm" and not 100 <= self.ddm_warm_start <= 100_000:
                raise ValueError(f"ddm_warm_start must be in [100, 100000] under a false-alarm budget (the "
                                 f"calibrated range), got {self.ddm_warm_start!r}; or set false_alarm_budget = 0")
            if self.regression_detector == "page_hinkley" and self.ph_alpha != 1:
                raise ValueError(f"ph_alpha must be 1 under a false-alarm budget (regression_detector is "
                                 f"page_hinkley; a forgetting Page-Hinkley's run length is not calibrated), got "
                                 f"{self.ph_alpha!r}; or set false_alarm_budget = 0")
        for name in ERROR_DETECTORS:
            quality_detector(self, name, regression=False)
        for name in REGRESSION_DETECTORS:
            quality_detector(self, name, regression=True)

    @property
    def step(self) -> int:
        return self.window_step or self.window_size


# Quality detectors' parameters by the option each is read from (the budget may replace an option's value).
ERROR_OPTIONS: dict[str, dict[str, str]] = {
    "ddm": {"warm_start": "ddm_warm_start", "warning_threshold": "ddm_warning_threshold",
            "drift_threshold": "ddm_drift_threshold"},
    "hddm_w": {"drift_confidence": "hddm_w_drift_confidence", "warning_confidence": "hddm_w_warning_confidence",
               "lambda_val": "hddm_w_lambda"},
    "hddm_a": {"drift_confidence": "hddm_a_drift_confidence", "warning_confidence": "hddm_a_warning_confidence"},
    "adwin": {"delta": "adwin_delta"},
}  # fmt: skip
REGRESSION_OPTIONS: dict[str, dict[str, str]] = {
    "page_hinkley": {"delta": "ph_delta", "threshold": "ph_threshold", "alpha": "ph_alpha",
                     "min_instances": "ph_min_instances"},
    "adwin": {"delta": "adwin_delta"},
}  # fmt: skip
_QUALITY_CLASSES: dict[str, Any] = {
    "ddm": streaming.DDMDetector, "hddm_w": streaming.HDDMWDetector, "hddm_a": streaming.HDDMADetector,
    "adwin": streaming.AdwinDetector, "page_hinkley": streaming.PageHinkleyDetector,
}  # fmt: skip


def quality_detector(config: MonitorConfig, name: str, *, regression: bool,
                     lines: dict[str, float] | None = None) -> Any:  # fmt: skip
    """The concept-drift detector ``name`` of a classifier's error stream (or, ``regression``, of a
    regressor's absolute errors), its parameters read from their options unless ``lines`` (by
    option name) replaces them. A ValueError names the option."""
    options = (REGRESSION_OPTIONS if regression else ERROR_OPTIONS)[name]
    values = {option: (lines or {}).get(option, getattr(config, option)) for option in options.values()}
    cls = _QUALITY_CLASSES[name]
    return named(options, lambda: cls(**{param: values[option] for param, option in options.items()}))


def named(options: dict[str, str], build: Any) -> Any:
    """Build a detector; a ValueError names the config option rather than the parameter."""
    try:
        return build()
    except ValueError as exc:
        message = str(exc)
        for param, option in options.items():
            if message.startswith(f"{param} "):
                raise ValueError(f"{option}{message[len(param):]}") from None
        raise
