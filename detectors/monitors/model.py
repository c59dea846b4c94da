"""Everything monitored of one model (within one partition), keyed as the design says.

* Input features: per model and per tracked segment value (inputs do not
  depend on the model version).
* The prediction: per (model, version) and per tracked segment value. A new
  version gets its own monitor, so a roll-out is never "prediction drift" of
  the old one; at most ``max_versions`` live at once, the least recently seen
  is retired.
* Segments: the model's config names the segment keys to slice by (a key, or a
  combination). The first ``max_segments`` values seen (in stream order, so a
  replay rebuilds the same set) are tracked, each with its own feature and
  prediction monitors beside the whole model's; the rest are counted as
  ``other``. A segment scope always builds its references from its own first
  events: a model baseline describes the whole population, not a slice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors import SnapshotError
from detectors.base import Severity
from detectors.budget import budgeted, window_alpha
from detectors.columns import Column, FeatureKind, category_text
from detectors.config import MonitorConfig
from detectors.monitors.base import PREDICTION, Alert, Judged, Observation, Rows
from detectors.monitors.dataset import DatasetDrift
from detectors.monitors.feature import FeatureMonitor
from detectors.monitors.freshness import Freshness
from detectors.monitors.multivariate import ALERT_TYPES, PCA, MultivariateMonitor
from detectors.monitors.schema import Constraint, SchemaMonitor
from detectors.reference import NumericReference, Reference
from detectors.two_sample import TESTS

SNAPSHOT_VERSION = 3  # 3: scopes (whole model and segments) and prediction monitors per version
OTHER_SEGMENT = "other"
#: The feature of the statistics of the whole model's inputs together (schema aside): pca_reconstruction, outliers.
INPUTS = "__inputs__"

SegmentValue = str | int | float | bool
SliceSpec = tuple[str, ...]


@dataclass
class ModelBatch:
    """One batch of a model's events: typed feature columns plus what each row says of itself."""

    features: dict[str, Column]
    timestamps: np.ndarray  # event time of each row, Unix seconds
    prediction: Column | None = None
    versions: Sequence[str | None] | None = None  # model_version of each row (None: all unversioned)
    segments: Sequence[dict[str, SegmentValue] | None] | None = None  # segment object of each row
    event_ids: Sequence[str | None] | None = None
    probabilities: Sequence[dict[str, float] | None] | None = None

    def __len__(self) -> int:
        return len(self.timestamps)

    def rows(self, start: int, stop: int) -> ModelBatch:
        """The batch's rows ``start`` to ``stop``."""
        taken = np.arange(start, stop)
        return ModelBatch(
            {name: column.take(taken) for name, column in self.features.items()},
            self.timestamps[start:stop],
            None if self.prediction is None else self.prediction.take(taken),
            versions=None if self.versions is None else self.versions[start:stop],
            segments=None if self.segments is None else self.segments[start:stop],
            event_ids=None if self.event_ids is None else self.event_ids[start:stop],
            probabilities=None if self.probabilities is None else self.probabilities[start:stop],
        )


def _group_rows(segments: Sequence[dict[str, SegmentValue] | None], spec: SliceSpec
                ) -> dict[tuple[str, ...], list[int]]:  # fmt: skip
    """Rows by their values of the slice's keys (as text), in order of first appearance; rows
    lacking a key are in no group."""
    groups: dict[tuple[str, ...], list[int]] = {}
    if len(spec) == 1:
        (name,) = spec
        for row, segment in enumerate(segments):
            if segment and name in segment:
                value = segment[name]
                groups.setdefault((value if type(value) is str else category_text(value),), []).append(row)
        return groups
    for row, segment in enumerate(segments):
        if segment and all(name in segment for name in spec):
            groups.setdefault(tuple(category_text(segment[name]) for name in spec), []).append(row)
    return groups


