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
    numeric_tests: tuple[str, ...] = ("psi", "ks", "null_rate")
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
                    "max_versions", "event_rate")  # fmt: skip
        for name in ("max_segments", "false_alarm_budget"):
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
        # Build every detector once so a bad value fails here, named after its option.
        from detectors.registry import change_detectors, window_test

        for name in TESTS:
            window_test(self, name)
        change_detectors(self, CHANGE_DETECTORS)

    @property
    def step(self) -> int:
        return self.window_step or self.window_size


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
