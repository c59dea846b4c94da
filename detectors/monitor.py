"""Per-model monitoring: reference building, detectors and the alert policy.

``ModelMonitor.observe`` takes the columns of one batch of a model's events
and returns the alerts that batch caused plus the latest statistic of every
(feature, detector). Each feature builds a reference (a fixed-memory sketch),
then feeds a ``WindowedDetector`` (the two-sample tests) and, for numbers, the
change detectors on z-scores. P-value tests can be corrected for the number
of features judged at once. All state round-trips through
``snapshot()``/``restore()`` as versioned plain data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import stats

from detectors import SnapshotError
from detectors.base import Severity, Verdict
from detectors.columns import FeatureKind, infer_kind, to_boolean, to_categorical, to_numeric
from detectors.config import MonitorConfig
from detectors.reference import (
    CategoricalReference,
    CategoricalReferenceBuilder,
    NumericReference,
    NumericReferenceBuilder,
    Reference,
)
from detectors.streaming import RiverDetector
from detectors.two_sample import TESTS, Score
from detectors.window import Evaluation, WindowedDetector

SNAPSHOT_VERSION = 2

#: Internal column name of the model's prediction, monitored like a feature.
PREDICTION = "__prediction__"

Status = Literal["firing", "resolved"]
_MIN_SHIFT_ROWS = 50
_WHAT = {
    "psi": "PSI",
    "ks": "Kolmogorov-Smirnov D",
    "chi_square": "chi-square",
    "wasserstein": "Wasserstein distance (reference std)",
    "jensen_shannon": "Jensen-Shannon distance",
    "unseen_rate": "unseen-category share rise",
    "null_rate": "missing-value rate rise",
}


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
    windows_judged: int = 0


@dataclass
class _AlertState:
    severity: Severity | None = None  # None: not firing
    last_change: int = -1  # event index of the last change point (change detectors)


@dataclass
class _Judged:
    """A window one feature completed, waiting for the model-wide p-value correction."""

    feature: FeatureMonitor
    evaluation: Evaluation
    index: int  # event index that closed it
    at: float  # its event time
    alphas: dict[str, float] = field(default_factory=dict)  # test -> alpha after the correction
    family: int = 1  # how many p-values the correction spanned


def _describe(feature: str | None) -> str:
    return "the prediction" if feature is None else f"feature {feature!r}"


def _alert_type(feature: str | None, detector: str) -> str:
    if detector == "null_rate":
        return "data_quality"
    return "prediction_drift" if feature is None else "data_drift"


class FeatureMonitor:
    """Reference, windowed tests, change detectors and alert state of one feature."""

    def __init__(self, name: str, kind: FeatureKind, config: MonitorConfig, reference: Reference | None = None
                 ) -> None:  # fmt: skip
        self.name = name
        self.kind = kind
        self.config = config
        self.rows_seen = 0
        self.builder: NumericReferenceBuilder | CategoricalReferenceBuilder | None = (
            NumericReferenceBuilder() if kind == "numeric"
            else CategoricalReferenceBuilder(config.category_map_size)
        )  # fmt: skip
        self.window: WindowedDetector | None = None
        self.changes: dict[str, RiverDetector] = {}
        self._alerts: dict[str, _AlertState] = {}
        if reference is not None:
            self._use_reference(reference)

    @property
    def reference(self) -> Reference | None:
        return self.window.reference if self.window else None

    @property
    def name_or_none(self) -> str | None:
        return None if self.name == PREDICTION else self.name

    # -- reference -------------------------------------------------------

    def _use_reference(self, reference: Reference) -> None:
        expected = NumericReference if self.kind == "numeric" else CategoricalReference
        if not isinstance(reference, expected):
            raise ValueError(f"feature {self.name!r} is {self.kind} but its reference is not")
        self.builder = None
        tests = self.config.window_tests("numeric" if self.kind == "numeric" else "categorical")
        self.window = WindowedDetector(reference, tests, self.config.window_size, self.config.step)
        if self.kind == "numeric":
            self.changes = self.config.build_change_detectors()

    def _feed_reference(self, values: np.ndarray | list[str | None]) -> None:
        builder = self.builder
        assert builder is not None
        if isinstance(builder, NumericReferenceBuilder):
            assert isinstance(values, np.ndarray)
            builder.update(values)
            if builder.count >= self.config.reference_size:
                self._use_reference(builder.build(self.config.psi_bins, self.config.reference_points))
        else:
            assert isinstance(values, list)
            builder.update(values)
            if builder.present >= self.config.reference_size:
                self._use_reference(builder.build(self.config.max_categories))

    def _reference_rows(self, values: np.ndarray | list[str | None]) -> int:
        """Rows of this batch the reference takes: up to the one that brings its values to REFERENCE_SIZE.

        Counting values, not rows, ends the reference on the same row whatever the batching.
        """
        builder = self.builder
        assert builder is not None
        have = builder.count if isinstance(builder, NumericReferenceBuilder) else builder.present
        present = ~np.isnan(values) if isinstance(values, np.ndarray) else np.fromiter(
            (value is not None for value in values), dtype=bool, count=len(values))  # fmt: skip
        reached = np.flatnonzero(np.cumsum(present) >= self.config.reference_size - have)
        return int(reached[0]) + 1 if reached.size else len(values)

    # -- the stream --------------------------------------------------------

    def convert(self, raw: Sequence[Any]) -> tuple[np.ndarray | list[str | None], int]:
        if self.kind == "numeric":
            return to_numeric(raw)
        if self.kind == "boolean":
            return to_boolean(raw)
        return to_categorical(raw)

    def update(self, values: np.ndarray | list[str | None], event_index: np.ndarray, timestamps: np.ndarray,
               out: Observation) -> list[_Judged]:  # fmt: skip
        """Feed one batch of converted values; return the windows it completed (not yet judged)."""
        n = len(values)
        start = 0
        if self.builder is not None:
            start = self._reference_rows(values)
            self._feed_reference(values[:start])
        judged: list[_Judged] = []
        window = self.window
        while window is not None and start < n:
            # Up to the next window close at a time, so change points and window closes are
            # handled in event order, whatever the batching.
            stop = min(n, start + window.until_next)
            chunk, index, times = values[start:stop], event_index[start:stop], timestamps[start:stop]
            if self.changes:
                assert isinstance(chunk, np.ndarray)
                self._change_points(chunk, index, times, out)
            for evaluation in window.evaluate(chunk, times, summaries=True):
                item = _Judged(self, evaluation, int(index[evaluation.position]), float(times[evaluation.position]))
                self._review_changes(item, out)
                judged.append(item)
            start = stop
        self.rows_seen += n
        return judged

    def _change_points(self, values: np.ndarray, index: np.ndarray, times: np.ndarray, out: Observation) -> None:
        reference = self.reference
        assert isinstance(reference, NumericReference) and self.window is not None
        present = np.flatnonzero(~np.isnan(values))
        if not present.size:
            return
        z = (values[present] - reference.mean) / reference.std
        for name, detector in self.changes.items():
            for verdict in detector.update(z):
                row = int(present[verdict.position])
                self._on_change(name, verdict, z[: verdict.position + 1], int(index[row]), float(times[row]), out)
        for name, detector in self.changes.items():
            out.statistics[(self.name_or_none, name)] = detector.statistic

    def _recent_shift(self, batch_z: np.ndarray) -> float:
        """Mean of the last _MIN_SHIFT_ROWS values up to a change point, in reference std from its mean.

        Few values, because a change is caught within tens of them: a longer
        stretch would mostly hold the values from before it.
        """
        reference = self.reference
        assert isinstance(reference, NumericReference) and self.window is not None
        before = self.window.recent()
        before = (before[~np.isnan(before)] - reference.mean) / reference.std
        recent = np.concatenate([before, batch_z])[-_MIN_SHIFT_ROWS:]
        return float(recent.mean()) if recent.size else 0.0

    def _on_change(self, detector: str, verdict: Verdict, batch_z: np.ndarray, index: int, at: float,
                   out: Observation) -> None:  # fmt: skip
        state = self._alerts.setdefault(detector, _AlertState())
        state.last_change = index
        # ADWIN's best split measures the change itself; Page-Hinkley says only that there was one.
        shift = verdict.shift if verdict.shift is not None else self._recent_shift(batch_z)
        self._fire_change(detector, state, shift, verdict.statistic, verdict.threshold, index, at,
                          "the values after the change are {size:.2f} reference std {direction} from the "
                          "reference mean", out)  # fmt: skip

    def _fire_change(self, detector: str, state: _AlertState, shift: float, statistic: float, threshold: float,
                     index: int, at: float, template: str, out: Observation,
                     evaluation: Evaluation | None = None) -> None:  # fmt: skip
        severity: Severity = "critical" if abs(shift) >= self.config.change_critical_sigma else "warning"
        if state.severity == severity or state.severity == "critical":
            return
        state.severity = severity
        detail = template.format(size=abs(shift), direction="up" if shift >= 0 else "down")
        message = f"{detector} detected a change in the mean of {_describe(self.name_or_none)}: {detail}"
        current = evaluation.summary if evaluation and evaluation.summary else {}
        current = {**current, "mean_shift_sigma": shift}
        count, start = (evaluation.count, evaluation.start_time) if evaluation else (0, at)
        out.alerts.append(self._alert("firing", severity, detector, statistic, threshold, None, index, at, message,
                                      current, count, start))  # fmt: skip

    def judge(self, item: _Judged, out: Observation) -> None:
        """Alerts for one completed window, with p-values already corrected model-wide."""
        evaluation = item.evaluation
        out.windows_judged += 1
        for test in self.window.tests if self.window else ():
            score = evaluation.scores[test.name]
            severity, line = test.judge(score, item.alphas.get(test.name))
            out.statistics[(self.name_or_none, test.name)] = score.statistic
            self._judge_window(test.name, severity, score, line, item, out)

    def _review_changes(self, item: _Judged, out: Observation) -> None:
        """At a window close: escalate a change alert the window confirms, resolve one gone quiet."""
        evaluation, reference = item.evaluation, self.reference
        for detector, change in self.changes.items():
            state = self._alerts.get(detector)
            # The summary costs quantiles: read only when a warning may escalate.
            warned = state is not None and state.severity == "warning" and isinstance(reference, NumericReference)
            summary = (evaluation.summary or {}) if warned else {}
            if warned and "mean" in summary:
                # A change caught early looks small; a window that has since moved far enough escalates it.
                shift = (summary["mean"] - reference.mean) / reference.std
                self._fire_change(detector, state, shift, change.statistic, change.threshold, item.index, item.at,
                                  f"the last {evaluation.count} values are {{size:.2f}} reference std {{direction}} "
                                  f"from the reference mean", out, evaluation)  # fmt: skip
            if state and state.severity and item.index - state.last_change >= self.config.resolve_after:
                message = (
                    f"{detector} on {_describe(self.name_or_none)}: no further change in "
                    f"{self.config.resolve_after} events; the detector has adapted"
                )
                statistic, line = (change.statistic, change.threshold) if detector != "adwin" else (0.0, 0.0)
                out.alerts.append(self._alert("resolved", state.severity, detector, statistic, line, None, item.index,
                                              item.at, message, evaluation.summary, evaluation.count,
                                              evaluation.start_time))  # fmt: skip
                state.severity = None

    def _judge_window(self, test: str, severity: Severity | None, score: Score, line: float, item: _Judged,
                      out: Observation) -> None:  # fmt: skip
        state = self._alerts.setdefault(test, _AlertState())
        evaluation = item.evaluation
        what = _WHAT.get(test, test)
        subject = _describe(self.name_or_none)
        p_text = ""
        if score.p_value is not None:
            corrected = (f", {self.config.multiple_testing} over {item.family}: alpha {item.alphas[test]:.2g}"
                         if test in item.alphas else "")  # fmt: skip
            p_text = f", p={score.p_value:.2g}{corrected}"
        if severity is not None:
            if state.severity == severity or state.severity == "critical":
                return
            state.severity = severity
            message = (f"{what} of {subject} is {score.statistic:.3f} over the last {evaluation.count} events "
                       f"(line {line:.3g}{p_text}, {severity})")  # fmt: skip
            status: Status = "firing"
        elif state.severity is not None:
            severity, state.severity = state.severity, None
            message = f"{what} of {subject} is back to {score.statistic:.3f} (line {line:.3g}{p_text})"
            status = "resolved"
        else:
            return
        out.alerts.append(self._alert(status, severity, test, score.statistic, line, score.p_value, item.index,
                                        item.at, message, evaluation.summary, evaluation.count,
                                        evaluation.start_time))  # fmt: skip

    def _alert(self, status: Status, severity: Severity, detector: str, statistic: float, threshold: float,
               p_value: float | None, index: int, at: float, message: str, current: dict[str, Any] | None,
               count: int, start: float) -> Alert:  # fmt: skip
        assert self.reference is not None
        return Alert(
            type=_alert_type(self.name_or_none, detector),
            status=status,
            severity=severity,
            feature=self.name_or_none,
            detector=detector,
            statistic=float(statistic),
            threshold=float(threshold),
            p_value=None if p_value is None else float(p_value),
            event_index=index,
            window_count=count,
            window_start=start,
            window_end=at,
            reference=self.reference.summary,
            current=current or {},
            message=message,
        )

    # -- snapshots ---------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rows": self.rows_seen,
            "builder": self.builder.to_plain() if self.builder else None,
            "window": self.window.snapshot() if self.window else None,
            "changes": {name: detector.snapshot() for name, detector in self.changes.items()},
            # sorted: the order alerts first fired in depends on how the stream was batched
            "alerts": {name: [state.severity, state.last_change] for name, state in sorted(self._alerts.items())},
        }

    @classmethod
    def restore(cls, name: str, data: dict[str, Any], config: MonitorConfig) -> FeatureMonitor:
        monitor = cls(name, data["kind"], config)
        if data["builder"] is not None:
            builder_cls = NumericReferenceBuilder if monitor.kind == "numeric" else CategoricalReferenceBuilder
            monitor.builder = builder_cls.from_plain(data["builder"])
        if data["window"] is not None:
            window = WindowedDetector.restore(data["window"])
            monitor._use_reference(window.reference)  # the tests and detectors the config asks for now
            assert monitor.window is not None
            if (window.size, window.step) == (monitor.window.size, monitor.window.step):
                window.tests = monitor.window.tests
                monitor.window = window
            for detector, state in data["changes"].items():
                if detector in monitor.changes:
                    monitor.changes[detector] = type(monitor.changes[detector]).restore(state)
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
        judged: list[_Judged] = []
        for name, raw in batch.columns.items():
            monitor = self.features.get(name)
            rows, times = event_index, batch.timestamps
            if monitor is None:
                # A feature starts at its first value, wherever the batch boundaries fall.
                first = next((i for i, value in enumerate(raw) if value is not None), None)
                if first is None:
                    continue
                raw, rows, times = raw[first:], event_index[first:], batch.timestamps[first:]
                monitor = self._new_feature(name, raw, out)
                if monitor is None:
                    continue
            values, invalid = monitor.convert(raw)
            out.invalid_values += invalid
            judged += monitor.update(values, rows, times, out)
        self._correct(judged)
        for item in sorted(judged, key=lambda item: item.index):
            item.feature.judge(item, out)
        out.alerts.sort(key=lambda alert: alert.event_index)  # in stream order, whatever the batching
        self.events_seen += n
        if batch.model_version is not None:
            self.model_version = batch.model_version
        return out

    def _correct(self, judged: list[_Judged]) -> None:
        """Lower the alpha of the p-value tests judged at one event across this model's features.

        One family per closing event, whatever the test: Bonferroni divides each
        alpha by the family size; Benjamini-Hochberg gives alpha * k / m, where k
        is how many of the m p-values its step-up procedure rejects. A test is
        then judged on its raw p-value against that alpha, and its line is the
        statistic at that alpha.
        """
        method = self.config.multiple_testing
        if method == "none":
            return
        families: dict[int, list[tuple[_Judged, str]]] = {}
        for item in judged:
            for test, score in item.evaluation.scores.items():
                if score.p_value is not None and TESTS[test].has_p_value:
                    families.setdefault(item.index, []).append((item, test))
        for members in families.values():
            m = len(members)
            p_values = np.array([item.evaluation.scores[test].p_value for item, test in members], dtype=np.float64)
            adjusted = stats.false_discovery_control(p_values, method="bh") if method == "benjamini_hochberg" else None
            for item, test in members:
                alpha = self._alpha(item, test)
                if adjusted is None:
                    item.alphas[test] = alpha / m
                else:
                    rejected = int((adjusted <= alpha).sum())
                    item.alphas[test] = alpha * max(rejected, 1) / m
                item.family = m

    @staticmethod
    def _alpha(item: _Judged, test: str) -> float:
        window = item.feature.window
        assert window is not None
        return next(t.alpha for t in window.tests if t.name == test)  # type: ignore[attr-defined]

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