def version_cut(live: dict[str | None, int], versions: Sequence[str | None], max_versions: int,
                first_index: int) -> int | None:  # fmt: skip
    """The first of ``versions`` (rows numbered from ``first_index``) that a row before it retired
    from ``live`` (version -> index of its last row; at most ``max_versions``), or None."""
    live, gone = dict(live), set()
    for row, version in enumerate(versions):
        if version in gone:
            return row
        if version not in live and len(live) >= max_versions:
            oldest = min(live, key=live.__getitem__)
            del live[oldest]
            gone.add(oldest)
        live[version] = first_index + row
    return None


def segment_key(segment: dict[str, str]) -> str:
    """``key=value[,key=value]``: names a segment's monitors, its metric label and its alert ids.

    A backslash escapes ``\\``, ``,`` and ``=`` in keys and values, so no two segments share a key.
    """
    return ",".join(f"{_escaped(key)}={_escaped(value)}" for key, value in segment.items())


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


class Scope:
    """The monitors of one scope: the whole model ("") or one tracked segment value."""

    def __init__(self, key: str = "", segment: dict[str, str] | None = None) -> None:
        self.key = key
        self.segment = segment
        self.features: dict[str, FeatureMonitor] = {}
        self.predictions: dict[str | None, FeatureMonitor] = {}  # by model version

    def monitors(self) -> list[FeatureMonitor]:
        return [*self.features.values(), *self.predictions.values()]

    def snapshot(self) -> dict[str, Any]:
        return {
            "segment": self.segment,
            "features": {name: monitor.snapshot() for name, monitor in self.features.items()},
            "predictions": [[version, monitor.snapshot()] for version, monitor in self.predictions.items()],
        }

    @classmethod
    def restore(cls, key: str, data: dict[str, Any], lines: Callable[[str], MonitorConfig]) -> Scope:
        segment = data["segment"]
        if segment is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in segment.items()):
            raise SnapshotError(f"scope {key!r} has a malformed segment {segment!r}")
        scope = cls(key, segment)
        options = {"segment": segment, "scope": key}
        scope.features = {name: FeatureMonitor.restore(name, feature, lines(feature["kind"]), **options)
                          for name, feature in data["features"].items()}  # fmt: skip
        scope.predictions = {version: FeatureMonitor.restore(PREDICTION, prediction, lines(prediction["kind"]),
                                                             version=version, **options)
                             for version, prediction in data["predictions"]}  # fmt: skip
        return scope


