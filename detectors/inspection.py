"""What a restored model monitor says now: for ``driftstream status`` and ``driftstream report``.

Pure reading of :class:`~detectors.monitors.model.ModelMonitor` objects (restored from
checkpoints elsewhere): per scope and column, each detector's latest statistic against its
line and whether it is firing, the incidents firing now, and the reference against the
current window as plot-ready shares. Nothing here does I/O.

Where the numbers come from:

* windowed tests: the verdicts of the last judged window (``WindowedDetector.verdicts``),
  the same statistic the worker put in ``drift-metrics``. Its line is the test's own; for
  p-value tests under ``MULTIPLE_TESTING=bonferroni`` or ``benjamini_hochberg`` (or segment
  monitors without a budget), the worker judged at a corrected alpha whose line ``drift-metrics``
  carries, so the line here is the uncorrected one.
* change detectors: their live test quantity and line (``RiverDetector.statistic`` and
  ``threshold``), as the worker reports after every batch.
* firing: the alert policy's state (``AlertPolicy.states`` per detector, ``incidents`` per type).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from detectors.base import Severity
from detectors.monitors.base import PREDICTION
from detectors.monitors.feature import FeatureMonitor
from detectors.monitors.model import ModelMonitor
from detectors.policy import QUALITY
from detectors.reference import OTHER_CATEGORY, CategoricalReference, NumericReference, NumericReferenceBuilder

_RANK: dict[Severity | None, int] = {None: 0, "warning": 1, "critical": 2}


@dataclass(frozen=True)
class DetectorReading:
    """One detector of one column: its latest statistic, the line it is judged against, and its state."""

    name: str
    statistic: float | None  # None: not judged yet (a window test before its first full window)
    line: float | None
    p_value: float | None = None
    severity: Severity | None = None  # firing now at this severity; None: not firing
    change: bool = False  # a change detector (ADWIN, Page-Hinkley), not a windowed test


@dataclass(frozen=True)
class Firing:
    """An incident firing now: one alert type on one column, with the detectors firing in it."""

    type: str  # data_drift, prediction_drift or data_quality
    severity: Severity
    detectors: tuple[str, ...]


@dataclass(frozen=True)
class ColumnReading:
    """One monitored column (a feature, or a version's prediction) in one scope of one partition."""

    model: str
    partition: int
    scope: str  # "" for the whole model, else the segment's key (``region=eu``)
    feature: str | None  # None: the prediction
    version: str | None  # the model version of a prediction monitor
    kind: str
    rows: int  # values seen
    reference_rows: int | None  # while still collecting its reference: the values so far; None once judging
    reference_size: int  # values a reference is built from
    window_fill: int
    detectors: tuple[DetectorReading, ...]
    firing: tuple[Firing, ...]

    @property
    def subject(self) -> str:
        """``f2``, ``prediction`` or ``prediction v2``."""
        if self.feature is not None:
            return self.feature
        return "prediction" if self.version is None else f"prediction v{self.version}"

    @property
    def severity(self) -> Severity | None:
        """The highest severity firing on the column now."""
        return max((f.severity for f in self.firing), key=_RANK.__getitem__, default=None)


@dataclass(frozen=True)
class ModelReading:
    """A model's state over the partitions that hold it."""

    model: str
    partitions: tuple[int, ...]
    events_seen: int
    versions: tuple[str | None, ...]
    columns: tuple[ColumnReading, ...]
    # What the whole model's own checks fire now (dataset drift, schema, constraints, pca_reconstruction,
    # outliers, freshness): (subject, alert type, severity, detectors), over its partitions.
    model_firing: tuple[tuple[str, str, Severity, tuple[str, ...]], ...] = ()

    @property
    def firing(self) -> list[tuple[ColumnReading, Firing]]:
        return [(column, firing) for column in self.columns for firing in column.firing]


def read_column(model: str, partition: int, monitor: FeatureMonitor) -> ColumnReading:
    """What one column's monitor says now."""
    policy = monitor.policy
    readings: list[DetectorReading] = []
    window = monitor.window
    if window is not None:
        verdicts = {verdict.test: verdict for verdict in window.verdicts}
        for test in window.tests:
            verdict = verdicts.get(test.name)
            readings.append(DetectorReading(
                test.name, None if verdict is None else verdict.statistic,
                None if verdict is None else verdict.threshold, None if verdict is None else verdict.p_value,
                policy.firing(test.name)))  # fmt: skip
    for name, detector in monitor.changes.items():
        readings.append(DetectorReading(name, float(detector.statistic), float(detector.threshold), None,
                                        policy.firing(name), change=True))  # fmt: skip
    shown = {reading.name for reading in readings}
    for name in sorted(policy.states):  # firing detectors the config no longer runs: still firing until resolved
        if name not in shown and policy.firing(name) is not None:
            readings.append(DetectorReading(name, None, None, None, policy.firing(name)))
    firing = []
    for kind, incident in sorted(policy.incidents.items()):
        if not incident.firing:
            continue
        if kind == QUALITY:
            alert_type = "data_quality"
        else:
            alert_type = "prediction_drift" if monitor.subject is None else "data_drift"
        firing.append(Firing(alert_type, incident.severity, tuple(sorted(incident.firing))))
    builder = monitor.builder
    reference_rows = None
    if isinstance(builder, NumericReferenceBuilder):
        reference_rows = builder.count
    elif builder is not None:
        reference_rows = builder.present
    return ColumnReading(
        model=model, partition=partition, scope=monitor.scope, feature=monitor.subject, version=monitor.version,
        kind=monitor.kind, rows=monitor.rows_seen, reference_rows=reference_rows,
        reference_size=monitor.config.reference_size,
        window_fill=window.fill if window is not None else 0, detectors=tuple(readings), firing=tuple(firing),
    )  # fmt: skip


def read_models(monitors: Iterable[tuple[int, ModelMonitor]], segments: bool = True) -> list[ModelReading]:
    """Per model (its partitions merged, in name order): every column of every scope, whole model first.

    ``monitors``: (partition, restored monitor) pairs, a model in any number of partitions.
    """
    by_model: dict[str, list[tuple[int, ModelMonitor]]] = {}
    for partition, monitor in monitors:
        by_model.setdefault(monitor.model, []).append((partition, monitor))
    readings = []
    for model, parts in sorted(by_model.items()):
        parts.sort(key=lambda item: item[0])
        columns: list[ColumnReading] = []
        versions: dict[str | None, int] = {}
        for partition, monitor in parts:
            for version, last in monitor.versions.items():
                versions[version] = max(last, versions.get(version, -1))
            for scope in monitor.scopes if segments else [monitor.whole]:
                for column in scope.monitors():
                    columns.append(read_column(model, partition, column))
        rank = {scope: i for i, scope in enumerate(dict.fromkeys(c.scope for c in columns if c.scope))}
        columns.sort(key=lambda c: (c.scope != "", rank.get(c.scope, -1), c.feature is None, c.feature or "",
                                    c.version or "", c.partition))  # fmt: skip
        readings.append(ModelReading(
            model, tuple(p for p, _ in parts), sum(m.events_seen for _, m in parts),
            tuple(sorted(versions, key=versions.__getitem__)), tuple(columns),
            tuple(found for _, m in parts for found in m.model_firing())))  # fmt: skip
    return readings


# -- distributions, for plots ------------------------------------------------


@dataclass
class NumericShares:
    """The reference and the current window over the same equal-width bins, as shares of each."""

    edges: np.ndarray  # len(reference) + 1 bin edges
    reference: np.ndarray
    current: np.ndarray
    current_count: int
    reference_count: int
    reference_mean: float
    current_mean: float | None


@dataclass
class CategoricalShares:
    """The reference's categories (and the others' bucket) with their shares in the reference and in the window."""

    categories: list[str]
    reference: np.ndarray
    current: np.ndarray
    current_count: int
    reference_count: int


@dataclass
class _Numeric:
    items: list[np.ndarray] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    window: list[np.ndarray] = field(default_factory=list)


def shares(monitors: Sequence[FeatureMonitor], bins: int = 40) -> NumericShares | CategoricalShares | None:
    """Reference against current window of one column, over the partitions that hold it (their references
    and windows pooled); None while none has a reference yet."""
    judging = [m for m in monitors if m.window is not None]
    if not judging:
        return None
    references = [m.window.reference for m in judging if m.window is not None]
    if all(isinstance(r, NumericReference) for r in references):
        pooled = _Numeric()
        for monitor in judging:
            assert monitor.window is not None and isinstance(monitor.window.reference, NumericReference)
            pooled.items.append(monitor.window.reference.items)
            pooled.weights.append(monitor.window.reference.weights)
            recent = np.asarray(monitor.window.recent(), dtype=np.float64)
            pooled.window.append(recent[np.isfinite(recent)])
        return _numeric_shares(pooled, bins)
    if all(isinstance(r, CategoricalReference) for r in references):
        return _categorical_shares(judging)
    return None  # partitions disagree on the kind: nothing sensible to pool


def _weighted_quantile(items: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(items)
    cumulative = np.cumsum(weights[order])
    return float(items[order][min(np.searchsorted(cumulative, q * cumulative[-1]), items.size - 1)])


def _numeric_shares(pooled: _Numeric, bins: int) -> NumericShares:
    items, weights = np.concatenate(pooled.items), np.concatenate(pooled.weights)
    window = np.concatenate(pooled.window) if pooled.window else np.empty(0)
    # The bulk of both, not their extremes: one wild value would squeeze every bar into one.
    low, high = _weighted_quantile(items, weights, 0.002), _weighted_quantile(items, weights, 0.998)
    if window.size:
        low, high = min(low, float(np.quantile(window, 0.002))), max(high, float(np.quantile(window, 0.998)))
    if not high > low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    reference, _ = np.histogram(np.clip(items, low, high), bins=edges, weights=weights)
    current, _ = np.histogram(np.clip(window, low, high), bins=edges)
    total = float(weights.sum())
    return NumericShares(
        edges=edges, reference=reference / total if total else reference.astype(float),
        current=current / window.size if window.size else current.astype(float), current_count=int(window.size),
        reference_count=int(round(total)), reference_mean=float(np.average(items, weights=weights)),
        current_mean=float(window.mean()) if window.size else None,
    )  # fmt: skip


def _categorical_shares(monitors: Sequence[FeatureMonitor]) -> CategoricalShares:
    reference: dict[str, float] = {}
    current: dict[str, float] = {}
    ref_total = cur_total = 0
    for monitor in monitors:
        window = monitor.window
        assert window is not None and isinstance(window.reference, CategoricalReference)
        ref = window.reference
        names = [*ref.categories, OTHER_CATEGORY]
        for name, share in zip(names, ref.proportions, strict=True):
            reference[name] = reference.get(name, 0.0) + float(share) * ref.present
        ref_total += ref.present
        codes = np.asarray(window.recent(), dtype=np.int64)
        counts = np.bincount(codes[codes >= 0], minlength=len(names))
        for name, count in zip(names, counts, strict=True):
            current[name] = current.get(name, 0.0) + float(count)
        cur_total += int(counts.sum())
    order = sorted(reference, key=lambda name: (name == OTHER_CATEGORY, -reference[name], name))
    order += sorted(name for name in current if name not in reference)
    return CategoricalShares(
        categories=order,
        reference=np.array([reference.get(n, 0.0) / ref_total if ref_total else 0.0 for n in order]),
        current=np.array([current.get(n, 0.0) / cur_total if cur_total else 0.0 for n in order]),
        current_count=cur_total, reference_count=ref_total,
    )  # fmt: skip


Column = tuple[str | None, str | None]  # (feature or None for the prediction, its version)


def columns_of(monitors: Iterable[ModelMonitor], scope: str = "") -> dict[Column, list[FeatureMonitor]]:
    """The column monitors of one scope over partitions: (feature or None for the prediction, version) -> monitors."""
    found: dict[Column, list[FeatureMonitor]] = {}
    for monitor in monitors:
        chosen = monitor.whole if scope == "" else monitor.tracked.get(scope)
        if chosen is None:
            continue
        for column in chosen.monitors():
            key = (None if column.name == PREDICTION else column.name, column.version)
            found.setdefault(key, []).append(column)
    return found
