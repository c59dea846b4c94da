"""One monitored column: a feature, or a model version's prediction.

Each builds a reference (a fixed-memory sketch) from its first values unless
one is given, then feeds a ``WindowedDetector`` (the two-sample tests) and, for
numbers, the change detectors on normal scores against the reference. Whether a
verdict becomes an alert is the ``AlertPolicy``'s decision: each detector's own
alerts are collected per batch and, once every window the batch completed is
judged, passed in event order through the policy's incidents (one alert per
incident unless ``alert_per_detector``), so what is sent does not depend on how
the stream is batched.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from detectors import SnapshotError
from detectors.base import Severity, Verdict
from detectors.columns import Column, FeatureKind
from detectors.config import MonitorConfig
from detectors.monitors.base import PREDICTION, Alert, Judged, Observation, Rows
from detectors.policy import QUALITY_DETECTORS, AlertPolicy, Status, incident_of
from detectors.reference import (
    CategoricalReference,
    CategoricalReferenceBuilder,
    NumericReference,
    NumericReferenceBuilder,
    Reference,
)
from detectors.registry import change_detectors, window_tests
from detectors.streaming import RiverDetector
from detectors.two_sample import Score
from detectors.window import Coded, WindowedDetector

_MIN_SHIFT_ROWS = 50
# The order of a detector's alerts at one event: change points, then what a window close says of
# the change detectors, then the windowed tests.
_CHANGE, _REVIEW, _WINDOW = range(3)
_WHAT = {
    "psi": "PSI",
    "ks": "Kolmogorov-Smirnov D",
    "chi_square": "chi-square",
    "wasserstein": "Wasserstein distance (reference std)",
    "jensen_shannon": "Jensen-Shannon distance",
    "unseen_rate": "unseen-category share rise",
    "null_rate": "missing-value rate rise",
    "out_of_range": "share of values outside the reference's range",
}

Values = np.ndarray | Coded


class FeatureMonitor:
    """Reference, windowed tests, change detectors and alert state of one column in one scope."""

    def __init__(self, name: str, kind: FeatureKind, config: MonitorConfig, reference: Reference | None = None,
                 *, version: str | None = None, segment: dict[str, str] | None = None,
                 scope: str = "") -> None:  # fmt: skip
        self.name = name
        self.kind = kind
        self.config = config
        self.version = version  # the model version (prediction monitors)
        self.segment = segment  # the tracked segment value of its scope; None: the whole model
        self.scope = scope  # the scope's key: "" or the segment's text
        self.rows_seen = 0
        self.builder: NumericReferenceBuilder | CategoricalReferenceBuilder | None = (
            NumericReferenceBuilder(points=config.reference_points) if kind == "numeric"
            else CategoricalReferenceBuilder(config.category_map_size)
        )  # fmt: skip
        self.window: WindowedDetector | None = None
        self.changes: dict[str, RiverDetector] = {}
        self.policy = AlertPolicy()
        # The last _MIN_SHIFT_ROWS present values as z-scores: what a Page-Hinkley change is measured on.
        self._recent_z = np.empty(0)
        # This batch's detector alerts, (event index, phase, alert), until its windows are all judged.
        self._pending: list[tuple[int, int, Alert]] = []
        self._unjudged = 0  # windows update() returned that judge() has not seen yet
        if reference is not None:
            self.use_reference(reference)

    @property
    def reference(self) -> Reference | None:
        return self.window.reference if self.window else None

    @property
    def subject(self) -> str | None:
        """The feature's name; None for the prediction."""
        return None if self.name == PREDICTION else self.name

    def describe(self) -> str:
        what = "the prediction" if self.subject is None else f"feature {self.subject!r}"
        if self.subject is None and self.version is not None:
            what += f" of version {self.version!r}"
        return what if not self.segment else f"{what} in segment {self.scope}"

    # -- reference -------------------------------------------------------

    def use_reference(self, reference: Reference) -> None:
        """Judge from now on against ``reference``: a fresh window and fresh change detectors."""
        expected = NumericReference if self.kind == "numeric" else CategoricalReference
        if not isinstance(reference, expected):
            raise ValueError(f"feature {self.name!r} is {self.kind} but its reference is not")
        self.builder = None
        kind = "numeric" if self.kind == "numeric" else "categorical"
        self.window = WindowedDetector(reference, window_tests(self.config, kind), self.config.window_size,
                                       self.config.step)  # fmt: skip
        self.changes = change_detectors(self.config) if self.kind == "numeric" else {}
        self._recent_z = np.empty(0)  # z-scores against the reference being replaced
        for state in self.policy.states.values():  # change detectors start over
            state.since_count, state.since_time = 0, math.nan

    def _feed_reference(self, values: Values) -> None:
        builder = self.builder
        assert builder is not None
        if isinstance(builder, NumericReferenceBuilder):
            assert isinstance(values, np.ndarray)
            builder.update(values)
            if builder.count >= self.config.reference_size:
                self.use_reference(builder.build(self.config.psi_bins, self.config.reference_points))
        else:
            assert isinstance(values, Coded)
            builder.update(values.labels())
            if builder.present >= self.config.reference_size:
                self.use_reference(builder.build(self.config.max_categories))

    def _reference_rows(self, values: Values) -> int:
        """Rows of this batch the reference takes: up to the one that brings its values to REFERENCE_SIZE.

        Counting values, not rows, ends the reference on the same row whatever the batching.
        """
        builder = self.builder
        assert builder is not None
        have = builder.count if isinstance(builder, NumericReferenceBuilder) else builder.present
        present = ~np.isnan(values) if isinstance(values, np.ndarray) else values.codes >= 0
        reached = np.flatnonzero(np.cumsum(present) >= self.config.reference_size - have)
        return int(reached[0]) + 1 if reached.size else len(values)

    # -- the stream --------------------------------------------------------

    def column(self, rows: Rows) -> Column | None:
        return rows.prediction if self.name == PREDICTION else rows.features.get(self.name)

    def convert(self, column: Column) -> tuple[Values, int]:
        if self.kind == "numeric":
            return column.numeric()
        codes, names, invalid = column.coded(self.kind)
        return Coded(codes, names), invalid

    def observe(self, rows: Rows, out: Observation) -> list[Judged]:
        column = self.column(rows)
        if column is None:
            return []
        values, invalid = self.convert(column)
        out.invalid_values += invalid
        return self.update(values, rows.event_index, rows.timestamps, out)

    def update(self, values: Values, event_index: np.ndarray, timestamps: np.ndarray,
               out: Observation) -> list[Judged]:  # fmt: skip
        """Feed one batch of typed values; return the windows it completed (not yet judged)."""
        n = len(values)
        start = 0
        if self.builder is not None:
            start = self._reference_rows(values)
            self._feed_reference(values[:start])
        judged: list[Judged] = []
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
                item = Judged(self, evaluation, int(index[evaluation.position]), float(times[evaluation.position]))
                self._review_changes(item, out)
                judged.append(item)
            start = stop
        self.rows_seen += n
        self._unjudged += len(judged)
        if not self._unjudged:
            self._settle(out)
        return judged

    def _statistic(self, detector: str, value: float, line: float, out: Observation) -> None:
        key = (self.version, self.scope, self.subject, detector)
        out.statistics[key] = value
        out.lines[key] = line

    def _change_points(self, values: np.ndarray, index: np.ndarray, times: np.ndarray, out: Observation) -> None:
        reference = self.reference
        assert isinstance(reference, NumericReference) and self.window is not None
        missing = np.isnan(values)
        # Rows of the present values; all of them (no copy) in the usual batch without a missing value.
        present = np.flatnonzero(~missing) if missing.any() else np.arange(values.size)
        if not present.size:
            return
        kept = values[present] if present.size < values.size else values
        scores = reference.normal_scores(kept)  # what the detectors judge (calibrated on N(0, 1))
        for name, detector in self.changes.items():
            state = self.policy.state(name)
            done = 0  # values already counted in a stretch
            for verdict in detector.update(scores):
                row = int(present[verdict.position])
                if state.since_count == 0:
                    state.since_time = float(times[present[done]])
                count = state.since_count + verdict.position + 1 - done
                self._on_change(name, verdict, self._z(kept[: verdict.position + 1]), int(index[row]),
                                float(times[row]), count, state.since_time, out)  # fmt: skip
                state.since_count, done = 0, verdict.position + 1  # the detector starts a new stretch
            if done < kept.size:
                if state.since_count == 0:
                    state.since_time = float(times[present[done]])
                state.since_count += kept.size - done
        for name, detector in self.changes.items():
            self._statistic(name, detector.statistic, detector.threshold, out)
        self._recent_z = np.concatenate([self._recent_z, self._z(kept[-_MIN_SHIFT_ROWS:])])[-_MIN_SHIFT_ROWS:]

    def _z(self, values: np.ndarray) -> np.ndarray:
        """Values in reference standard deviations from its mean: what a change is measured in (only
        the few values a shift is measured on are converted)."""
        reference = self.reference
        assert isinstance(reference, NumericReference)
        return (values - reference.mean) / reference.std

    def _recent_shift(self, batch_z: np.ndarray) -> float:
        """Mean of the last _MIN_SHIFT_ROWS values up to a change point, in reference std from its mean.

        Few values, because a change is caught within tens of them: a longer
        stretch would mostly hold the values from before it. Kept apart from the
        window (which holds missing values too, and may be shorter), so the same
        values count whatever the batching.
        """
        recent = np.concatenate([self._recent_z, batch_z])[-_MIN_SHIFT_ROWS:]
        return float(recent.mean()) if recent.size else 0.0

    def _severity(self, shift: float) -> Severity:
        return "critical" if abs(shift) >= self.config.change_critical_sigma else "warning"

    def _on_change(self, detector: str, verdict: Verdict, batch_z: np.ndarray, index: int, at: float, count: int,
                   start: float, out: Observation) -> None:  # fmt: skip
        # ADWIN's best split measures the change itself; Page-Hinkley says only that there was one.
        shift = verdict.shift if verdict.shift is not None else self._recent_shift(batch_z)
        severity = self._severity(shift)
        if not self.policy.on_change(detector, severity, index):
            return
        # ADWIN's gap and bound are estimated on 32-value blocks; river cut at its own finer split,
        # so the block estimate can sit just under its bound: the alert shows the line it crossed.
        statistic = max(verdict.statistic, verdict.threshold)
        message = (f"{detector} detected a change in the mean of {self.describe()}: the {count} values since its "
                   f"last change point are {abs(shift):.2f} reference std {'up' if shift >= 0 else 'down'} from "
                   f"the reference mean ({severity})")  # fmt: skip
        self._pending.append((index, _CHANGE, self._alert(
            "firing", severity, detector, statistic, verdict.threshold, None, index, at, message,
            {"mean_shift_sigma": shift}, count, start)))  # fmt: skip

    def judge(self, item: Judged, out: Observation) -> None:
        """Alerts for one completed window, with p-values already corrected model-wide."""
        evaluation = item.evaluation
        out.windows_judged += 1
        self._resolve_dropped(item)
        for test in self.window.tests if self.window else ():
            score = evaluation.scores[test.name]
            severity, line = test.judge(score, item.alphas.get(test.name))
            self._statistic(test.name, score.statistic, line, out)
            self._judge_window(test.name, severity, score, line, item)
        self._unjudged -= 1
        if self._unjudged <= 0:
            self._unjudged = 0
            self._settle(out)

    def _resolve_dropped(self, item: Judged) -> None:
        """Resolve the alerts of detectors the config no longer runs (restored from an older config):
        nothing else would, and their incident would fire for ever."""
        running = {test.name for test in self.window.tests} if self.window else set()
        running |= set(self.changes)
        for detector in sorted(self.policy.states):
            if detector not in running and self.policy.firing(detector) is not None:
                message = f"{detector} on {self.describe()}: no longer run (the config dropped it); its alert resolves"
                self._resolve(detector, _WINDOW, message, 0.0, 0.0, item.index, item.at, {}, item.evaluation.count,
                              item.evaluation.start_time)  # fmt: skip

    def _review_changes(self, item: Judged, out: Observation) -> None:
        """At a window close: escalate a change alert the window confirms, resolve one gone quiet."""
        evaluation, reference = item.evaluation, self.reference
        for detector in self.changes:
            # The summary costs quantiles: read only when a warning may escalate.
            if self.policy.firing(detector) == "warning" and isinstance(reference, NumericReference):
                summary = evaluation.summary or {}
                if "mean" in summary:
                    # A change caught early looks small; a window that has since moved far enough escalates it.
                    shift = (summary["mean"] - reference.mean) / reference.std
                    severity = self._severity(shift)
                    if self.policy.escalate(detector, severity):
                        message = (f"{detector} on {self.describe()}: the last {evaluation.count} values are "
                                   f"{abs(shift):.2f} reference std {'up' if shift >= 0 else 'down'} from the "
                                   f"reference mean, past the critical line of {self.config.change_critical_sigma:g}")
                        self._pending.append((item.index, _REVIEW, self._alert(
                            "firing", severity, detector, abs(shift), self.config.change_critical_sigma, None,
                            item.index, item.at, message, {**summary, "mean_shift_sigma": shift}, evaluation.count,
                            evaluation.start_time)))  # fmt: skip
            quiet = self.policy.quiet_for(detector, item.index)
            if quiet is not None and quiet >= self.config.resolve_after:
                last = self.policy.state(detector).last_change
                message = (f"{detector} on {self.describe()}: no change point in the {quiet} events since the last "
                           f"one (event {last}); the detector has adapted to the new level")  # fmt: skip
                self._resolve(detector, _REVIEW, message, float(quiet), float(self.config.resolve_after), item.index,
                              item.at, evaluation.summary, evaluation.count, evaluation.start_time)  # fmt: skip

    def _resolve(self, detector: str, phase: int, message: str, statistic: float, threshold: float, index: int,
                 at: float, current: dict[str, Any] | None, count: int, start: float) -> None:  # fmt: skip
        """End a detector's firing alert and queue the resolved alert it sends."""
        severity = self.policy.resolve(detector)
        self._pending.append((index, phase, self._alert("resolved", severity, detector, statistic, threshold, None,
                                                        index, at, message, current, count, start)))  # fmt: skip

    def close(self, index: int, at: float, reason: str, statistic: float, threshold: float) -> list[Alert]:
        """Resolve every alert this monitor is firing: it stops (its version retired).

        Its alerts of this batch so far come first; then each open incident resolves as one
        alert (one per detector with ``alert_per_detector``).
        """
        closed = Observation()
        self._settle(closed)
        for detector in sorted(self.policy.states):
            if self.policy.firing(detector) is not None:
                self._resolve(detector, _WINDOW, f"{detector} on {self.describe()}: closed, {reason}", statistic,
                              threshold, index, at, {}, self.rows_seen, at)  # fmt: skip
        self._settle(closed)
        return closed.alerts

    def _settle(self, out: Observation) -> None:
        """The detectors' pending alerts, in event order, as what is sent (per incident by default)."""
        pending, self._pending = sorted(self._pending, key=lambda entry: entry[:2]), []
        per_detector = self.config.alert_per_detector
        event: list[Alert] = []  # the incidents' alerts of one event
        for position, (index, _, alert) in enumerate(pending):
            decision = self.policy.incident(alert.detector, alert.status, alert.severity)
            if per_detector:
                out.alerts.append(alert)
            elif decision is not None:
                status, severity, detectors = decision
                event.append(dataclasses.replace(alert, status=status, severity=severity, detectors=detectors))
            if event and (position + 1 == len(pending) or pending[position + 1][0] != index):
                out.alerts += (self._named(alert) for alert in event)
                event = []

    def _named(self, alert: Alert) -> Alert:
        """An incident's alert naming its other detectors: for a firing one, every member firing
        once its event is through (detectors that fired at the same event included)."""
        detectors = alert.detectors
        if alert.status == "firing":
            detectors = self.policy.firing_in(incident_of(alert.detector)) or detectors
        others = [name for name in detectors if name != alert.detector]
        if not others:
            return dataclasses.replace(alert, detectors=detectors)
        also = "also firing" if alert.status == "firing" else "also fired during the incident"
        return dataclasses.replace(alert, detectors=detectors, message=f"{alert.message}; {also}: {', '.join(others)}")

    def _judge_window(self, test: str, severity: Severity | None, score: Score, line: float,
                      item: Judged) -> None:  # fmt: skip
        decision = self.policy.on_window(test, severity)
        if decision is None:
            return
        status, severity = decision
        evaluation = item.evaluation
        what = _WHAT.get(test, test)
        p_text = ""
        if score.p_value is not None:
            corrected = (f", {self.config.multiple_testing} over {item.family}: alpha {item.alphas[test]:.2g}"
                         if test in item.alphas else "")  # fmt: skip
            p_text = f", p={score.p_value:.2g}{corrected}"
        if status == "firing":
            message = (f"{what} of {self.describe()} is {score.statistic:.3f} over the last {evaluation.count} "
                       f"events (line {line:.3g}{p_text}, {severity})")  # fmt: skip
        else:
            message = f"{what} of {self.describe()} is back to {score.statistic:.3f} (line {line:.3g}{p_text})"
        self._pending.append((item.index, _WINDOW, self._alert(
            status, severity, test, score.statistic, line, score.p_value, item.index, item.at, message,
            evaluation.summary, evaluation.count, evaluation.start_time)))  # fmt: skip

    def _alert(self, status: Status, severity: Severity, detector: str, statistic: float, threshold: float,
               p_value: float | None, index: int, at: float, message: str, current: dict[str, Any] | None,
               count: int, start: float) -> Alert:  # fmt: skip
        assert self.reference is not None
        if detector in QUALITY_DETECTORS:
            kind = "data_quality"
        else:
            kind = "prediction_drift" if self.subject is None else "data_drift"
        return Alert(
            type=kind,
            status=status,
            severity=severity,
            feature=self.subject,
            detector=detector,
            statistic=float(statistic),
            threshold=float(threshold),
            p_value=None if p_value is None else float(p_value),
            event_index=index,
            window_count=count,
            window_start=start if math.isfinite(start) else at,
            window_end=at,
            reference=self.reference.summary,
            current=current or {},
            message=message,
            version=self.version,
            segment=self.segment,
            detectors=(detector,),
        )

    # -- snapshots ---------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rows": self.rows_seen,
            "builder": self.builder.to_plain() if self.builder else None,
            "window": self.window.snapshot() if self.window else None,
            "changes": {name: detector.snapshot() for name, detector in self.changes.items()},
            "alerts": self.policy.snapshot(),
            "incidents": self.policy.incidents_snapshot(),
            "recent_z": self._recent_z.astype("<f8").tobytes(),
        }

    @classmethod
    def restore(cls, name: str, data: dict[str, Any], config: MonitorConfig, *, version: str | None = None,
                segment: dict[str, str] | None = None, scope: str = "") -> FeatureMonitor:  # fmt: skip
        monitor = cls(name, data["kind"], config, version=version, segment=segment, scope=scope)
        if data["builder"] is not None:
            monitor.builder = (
                NumericReferenceBuilder.from_plain(data["builder"], points=config.reference_points)
                if monitor.kind == "numeric" else CategoricalReferenceBuilder.from_plain(data["builder"])
            )  # fmt: skip
        if data["window"] is not None:
            window = WindowedDetector.restore(data["window"])
            monitor.use_reference(window.reference)  # the tests and detectors the config asks for now
            assert monitor.window is not None
            if (window.size, window.step) == (monitor.window.size, monitor.window.step):
                window.tests = monitor.window.tests
                monitor.window = window
            for detector, state in data["changes"].items():
                # Built for other lines (the budget or an option changed): it starts afresh with the config's.
                if detector in monitor.changes and state.get("params") == monitor.changes[detector].params:
                    monitor.changes[detector] = type(monitor.changes[detector]).restore(state)
        monitor.policy = AlertPolicy.restore(data["alerts"], data.get("incidents"))  # absent before incidents
        recent = np.frombuffer(data.get("recent_z", b""), dtype="<f8")  # absent before snapshot version 3
        if recent.size > _MIN_SHIFT_ROWS or not np.isfinite(recent).all():
            raise SnapshotError(f"recent values of {name!r} must be at most {_MIN_SHIFT_ROWS} finite numbers")
        monitor._recent_z = recent.copy()
        monitor.rows_seen = int(data["rows"])
        return monitor