class ModelMonitor:
    """All monitors of one model (within one partition): scopes, versions and the p-value correction."""

    def __init__(
        self,
        model: str,
        config: MonitorConfig,
        kinds: dict[str, FeatureKind] | None = None,
        baseline: dict[str, Reference] | None = None,
        *,
        segments: Sequence[SliceSpec] = (),
        version_baselines: dict[str, Reference] | None = None,
        constraints: dict[str, Constraint] | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.kinds = dict(kinds or {})
        self.baseline = dict(baseline or {})  # model-level references (the prediction's under PREDICTION)
        self.version_baselines = dict(version_baselines or {})  # prediction references per model version
        self.slices = tuple(tuple(spec) for spec in segments)
        # The lines of its detectors, from the model's false-alarm budget (detectors/budget.py).
        self._lines = {kind: budgeted(config, len(self.slices), kind) for kind in ("numeric", "categorical")}
        self.whole = Scope()
        self.tracked: dict[str, Scope] = {}  # in the order they were first seen
        self.versions: dict[str | None, int] = {}  # live versions -> the model's index of their last event
        self.events_seen = 0
        self.other_events = 0  # events of segment values beyond max_segments
        self.versions_retired = 0
        self.dataset = DatasetDrift(config.dataset_drift_features, config.dataset_drift_events)
        # The whole model's own checks: its inputs' schema and constraints, their joint distribution
        # and outliers (on the whole model: a slice's breakage or joint drift is its model's too).
        alpha = window_alpha(config, len(self.slices))
        self.constraints = dict(constraints or {})
        self.schema = SchemaMonitor(config, self.kinds, self._input_baseline(), self.constraints, alpha)
        self.multivariate = MultivariateMonitor(config, self.kinds, alpha)
        self.freshness = Freshness(config.stale_after)

    @property
    def scopes(self) -> list[Scope]:
        return [self.whole, *self.tracked.values()]

    @property
    def model_version(self) -> str | None:
        """The most recently seen version."""
        return max(self.versions, key=self.versions.__getitem__) if self.versions else None

    # -- the stream --------------------------------------------------------

    def observe(self, batch: ModelBatch, arrived_at: float | None = None) -> Observation:
        """Apply one batch of the model's events; ``arrived_at``: the processing time they were
        applied at (for freshness; None: not tracked)."""
        out = Observation()
        n = len(batch)
        if n == 0:
            return out
        versions: list[str | None] = list(batch.versions) if batch.versions is not None else [None] * n
        if not set(versions) <= self.versions.keys():
            cut = self._version_cut(versions)
            if cut is not None:
                # A version retired by this batch comes back in it: it must meet a fresh monitor, as
                # it would one event at a time, so the rows before it go first.
                first = self.observe(batch.rows(0, cut), arrived_at)
                return first.merge(self.observe(batch.rows(cut, n), arrived_at))
        event_index = np.arange(self.events_seen, self.events_seen + n)
        if arrived_at is not None:
            out.alerts += self.freshness.arrived(arrived_at, self.events_seen, self.events_seen + n - 1,
                                                 float(batch.timestamps[0]), float(batch.timestamps[-1]))
        rows = Rows(batch.features, batch.prediction, event_index, batch.timestamps)
        retired = self._see_versions(versions, event_index)
        out.retired_versions = [version for version, _ in retired]
        judged = self._observe_scope(self.whole, rows, versions, out)
        for scope, members in self._segment_rows(batch, out).items():
            part = np.asarray(members, dtype=np.intp)
            judged += self._observe_scope(scope, rows.take(part), [versions[i] for i in members], out)
        self._correct(judged)
        for item in sorted(judged, key=lambda item: item.index):
            item.monitor.judge(item, out)
        # After its windows of this batch are judged (they close before the row that retires it),
        # as one event at a time would: what it was firing closes with it.
        for version, row in retired:
            reason = (f"version {version!r} retired: {self.config.max_versions} more recent versions are live "
                      f"(max_versions)")  # fmt: skip
            for scope in self.scopes:
                monitor = scope.predictions.pop(version, None)
                if monitor is not None:
                    out.alerts += monitor.close(int(event_index[row]), float(batch.timestamps[row]), reason,
                                                float(self.config.max_versions + 1), float(self.config.max_versions))
        # In stream order, whatever the batching; alerts of one event by scope and column.
        rank = {scope.key: position for position, scope in enumerate(self.scopes)}
        # A stable sort, and not by detector: one monitor's alerts at one event keep the order its
        # state changed in (an incident's escalation after its firing, a resolve before a new firing).

        def order(a: Alert) -> tuple[Any, ...]:
            return (a.event_index, rank.get(segment_key(a.segment) if a.segment else "", 0), a.feature is not None,
                    a.feature or "", a.version or "")  # fmt: skip

        out.alerts += self.schema.observe(batch.features, event_index, batch.timestamps)
        out.alerts += self.multivariate.observe(batch.features, event_index, batch.timestamps)
        self._model_statistics(out)
        out.alerts.sort(key=order)
        dataset = self.dataset.observe(out.alerts, event_index, batch.timestamps)
        if dataset:
            out.alerts = sorted(out.alerts + dataset, key=order)
        self.events_seen += n
        return out

    def _model_statistics(self, out: Observation) -> None:
        """The latest statistics and lines of the whole model's own checks."""
        for (feature, check), (value, line) in self.schema.statistics().items():
            out.statistics[(None, "", feature, check)] = value
            out.lines[(None, "", feature, check)] = line
        for detector, (value, line) in self.multivariate.statistics().items():
            if detector == PCA:
                # Two-sided: as a metric (crossed at or over its line, like every other), the distance of
                # the window's mean error from the reference's and that of the line on the same side.
                reference = self.multivariate.error_mean
                value, line = abs(value - reference), abs(line - reference)
            out.statistics[(None, "", INPUTS, detector)] = value
            out.lines[(None, "", INPUTS, detector)] = line

    def _input_baseline(self) -> dict[str, Reference] | None:
        """The baseline's input features (its prediction aside): the schema they describe."""
        inputs = {name: reference for name, reference in self.baseline.items() if name != PREDICTION}
        return inputs or None

    def model_firing(self) -> list[tuple[str, str, Severity, tuple[str, ...]]]:
        """What the whole model's own checks fire now: (subject, alert type, severity, detectors); the
        subject is a feature's name, ``inputs`` for the inputs together, ``events`` for freshness."""
        found: list[tuple[str, str, Severity, tuple[str, ...]]] = []
        if self.dataset.firing is not None:
            found.append(("inputs", "data_drift", "critical", ("dataset",)))
        for detector, severity in sorted(self.multivariate.firing.items()):
            if severity is not None:
                found.append(("inputs", ALERT_TYPES[detector], severity, (detector,)))
        for (feature, check), severity in sorted(self.schema.firing.items()):
            found.append((feature, "data_quality", severity, (check,)))
        if self.freshness.silent:
            found.append(("events", "data_quality", "critical", ("freshness",)))
        return found

    def check_freshness(self, now: float, not_before: float = -float("inf")) -> list[Alert]:
        """The freshness alert if the model has been silent for ``stale_after`` at ``now`` (processing time)."""
        return self.freshness.check(now, not_before)

    def _version_cut(self, versions: list[str | None]) -> int | None:
        """The first row whose version this batch retired at an earlier row, or None."""
        return version_cut(self.versions, versions, self.config.max_versions, self.events_seen)

    def _see_versions(self, versions: list[str | None], index: np.ndarray) -> list[tuple[str | None, int]]:
        """Record each row's version as seen; retire the least recently seen beyond max_versions.

        Returns each retired version with the row that retired it.
        """
        live = self.versions
        distinct = set(versions)
        if distinct <= live.keys():  # the common case: no new version in this batch
            if len(distinct) == 1:
                live[versions[0]] = int(index[-1])
            else:
                live.update({version: int(index[row]) for row, version in enumerate(versions)})  # the last wins
            return []
        retired: list[tuple[str | None, int]] = []
        for row, version in enumerate(versions):
            if version not in live and len(live) >= self.config.max_versions:
                oldest = min(live, key=live.__getitem__)
                del live[oldest]
                retired.append((oldest, row))
                self.versions_retired += 1
            live[version] = int(index[row])
        return retired  # none comes back in this batch: observe cuts the batch before one would

    def _segment_rows(self, batch: ModelBatch, out: Observation) -> dict[Scope, list[int]]:
        """Rows of each tracked segment value; new values tracked while there is room.

        Values are taken in order of their first row (over every slice, a row's slices in config
        order), so the tracked set does not depend on how the stream is batched.
        """
        members: dict[Scope, list[int]] = {}
        if not self.slices or batch.segments is None:
            return members
        candidates: list[tuple[int, int, str, dict[str, str], list[int]]] = []  # values not yet tracked
        for position, spec in enumerate(self.slices):
            for texts, rows in _group_rows(batch.segments, spec).items():
                value = dict(zip(spec, texts, strict=True))
                key = segment_key(value)
                scope = self.tracked.get(key)
                if scope is None:
                    candidates.append((rows[0], position, key, value, rows))
                else:
                    members[scope] = rows
                    out.segment_events[key] = len(rows)
        for _, _, key, value, rows in sorted(candidates, key=lambda c: (c[0], c[1])):
            if len(self.tracked) >= self.config.max_segments:
                self.other_events += len(rows)
                out.segment_events[OTHER_SEGMENT] = out.segment_events.get(OTHER_SEGMENT, 0) + len(rows)
                continue
            scope = self.tracked[key] = Scope(key, value)
            members[scope] = rows
            out.segment_events[key] = len(rows)
        return members

    def _observe_scope(self, scope: Scope, rows: Rows, versions: list[str | None], out: Observation) -> list[Judged]:
        judged: list[Judged] = []
        for name, column in rows.features.items():
            monitor = scope.features.get(name)
            if monitor is None:
                monitor = self._new_monitor(scope, name, column, None, out)
                if monitor is None:
                    continue
            judged += self._feed(monitor, column, rows, out)
        if rows.prediction is not None:
            groups: dict[str | None, list[int]] = dict.fromkeys(versions, [])  # the common case: one version
            if len(groups) > 1:
                groups = {}
                for row, version in enumerate(versions):
                    groups.setdefault(version, []).append(row)
            for version, members in groups.items():
                part = rows if len(groups) == 1 else rows.take(np.asarray(members, dtype=np.intp))
                prediction = part.prediction
                assert prediction is not None
                monitor = scope.predictions.get(version)
                if monitor is None:
                    monitor = self._new_monitor(scope, PREDICTION, prediction, version, out)
                    if monitor is None:
                        continue
                judged += self._feed(monitor, prediction, part, out)
        return judged

    def _feed(self, monitor: FeatureMonitor, column: Column, rows: Rows, out: Observation) -> list[Judged]:
        if monitor.rows_seen == 0:
            # A monitor starts at its column's first value, wherever the batch boundaries fall.
            first = column.first_present()
            if first is None:
                return []
            if first:
                rows = rows.take(np.arange(first, len(column)))
        return monitor.observe(rows, out)

    def _new_monitor(self, scope: Scope, name: str, column: Column, version: str | None,
                     out: Observation) -> FeatureMonitor | None:  # fmt: skip
        if name != PREDICTION and len(scope.features) >= self.config.max_features:
            if scope is self.whole:
                out.ignored_features += 1
            return None
        if scope is not self.whole and name != PREDICTION and name not in self.whole.features:
            return None  # a segment monitors the features the whole model does
        reference = self._baseline_of(name, version) if scope is self.whole else None
        kind = self.kinds.get(name) if name != PREDICTION else None
        if kind is None and reference is not None:
            kind = "numeric" if isinstance(reference, NumericReference) else "categorical"
        # A segment's monitor judges its column as the whole model's does.
        if kind is None and name in self.whole.features:
            kind = self.whole.features[name].kind
        if kind is None and name == PREDICTION and version in self.whole.predictions:
            kind = self.whole.predictions[version].kind
        kind = kind or column.infer_kind()
        if kind is None:  # only missing values so far: decide when a value arrives
            return None
        monitor = FeatureMonitor(name, kind, self.lines(kind), reference, version=version, segment=scope.segment,
                                 scope=scope.key)  # fmt: skip
        if name == PREDICTION:
            scope.predictions[version] = monitor
        else:
            scope.features[name] = monitor
        return monitor

    def lines(self, kind: str) -> MonitorConfig:
        """The config a ``kind`` column's monitor judges with: its lines set by the budget."""
        return self._lines["numeric" if kind == "numeric" else "categorical"]

    def _baseline_of(self, name: str, version: str | None) -> Reference | None:
        if name == PREDICTION and version is not None and version in self.version_baselines:
            return self.version_baselines[version]
        return self.baseline.get(name)

    def _correct(self, judged: list[Judged]) -> None:
        """Lower the alpha of the p-value tests judged at one event, across features and segments.

        One family per closing event, whatever the test and scope. Its size is fixed by the
        model: its p-value tests (those of the whole model's monitors) times every scope it may
        run (the whole model and up to max_segments segment values), so a segmented model's
        false alarms are bounded like an unsegmented one's and a test's line does not move as
        segments appear or as other windows happen to close at the same event. Bonferroni divides each alpha by the
        family size; Benjamini-Hochberg gives alpha * k / m, where k is how many of the m
        p-values its step-up procedure rejects. With ``multiple_testing = "none"`` nothing is
        corrected under a false-alarm budget (its alphas already share it with the segments');
        with the budget off, only the segment family is (Bonferroni over max_segments).
        """
        method = self.config.multiple_testing
        segments = self.config.max_segments if self.slices else 0
        budget = self.config.false_alarm_budget > 0  # its lines already share the budget with the segments
        if method == "none" and not (segments and not budget):
            return  # nothing to correct: the p-values are not even read (KS computes its own lazily)
        families: dict[int, list[tuple[Judged, str]]] = {}
        for item in judged:
            for test, score in item.evaluation.scores.items():
                if TESTS[test].has_p_value and score.has_p_value:
                    families.setdefault(item.index, []).append((item, test))
        if not families:
            return
        per_scope = sum(_p_value_tests(self.config, monitor.kind) for monitor in self.whole.monitors())
        for members in families.values():
            if method == "none":
                for item, test in members:
                    if segments and not budget and isinstance(item.monitor, FeatureMonitor) and item.monitor.scope:
                        item.alphas[test] = _alpha(item, test) / segments
                        item.family = segments
                continue
            m = max(per_scope * (1 + segments), len(members))
            p_values = np.array([item.evaluation.scores[test].p_value for item, test in members], dtype=np.float64)
            adjusted = bh_adjusted(p_values, m) if method == "benjamini_hochberg" else None
            for item, test in members:
                alpha = _alpha(item, test)
                if adjusted is None:
                    item.alphas[test] = alpha / m
                else:
                    rejected = int((adjusted <= alpha).sum())
                    item.alphas[test] = alpha * max(rejected, 1) / m
                item.family = m

    # -- baselines -----------------------------------------------------------

    def rebase(self, baseline: dict[str, Reference], version_baselines: dict[str, Reference]) -> list[str]:
        """Judge the whole model against newly loaded baselines from the next window on.

        A feature (or a version's prediction) whose baseline differs from the reference it
        judges against gets the new one, a fresh window and fresh change detectors; its
        firing alerts resolve or stand at its next window. Returns what changed.
        """
        self.baseline, self.version_baselines = dict(baseline), dict(version_baselines)
        changed: list[str] = []
        for name, monitor in self.whole.features.items():
            if _replace(monitor, baseline.get(name)):
                changed.append(name)
        for version, monitor in self.whole.predictions.items():
            if _replace(monitor, self._baseline_of(PREDICTION, version)):
                changed.append(PREDICTION if version is None else f"{PREDICTION}@{version}")
        if self.schema.rebase(self._input_baseline()):  # from its next window, as after a restore
            changed.append("schema")
        return changed

    # -- snapshots ---------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "model": self.model,
            "events_seen": self.events_seen,
            "versions": [[version, last] for version, last in self.versions.items()],
            "versions_retired": self.versions_retired,
            "other_events": self.other_events,
            "scopes": [[scope.key, scope.snapshot()] for scope in self.scopes],
            "dataset": self.dataset.snapshot(),
            "schema": self.schema.snapshot(),
            "multivariate": self.multivariate.snapshot(),
            "freshness": self.freshness.snapshot(),
        }

    @classmethod
    def restore(
        cls,
        data: dict[str, Any],
        config: MonitorConfig,
        kinds: dict[str, FeatureKind] | None = None,
        baseline: dict[str, Reference] | None = None,
        *,
        segments: Sequence[SliceSpec] = (),
        version_baselines: dict[str, Reference] | None = None,
        constraints: dict[str, Constraint] | None = None,
    ) -> ModelMonitor:
        data = upgrade_snapshot(data)
        try:
            monitor = cls(str(data["model"]), config, kinds, baseline, segments=segments,
                          version_baselines=version_baselines, constraints=constraints)  # fmt: skip
            monitor.events_seen = int(data["events_seen"])
            monitor.versions = {version: int(last) for version, last in data["versions"]}
            monitor.versions_retired = int(data["versions_retired"])
            monitor.other_events = int(data["other_events"])
            monitor.dataset.restore(data.get("dataset"))
            # Absent in snapshots from before these checks: they start afresh.
            alpha = window_alpha(config, len(monitor.slices))
            if data.get("schema") is not None:
                # As saved; the rebase below switches it to the baseline in force, as a live one would.
                monitor.schema = SchemaMonitor.restore(data["schema"], config, monitor.kinds, None,
                                                       monitor.constraints, alpha)
            if data.get("multivariate") is not None:
                monitor.multivariate = MultivariateMonitor.restore(data["multivariate"], config, monitor.kinds, alpha)
            monitor.freshness.restore(data.get("freshness"))
            for key, scope in data["scopes"]:
                restored = Scope.restore(str(key), scope, monitor.lines)
                if key == "":
                    monitor.whole = restored
                elif restored.segment and tuple(restored.segment) in monitor.slices:
                    monitor.tracked[str(key)] = restored  # a slice the config no longer names is dropped
        except SnapshotError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SnapshotError(f"malformed model snapshot: {exc!r}") from exc
        if baseline is not None or version_baselines is not None:
            monitor.rebase(baseline or {}, version_baselines or {})  # a baseline loaded while it was down
        return monitor


