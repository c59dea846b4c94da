"""Per-model monitoring: reference building, detectors and the alert policy.

``ModelMonitor.observe`` takes the columns of one batch of a model's events
and returns the alerts that batch caused plus the latest statistic of every
(feature, detector). All state round-trips through ``snapshot()``/``restore()``
as versioned plain data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from detectors import SnapshotError
from detectors.adwin import AdwinDetector
from detectors.base import ChangePoint
from detectors.columns import FeatureKind, infer_kind, to_boolean, to_categorical, to_numeric
from detectors.config import MonitorConfig
from detectors.page_hinkley import PageHinkleyDetector
from detectors.reference import (
    CategoricalReference,
    NumericReference,
    Reference,
    categorical_summary,
    numeric_summary,
    psi,
    reference_from_plain,
)

SNAPSHOT_VERSION = 1

#: Internal column name of the model's prediction, monitored like a feature.
PREDICTION = "__prediction__"

Severity = Literal["warning", "critical"]
Status = Literal["firing", "resolved"]
CHANGE_DETECTORS = ("adwin", "page_hinkley")
_MIN_SHIFT_ROWS = 50
WINDOW_DETECTORS = ("psi", "null_rate")


@dataclass(frozen=True)
class Alert:
    """One alert decision, before it is dressed for the wire."""

    type: str  # data_drift | prediction_drift | data_quality
    status: Status
    severity: Severity
    feature: str | None  # None for the prediction
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


@dataclass
class ModelBatch:
    """One batch of a model's events as columns (lists aligned by row)."""

    columns: dict[str, list[Any]]
    timestamps: np.ndarray  # event time of each row, Unix seconds
    model_version: str | None = None  # of the last event


@dataclass
class Observation:
    alerts: list[Alert] = field(default_factory=list)
    statistics: dict[tuple[str | None, str], float] = field(default_factory=dict)
    invalid_values: int = 0
    ignored_features: int = 0


@dataclass
class _AlertState:
    severity: Severity | None = None  # None: not firing
    last_change: int = -1  # event index of the last change point (change detectors)


def _describe(feature: str | None) -> str:
    return "the prediction" if feature is None else f"feature {feature!r}"


def _alert_type(feature: str | None, detector: str) -> str:
    if detector == "null_rate":
        return "data_quality"
    return "prediction_drift" if feature is None else "data_drift"


