"""Tunable parameters of a model's monitor, validated once."""

from __future__ import annotations

from dataclasses import dataclass, fields

from detectors import page_hinkley


@dataclass(frozen=True)
class MonitorConfig:
    """Every knob of the per-feature detectors and the alert policy.

    PSI lines follow the industry convention: < 0.1 stable, 0.1-0.25 moderate
    shift (warning), >= 0.25 major shift (critical).
    """

    reference_size: int = 5000  # rows of the stream taken as reference when no baseline exists
    window_size: int = 1000  # rows per tumbling window of the windowed tests
    psi_bins: int = 10
    psi_warning: float = 0.1
    psi_critical: float = 0.25
    max_categories: int = 50  # reference categories kept; the rest share one bucket
    adwin_delta: float = 0.002
    ph_delta: float = page_hinkley.DEFAULT_DELTA
    ph_threshold: float = page_hinkley.DEFAULT_THRESHOLD
    ph_alpha: float = page_hinkley.DEFAULT_ALPHA
    ph_min_instances: int = page_hinkley.DEFAULT_MIN_INSTANCES
    null_rate_warning: float = 0.1  # rise of the missing share over the reference's
    null_rate_critical: float = 0.3
    change_critical_sigma: float = 1.0  # a change-point shift this large (in reference std) is critical
    resolve_after: int = 5000  # rows without a new change point before its alert resolves
    max_features: int = 200  # per model; further features are ignored and counted

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ValueError(f"{field.name} must be a number, got {value!r}")
        positive = (
            "reference_size", "window_size", "max_categories", "ph_threshold",
            "ph_min_instances", "resolve_after", "max_features",
            "psi_warning", "null_rate_warning", "change_critical_sigma",
        )  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.psi_bins < 2:
            raise ValueError(f"psi_bins must be >= 2, got {self.psi_bins!r}")
        if self.psi_critical < self.psi_warning:
            raise ValueError("psi_critical must be >= psi_warning")
        if self.null_rate_critical < self.null_rate_warning:
            raise ValueError("null_rate_critical must be >= null_rate_warning")
        if not 0 < self.adwin_delta < 1:
            raise ValueError(f"adwin_delta must be in (0, 1), got {self.adwin_delta!r}")
        if not 0 < self.ph_alpha <= 1:
            raise ValueError(f"ph_alpha must be in (0, 1], got {self.ph_alpha!r}")
        if self.ph_delta < 0:
            raise ValueError(f"ph_delta must be >= 0, got {self.ph_delta!r}")