def _p_value_tests(config: MonitorConfig, kind: FeatureKind) -> int:
    names = config.numeric_tests if kind == "numeric" else config.categorical_tests
    return sum(1 for name in names if TESTS[name].has_p_value)


def bh_adjusted(p_values: np.ndarray, family: int) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values when ``family`` >= len(p_values) hypotheses are tested.

    The p-values of the family not judged at this event count as 1 (never rejected), so
    they only widen the denominator. scipy's ``false_discovery_control`` takes the family
    to be the p-values given; with ``family == len(p_values)`` the two agree (tested).
    """
    order = np.argsort(p_values)
    ranked = p_values[order] * family / np.arange(1, p_values.size + 1)
    adjusted = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    out = np.empty_like(adjusted)
    out[order] = adjusted
    return out


def _alpha(item: Judged, test: str) -> float:
    window = item.monitor.window if isinstance(item.monitor, FeatureMonitor) else None
    assert window is not None
    return next(t.alpha for t in window.tests if t.name == test)  # type: ignore[attr-defined]


def _replace(monitor: FeatureMonitor, reference: Reference | None) -> bool:
    current = monitor.reference
    if reference is None or (current is not None and current.to_plain() == reference.to_plain()):
        return False
    expected = NumericReference if monitor.kind == "numeric" else None
    if expected is not None and not isinstance(reference, expected):
        return False  # a baseline of another kind than the stream's: keep what works
    if expected is None and isinstance(reference, NumericReference):
        return False
    monitor.use_reference(reference)
    return True


def upgrade_snapshot(data: Any) -> dict[str, Any]:
    """A model snapshot of any known version as the current one.

    Version 2 (layout 1, releases before segments and versions) held one monitor per
    feature, the prediction among them under ``__prediction__``, and the last version
    seen: its features become the whole-model scope and its prediction monitor that
    version's.
    """
    version = data.get("v") if isinstance(data, dict) else None
    if version == SNAPSHOT_VERSION:
        return data
    if version != 2:
        raise SnapshotError(f"model snapshot version {version!r} is not one of 2, {SNAPSHOT_VERSION}")
    try:
        features = dict(data["features"])
        last_version = data["model_version"]
        if last_version is not None and not isinstance(last_version, str):
            raise TypeError(f"model_version {last_version!r} is not a string")
        prediction = features.pop(PREDICTION, None)
        events = int(data["events_seen"])
        whole = {
            "segment": None,
            "features": features,
            "predictions": [] if prediction is None else [[last_version, prediction]],
        }
        return {
            "v": SNAPSHOT_VERSION,
            "model": data["model"],
            "events_seen": events,
            "versions": [] if events == 0 else [[last_version, events - 1]],
            "versions_retired": 0,
            "other_events": 0,
            "scopes": [["", whole]],
        }
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SnapshotError(f"malformed version-2 model snapshot: {exc!r}") from exc
