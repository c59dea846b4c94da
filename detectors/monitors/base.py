"""The contract every monitor keeps, and what monitors exchange.

A monitor watches one subject (a feature, or a model version's prediction)
within one scope (the whole model, or one tracked segment value). It is fed
the rows of a batch that belong to its scope, reports change-point alerts and
statistics at once, and hands the windows it completed back to its model,
which corrects their p-values for the family of tests judged together before
the monitor judges them. Its state round-trips through ``snapshot()`` as
versioned plain data, and its class rebuilds it with ``restore``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from detectors.base import Severity
from detectors.columns import Column
from detectors.policy import Status
from detectors.window import Evaluation

#: Internal column name of the model's prediction, monitored like a feature.
PREDICTION = "__prediction__"


@dataclass(frozen=True)
class Alert:
    """One alert decision, before it is dressed for the wire."""

    type: str  # data_drift | prediction_drift | data_quality | performance | concept_drift
    status: Status
    severity: Severity
    feature: str | None  # None for the prediction and for model quality
    detector: str
    statistic: float
    threshold: float
    p_value: float | None
    event_index: int  # the model's event that completed the verdict (0-based)
    window_count: int
    window_start: float  # event time, Unix seconds
    window_end: float
    reference: dict[str, Any]
    current: dict[str, Any]
    message: str
    version: str | None = None  # the model version a prediction monitor watches
    segment: dict[str, str] | None = None  # the tracked segment value; None for the whole model
    # Every detector the alert speaks for (sorted): of a firing incident those firing now, of a
    # resolved one those that fired during it; with alert_per_detector, (detector,).
    detectors: tuple[str, ...] = ()


@dataclass
class Rows:
    """The rows of one batch that one scope monitors, as typed columns."""

    features: dict[str, Column]
    prediction: Column | None
    event_index: np.ndarray  # the model's index of each row (0-based, over its whole stream)
    timestamps: np.ndarray  # event time of each row, Unix seconds

    def take(self, rows: np.ndarray) -> Rows:
        return Rows(
            {name: column.take(rows) for name, column in self.features.items()},
            None if self.prediction is None else self.prediction.take(rows),
            self.event_index[rows],
            self.timestamps[rows],
        )


@dataclass
class Observation:
    alerts: list[Alert] = field(default_factory=list)
    # (version, segment key, feature or None for the prediction, detector) -> latest statistic
    statistics: dict[tuple[str | None, str, str | None, str], float] = field(default_factory=dict)
    # the same keys -> the line each statistic is judged against (where the detector has one)
    lines: dict[tuple[str | None, str, str | None, str], float] = field(default_factory=dict)
    invalid_values: int = 0
    ignored_features: int = 0
    windows_judged: int = 0
    segment_events: dict[str, int] = field(default_factory=dict)  # segment key ("other" too) -> events
    retired_versions: list[str | None] = field(default_factory=list)
    # (version, segment key, metric) -> its value over the quality window just closed (late labels:
    # accuracy, mae, ..., label_lag_p50, label_lag_p95, coverage)
    quality: dict[tuple[str | None, str, str], float] = field(default_factory=dict)

    @property
    def versions_retired(self) -> int:
        return len(self.retired_versions)

    def merge(self, later: Observation) -> Observation:
        """This observation followed by a later one of the same model."""
        self.alerts += later.alerts
        self.statistics.update(later.statistics)
        self.lines.update(later.lines)
        self.invalid_values += later.invalid_values
        self.ignored_features += later.ignored_features
        self.windows_judged += later.windows_judged
        for key, count in later.segment_events.items():
            self.segment_events[key] = self.segment_events.get(key, 0) + count
        self.retired_versions += later.retired_versions
        self.quality.update(later.quality)
        return self


@dataclass
class Judged:
    """A window one monitor completed, waiting for the model-wide p-value correction."""

    monitor: Monitor
    evaluation: Evaluation
    index: int  # event index that closed it
    at: float  # its event time
    alphas: dict[str, float] = field(default_factory=dict)  # test -> alpha after the correction
    family: int = 1  # how many p-values the correction spanned


class Monitor(Protocol):
    """What a model asks of each of its monitors."""

    name: str

    def observe(self, rows: Rows, out: Observation) -> list[Judged]:
        """Feed the scope's rows; report change points in ``out``; return the windows completed."""
        ...

    def judge(self, item: Judged, out: Observation) -> None:
        """Alerts and statistics of a completed window, once its alphas are corrected."""
        ...

    def snapshot(self) -> dict[str, Any]: ...