class FeatureMonitor:
    """Reference, windowed tests, change detectors and alert state of one feature."""

    def __init__(
        self,
        name: str,
        kind: FeatureKind,
        config: MonitorConfig,
        reference: Reference | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.config = config
        self.rows_seen = 0
        self.reference: Reference | None = None
        self.adwin: AdwinDetector | None = None
        self.page_hinkley: PageHinkleyDetector | None = None
        self._builder_values: list[float] = []  # numeric reference being built
        self._builder_counts: Counter[str] = Counter()  # categorical reference being built
        self._builder_missing = 0
        self._window_numeric = np.full(config.window_size, np.nan)
        self._window_labels: list[str | None] = []
        self._window_fill = 0
        self._window_start = 0.0
        self._alerts: dict[str, _AlertState] = {}
        if reference is not None:
            self._use_reference(reference)

    # -- reference -------------------------------------------------------

    @property
    def reference_rows(self) -> int:
        return len(self._builder_values) + sum(self._builder_counts.values()) + self._builder_missing

    def _use_reference(self, reference: Reference) -> None:
        expected = NumericReference if self.kind == "numeric" else CategoricalReference
        if not isinstance(reference, expected):
            raise ValueError(f"feature {self.name!r} is {self.kind} but its reference is not")
        self.reference = reference
        self._builder_values, self._builder_counts, self._builder_missing = [], Counter(), 0
        if self.kind == "numeric":
            self.adwin = AdwinDetector(delta=self.config.adwin_delta)
            self.page_hinkley = PageHinkleyDetector(
                self.config.ph_delta,
                self.config.ph_threshold,
                self.config.ph_alpha,
                self.config.ph_min_instances,
            )

    def _feed_reference(self, values: np.ndarray | list[str | None]) -> None:
        if isinstance(values, np.ndarray):
            present = values[~np.isnan(values)]
            self._builder_values.extend(present.tolist())
            self._builder_missing += int(values.size - present.size)
        else:
            for value in values:
                if value is None:
                    self._builder_missing += 1
                else:
                    self._builder_counts[value] += 1
        if self.reference_rows < self.config.reference_size:
            return
        if self.kind == "numeric":
            if not self._builder_values:  # all missing: keep waiting for values
                return
            self._use_reference(
                NumericReference.build(
                    np.asarray(self._builder_values), self.config.psi_bins, self._builder_missing
                )
            )
        elif self._builder_counts:
            self._use_reference(
                CategoricalReference.from_counts(
                    self._builder_counts, self._builder_missing, self.config.max_categories
                )
            )

    # -- the stream --------------------------------------------------------

    def convert(self, raw: Sequence[Any]) -> tuple[np.ndarray | list[str | None], int]:
        if self.kind == "numeric":
            return to_numeric(raw)
        if self.kind == "boolean":
            return to_boolean(raw)
        return to_categorical(raw)

    def update(
        self,
        values: np.ndarray | list[str | None],
        event_index: np.ndarray,
        timestamps: np.ndarray,
        out: Observation,
    ) -> None:
        """Feed one batch of converted values (aligned with event_index and timestamps)."""
        n = len(values)
        start = 0
        if self.reference is None:
            needed = max(1, self.config.reference_size - self.reference_rows)
            start = min(n, needed)
            self._feed_reference(values[:start])
        while start < n and self.reference is not None:
            if self._window_fill == 0:
                self._window_start = float(timestamps[start])
            stop = min(n, start + self.config.window_size - self._window_fill)
            self._segment(values[start:stop], event_index[start:stop], timestamps[start:stop], out)
            start = stop
        self.rows_seen += n

    def _segment(
        self,
        values: np.ndarray | list[str | None],
        event_index: np.ndarray,
        timestamps: np.ndarray,
        out: Observation,
    ) -> None:
        fill = self._window_fill
        self._window_fill = fill + len(values)
        if isinstance(values, np.ndarray):
            self._window_numeric[fill : self._window_fill] = values
            self._change_points(values, fill, event_index, timestamps, out)
        else:
            self._window_labels.extend(values)
        if self._window_fill >= self.config.window_size:
            self._close_window(int(event_index[-1]), float(timestamps[-1]), out)

    def _change_points(
        self, values: np.ndarray, fill: int, event_index: np.ndarray, timestamps: np.ndarray, out: Observation
    ) -> None:
        assert isinstance(self.reference, NumericReference) and self.adwin and self.page_hinkley
        present = np.flatnonzero(~np.isnan(values))
        if present.size == 0:
            return
        z = (values[present] - self.reference.mean) / self.reference.std
        for detector in (self.adwin, self.page_hinkley):
            for point in detector.update(z):
                row = int(present[point.position])
                self._on_change(detector.name, point, fill + row + 1, int(event_index[row]),
                                float(timestamps[row]), out)  # fmt: skip
        out.statistics[(self.name, "adwin")] = abs(self._window_mean_shift(self._window_fill))

    def _window_mean_shift(self, upto: int) -> float:
        """Mean of the window's first ``upto`` rows, in reference std from the reference mean."""
        assert isinstance(self.reference, NumericReference)
        window = self._window_numeric[:upto]
        window = window[~np.isnan(window)]
        return float((window.mean() - self.reference.mean) / self.reference.std) if window.size else 0.0

    def _on_change(
        self, detector: str, point: ChangePoint, upto: int, index: int, at: float, out: Observation
    ) -> None:
        state = self._alerts.setdefault(detector, _AlertState())
        state.last_change = index
        # The window up to the triggering row (so batching cannot change it) when it holds
        # enough values to say; else the detector's own estimate.
        shift = self._window_mean_shift(upto) if upto >= _MIN_SHIFT_ROWS else point.shift
        severity: Severity = (
            "critical" if abs(shift) >= self.config.change_critical_sigma else "warning"
        )
        if state.severity == severity or state.severity == "critical":
            return
        state.severity = severity
        direction = "up" if shift >= 0 else "down"
        message = (
            f"{detector} detected a change in the mean of {_describe(self.name_or_none)}: "
            f"the current window is {abs(shift):.2f} reference std {direction} "
            f"from the reference mean"
        )
        out.alerts.append(
            self._alert("firing", severity, detector, point.statistic, point.threshold, index, at, message)
        )

    def _close_window(self, index: int, at: float, out: Observation) -> None:
        reference = self.reference
        assert reference is not None
        if isinstance(reference, NumericReference):
            window = self._window_numeric[: self._window_fill]
            present = window[~np.isnan(window)]
            counts = reference.bin_counts(present)
            missing = int(window.size - present.size)
        else:
            labels = [v for v in self._window_labels if v is not None]
            counts = reference.bucket_counts(labels)
            missing = len(self._window_labels) - len(labels)
        current = self._current_summary()
        psi_value = psi(reference.proportions, counts) if counts.sum() else 0.0
        null_rise = missing / self._window_fill - float(reference.summary.get("null_rate", 0.0))
        out.statistics[(self.name, "psi")] = psi_value
        out.statistics[(self.name, "null_rate")] = null_rise
        self._judge_window("psi", psi_value, self.config.psi_warning, self.config.psi_critical, index, at, current, out)
        self._judge_window(
            "null_rate", null_rise, self.config.null_rate_warning, self.config.null_rate_critical,
            index, at, current, out,
        )  # fmt: skip
        for detector in CHANGE_DETECTORS:
            state = self._alerts.get(detector)
            if state and state.severity and index - state.last_change >= self.config.resolve_after:
                message = (
                    f"{detector} on {_describe(self.name_or_none)}: no further change in "
                    f"{self.config.resolve_after} events; the detector has adapted"
                )
                out.alerts.append(
                    self._alert("resolved", state.severity, detector, 0.0, 0.0, index, at, message, current)
                )
                state.severity = None
        self._window_fill = 0
        self._window_labels = []
        self._window_numeric.fill(np.nan)

    def _judge_window(
        self,
        detector: str,
        value: float,
        warning: float,
        critical: float,
        index: int,
        at: float,
        current: dict[str, Any],
        out: Observation,
    ) -> None:
        state = self._alerts.setdefault(detector, _AlertState())
        what = "PSI" if detector == "psi" else "missing-value rate rise"
        subject = _describe(self.name_or_none)
        if value >= warning:
            severity: Severity = "critical" if value >= critical else "warning"
            if state.severity == severity or state.severity == "critical":
                return
            state.severity = severity
            line = critical if severity == "critical" else warning
            message = (
                f"{what} of {subject} is {value:.3f} over the last {self._window_fill} events "
                f"(>= {line:g}, {severity})"
            )
            out.alerts.append(self._alert("firing", severity, detector, value, line, index, at, message, current))
        elif state.severity is not None:
            message = f"{what} of {subject} is back to {value:.3f} (< {warning:g})"
            out.alerts.append(
                self._alert("resolved", state.severity, detector, value, warning, index, at, message, current)
            )
            state.severity = None

    @property
    def name_or_none(self) -> str | None:
        return None if self.name == PREDICTION else self.name

    def _current_summary(self) -> dict[str, Any]:
        if self.kind == "numeric":
            window = self._window_numeric[: self._window_fill]
            present = window[~np.isnan(window)]
            return numeric_summary(present, int(window.size - present.size))
        labels = Counter(v for v in self._window_labels if v is not None)
        return categorical_summary(labels, len(self._window_labels) - sum(labels.values()))

    def _alert(
        self,
        status: Status,
        severity: Severity,
        detector: str,
        statistic: float,
        threshold: float,
        index: int,
        at: float,
        message: str,
        current: dict[str, Any] | None = None,
    ) -> Alert:
        assert self.reference is not None
        return Alert(
            type=_alert_type(self.name_or_none, detector),
            status=status,
            severity=severity,
            feature=self.name_or_none,
            detector=detector,
            statistic=float(statistic),
            threshold=float(threshold),
            p_value=None,
            event_index=index,
            window_count=self._window_fill,
            window_start=self._window_start,
            window_end=at,
            reference=self.reference.summary,
            current=current if current is not None else self._current_summary(),
            message=message,
        )

    # -- snapshots ---------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        fill = self._window_fill
        return {
            "kind": self.kind,
            "rows": self.rows_seen,
            "reference": self.reference.to_plain() if self.reference else None,
            "builder": {
                "values": np.asarray(self._builder_values, dtype="<f8").tobytes(),
                "counts": dict(self._builder_counts),
                "missing": self._builder_missing,
            },
            "window": {
                "numeric": self._window_numeric[:fill].astype("<f8").tobytes() if self.kind == "numeric" else b"",
                "labels": self._window_labels,
                "fill": fill,
                "start": self._window_start,
            },
            "adwin": self.adwin.snapshot() if self.adwin else None,
            "page_hinkley": self.page_hinkley.snapshot() if self.page_hinkley else None,
            "alerts": {
                name: [state.severity, state.last_change] for name, state in self._alerts.items()
            },
        }

    @classmethod
    def restore(cls, name: str, data: dict[str, Any], config: MonitorConfig) -> FeatureMonitor:
        monitor = cls(name, data["kind"], config)
        if data["reference"] is not None:
            monitor._use_reference(reference_from_plain(data["reference"]))
        builder = data["builder"]
        monitor._builder_values = np.frombuffer(builder["values"], dtype="<f8").tolist()
        monitor._builder_counts = Counter(builder["counts"])
        monitor._builder_missing = int(builder["missing"])
        window = data["window"]
        fill = min(int(window["fill"]), config.window_size)
        monitor._window_fill = fill
        monitor._window_start = float(window["start"])
        if monitor.kind == "numeric":
            monitor._window_numeric[:fill] = np.frombuffer(window["numeric"], dtype="<f8")[:fill]
        else:
            monitor._window_labels = list(window["labels"])[:fill]
        if data["adwin"] is not None:
            monitor.adwin = AdwinDetector.restore(data["adwin"])
        if data["page_hinkley"] is not None:
            monitor.page_hinkley = PageHinkleyDetector.restore(data["page_hinkley"])
        monitor._alerts = {
            detector: _AlertState(severity, int(last)) for detector, (severity, last) in data["alerts"].items()
        }
        monitor.rows_seen = int(data["rows"])
        return monitor


class ModelMonitor:
    """All feature monitors of one model (within one partition)."""

    def __init__(
        self,
        model: str,
        config: MonitorConfig,
        kinds: dict[str, FeatureKind] | None = None,
        baseline: dict[str, Reference] | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.kinds = dict(kinds or {})
        self.baseline = dict(baseline or {})
        self.features: dict[str, FeatureMonitor] = {}
        self.events_seen = 0
        self.model_version: str | None = None

    def observe(self, batch: ModelBatch) -> Observation:
        out = Observation()
        n = len(batch.timestamps)
        if n == 0:
            return out
        event_index = np.arange(self.events_seen, self.events_seen + n)
        for name, raw in batch.columns.items():
            monitor = self.features.get(name) or self._new_feature(name, raw, out)
            if monitor is None:
                continue
            values, invalid = monitor.convert(raw)
            out.invalid_values += invalid
            monitor.update(values, event_index, batch.timestamps, out)
        out.alerts.sort(key=lambda alert: alert.event_index)  # in stream order, whatever the batching
        self.events_seen += n
        if batch.model_version is not None:
            self.model_version = batch.model_version
        return out

    def _new_feature(self, name: str, raw: Sequence[Any], out: Observation) -> FeatureMonitor | None:
        if len(self.features) >= self.config.max_features:
            out.ignored_features += 1
            return None
        reference = self.baseline.get(name)
        kind = self.kinds.get(name)
        if kind is None and reference is not None:
            kind = "numeric" if isinstance(reference, NumericReference) else "categorical"
        kind = kind or infer_kind(raw)
        if kind is None:  # only missing values so far: decide when a value arrives
            return None
        monitor = FeatureMonitor(name, kind, self.config, reference)
        self.features[name] = monitor
        return monitor

    def snapshot(self) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "model": self.model,
            "events_seen": self.events_seen,
            "model_version": self.model_version,
            "features": {name: monitor.snapshot() for name, monitor in self.features.items()},
        }

    @classmethod
    def restore(
        cls,
        data: dict[str, Any],
        config: MonitorConfig,
        kinds: dict[str, FeatureKind] | None = None,
        baseline: dict[str, Reference] | None = None,
    ) -> ModelMonitor:
        if not isinstance(data, dict) or data.get("v") != SNAPSHOT_VERSION:
            version = data.get("v") if isinstance(data, dict) else None
            raise SnapshotError(f"model snapshot version {version!r} is not {SNAPSHOT_VERSION}")
        try:
            monitor = cls(str(data["model"]), config, kinds, baseline)
            monitor.events_seen = int(data["events_seen"])
            monitor.model_version = data["model_version"]
            monitor.features = {
                name: FeatureMonitor.restore(name, feature, config)
                for name, feature in data["features"].items()
            }
        except SnapshotError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SnapshotError(f"malformed model snapshot: {exc!r}") from exc
        return monitor
