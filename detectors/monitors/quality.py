"""Model quality from late labels: quality windows, the performance test, concept drift, label health.

Labels arrive hours or days after their predictions; the streams side joins each to its
prediction and hands them here in the order it applied them (``LabeledRows``). One
``QualityMonitor`` per model (within one labels partition) keeps, per (model version, scope),
where a scope is the whole model or one tracked segment value (chosen as ``ModelMonitor``
chooses them: the first ``max_segments`` values in label order, the rest ``other``):

* **Quality windows** of ``quality_window`` labeled events (and, with
  ``quality_window_seconds``, also closed once their predictions span that much event time;
  such a window with fewer than ``MIN_JUDGED`` labeled events reports its metrics but is not
  judged). Classifiers: accuracy, precision/recall/F1 of the positive class (two classes),
  macro F1, ROC AUC and log loss when scores or probabilities were sent; regressors: MAE,
  RMSE, MAPE (zero labels skipped), mean error (``detectors.quality_metrics``). Each closed
  window's metrics go to ``Observation.quality`` with the label lag's p50/p95 and, for the
  whole model, the label coverage. The task is ``QualitySpec.task``, else the baseline's,
  else what the version's first labeled row shows (``quality_metrics.infer_task``). A
  numeric prediction of a classifier is the positive class's score (positive when at least
  ``score_threshold``); an object of probabilities predicts its most probable class. Classes
  past ``max_classes`` (per version and scope, first seen first) share ``other``.
* **A reference quality**: a baseline's (``references``, by version; key None for every
  version), else the values the config expects (``QualitySpec.expected``: ``accuracy`` or
  ``mae``), else the version's first ``quality_reference_windows`` windows in that scope (no
  performance alert before it exists). A segment scope always builds its own, as
  ``ModelMonitor``'s segment scopes do: a baseline describes the whole population.
* **The performance test** of every later window (alert type ``performance``). Classifiers:
  is the window's accuracy below the reference's? The alert shows the two-proportion z
  (one-sample against a configured accuracy), but the p-value is the exact one: Fisher's
  exact test (one-sided, hypergeometric) against a measured reference, the binomial tail
  against a configured one. At the alphas a budget gives (1e-9) the normal tail is far off
  for a skewed count: at 5% errors over 1000 labels the z-test's line is crossed about 40
  times as often as its alpha says. Regressors: one-sided Welch t-test that the mean
  absolute error rose (one-sample t against a configured MAE). Absolute errors are skewed
  to the right, which makes a one-sample t's upper tail lighter (safe: half-normal and
  lognormal errors, 1000 per window, crossed alpha 1e-3 at 0.7 and 0.1 times its rate);
  against a reference of as many errors as the window the difference is about symmetric
  and the test about exact there (1.0 and 1.1 times). Neither is proven at the budget's
  alphas (1e-9). Alpha: the stricter of ``performance_alpha`` and the budget's ``rate x count``
  (``detectors.budget.QualityLines``). Critical when accuracy fell by at least
  ``performance_critical_drop`` (absolute), or the MAE rose by at least
  ``performance_critical_rise`` (relative to the reference's); else a warning. ``statistic``
  is the window's metric and ``threshold`` the metric's line: the highest accuracy (lowest
  MAE) the test flags at that alpha. Floors (``QualitySpec.floors``): a window past one is
  critical (detector ``floor``). A floor's alert resolves at a later window that is back; the
  test's at a later window not significant even at ``sqrt(alpha)`` (hysteresis: a drop sitting at
  the line does not fire and resolve by turns).
* **Concept drift** on the error stream, row by row in label order (alert type
  ``concept_drift``): a classifier's 0/1 errors go to ``error_detector`` (DDM by default;
  its warning zone is a ``warning`` alert, its drift a ``critical`` one); a regressor's
  absolute errors, as normal scores against the reference's absolute errors
  ``Phi^-1(F_ref(|e|))`` (so the calibrated lines hold whatever the error distribution), to
  ``regression_detector`` (Page-Hinkley by default; a detected rise is ``critical``, a fall,
  the model getting better, is no alert). The detector starts once the reference exists and
  restarts by itself after a drift; the reference stays. Its lines come from the budget and
  the reference's error rate (``detectors.budget.error_lines``). Its alert resolves after
  ``resolve_after`` labeled events without a new change point (checked at window closes).
* **Label health** (alert type ``data_quality``): a window whose median label lag exceeds
  ``label_lag_max`` (detector ``label_lag``), and, at the whole model's window closes, a
  label coverage (the share of stored predictions labeled, passed by the caller) under
  ``label_coverage_min`` (``label_coverage``); both warnings.

Alerts are one incident per (version, scope) and alert type, as feature monitors' are
(``AlertPolicy``; ``alert_per_detector`` sends each detector's own). Their ``window`` is the
labeled window (or, for concept drift, the labeled events since the detector's last restart):
its count and the event-time range of its predictions; ``event_index`` is the label (0-based,
over the monitor's life) that completed the verdict. At most ``max_versions`` versions are
live: the least recently labeled is retired and what it was firing resolves. The state
round-trips through ``snapshot()`` as versioned plain data.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from detectors import SnapshotError
from detectors.base import Severity, Verdict
from detectors.budget import QualityLines, quality_lines
from detectors.config import MonitorConfig, quality_detector
from detectors.monitors.base import Alert, Observation
from detectors.monitors.model import SegmentValue, SliceSpec, _group_rows, segment_key, version_cut
from detectors.policy import AlertPolicy, Status, incident_of
from detectors.quality_metrics import (
    CLASSIFICATION,
    CLASSIFICATION_METRICS,
    HIGHER_IS_BETTER,
    METRICS,
    REGRESSION,
    REGRESSION_METRICS,
    TASKS,
    class_text,
    classification_metrics,
    error_summary,
    infer_task,
    is_number,
    past_floor,
    regression_metrics,
)
from detectors.reference import DEFAULT_REFERENCE_POINTS, NumericReference
from detectors.streaming import BinaryDetector, PageHinkleyDetector, RiverDetector, carried

QUALITY = "__quality__"  # statistics' feature name for quality
SNAPSHOT_VERSION = 1
REFERENCE_VERSION = 1
OTHER_CLASS = "other"  # classes past max_classes
PERFORMANCE, CONCEPT_DRIFT, DATA_QUALITY = "performance", "concept_drift", "data_quality"
ALERT_TYPES = (PERFORMANCE, CONCEPT_DRIFT, DATA_QUALITY)
FLOOR, LABEL_LAG, LABEL_COVERAGE = "floor", "label_lag", "label_coverage"
ACCURACY_TEST, MAE_TEST = "accuracy_test", "mae_test"
_OTHER = -1  # stored class index of a class past max_classes
_RECENT = 200  # recent errors kept for a concept-drift alert's evidence
_SHIFT_ROWS = 50  # recent normal scores that say whether a regressor's errors rose or fell
# A window closed early by quality_window_seconds with fewer labeled events than this (or than
# quality_window) reports its metrics but is not judged, nor taken as the whole of a reference.
MIN_JUDGED = 30
# The order of one track's alerts at one event: change points, then window-close reviews, then window tests.
_CHANGE, _REVIEW, _WINDOW = range(3)

ChangeDetector = RiverDetector | PageHinkleyDetector


# -- input -------------------------------------------------------------------------------------


@dataclass
class LabeledRows:
    """Labels joined to their predictions, in the order they were applied."""

    versions: list[str | None]
    segments: list[dict[str, SegmentValue] | None]  # the event's segment object (only configured keys)
    predictions: list[object]  # number (score or regression value), class (str/int/bool), or None
    probabilities: list[dict[str, float] | None]  # class -> probability when the event sent an object
    labels: list[object]  # class (str, int, bool) or number (regression)
    event_times: np.ndarray  # float64 Unix seconds: the prediction's event time
    label_times: np.ndarray  # float64 Unix seconds: when the label came (its timestamp, else its Kafka record's)

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self, start: int, stop: int) -> LabeledRows:
        return LabeledRows(self.versions[start:stop], self.segments[start:stop], self.predictions[start:stop],
                           self.probabilities[start:stop], self.labels[start:stop], self.event_times[start:stop],
                           self.label_times[start:stop])  # fmt: skip


class FrozenMap(Mapping[str, float]):
    """A read-only, hashable mapping of metric names to numbers (sorted)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, float] | Sequence[tuple[str, float]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items: tuple[tuple[str, float], ...] = tuple(sorted((str(k), v) for k, v in pairs))

    def __getitem__(self, key: str) -> float:
        for name, value in self._items:
            if name == key:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._items) == dict(other.items())

    def __repr__(self) -> str:
        return repr(dict(self._items))


def _check_metrics(name: str, values: Mapping[str, Any], task: str) -> FrozenMap:
    """Validated metric values of ``QualitySpec.expected`` or ``floors``, named after the field."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{name} must be a table of metric -> number, got {values!r}")
    for metric, value in values.items():
        if metric not in METRICS:
            raise ValueError(f"{name}: {metric!r} is not one of {', '.join(sorted(METRICS))}")
        if task == CLASSIFICATION and metric not in CLASSIFICATION_METRICS or (
                task == REGRESSION and metric not in REGRESSION_METRICS):  # fmt: skip
            raise ValueError(f"{name}: {metric!r} is not a {task} metric")
        if not is_number(value):
            raise ValueError(f"{name}: {metric} must be a finite number, got {value!r}")
        if metric in HIGHER_IS_BETTER and not 0 <= value <= 1:
            raise ValueError(f"{name}: {metric} must be in [0, 1], got {value!r}")
        if value < 0 and (metric != "mean_error" or name == "floors"):  # an expected mean error may be negative
            raise ValueError(f"{name}: {metric} must be >= 0, got {value!r}")
    return FrozenMap({metric: float(value) for metric, value in values.items()})


@dataclass(frozen=True)
class QualitySpec:
    """A model's own quality settings, from the config file's ``[models.NAME]`` table."""

    task: str = "auto"  # auto | classification | regression
    # Binary metrics' positive class (as text); default: "1"/"true" when present, else the second
    # of two classes in sorted order (a score predicts "1" for integer labels, "true" for booleans).
    positive_class: str | None = None
    # Reference values given in the config (e.g. {"accuracy": 0.92} or {"mae": 1.3}); used when no
    # baseline reference: accuracy (classifiers) or mae (regressors) is what the performance test needs.
    expected: Mapping[str, float] = field(default_factory=FrozenMap)
    # Absolute lines: accuracy/precision/recall/f1/f1_macro/roc_auc must stay >= floor;
    # log_loss/mae/rmse/mape/abs(mean_error) must stay <= it.
    floors: Mapping[str, float] = field(default_factory=FrozenMap)
    score_threshold: float = 0.5  # a classifier's numeric prediction is a score: positive class when >= it

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.positive_class is not None and (not isinstance(self.positive_class, str) or not self.positive_class):
            raise ValueError(f"positive_class must be a non-empty text, got {self.positive_class!r}")
        object.__setattr__(self, "expected", _check_metrics("expected", self.expected, self.task))
        object.__setattr__(self, "floors", _check_metrics("floors", self.floors, self.task))
        if not is_number(self.score_threshold):
            raise ValueError(f"score_threshold must be a finite number, got {self.score_threshold!r}")


# -- references --------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class QualityReference:
    """A model version's reference quality: what its later windows are judged against.

    ``count`` labeled events measured it (``source`` "baseline" or "stream"); a reference of
    values the config expects has ``count`` 0 and ``source`` "config". Classifiers keep their
    error count and confusion matrix, regressors their absolute errors' distribution (a
    ``NumericReference``: what the change detector's normal scores are taken against) and
    mean and variance (the Welch test).
    """

    task: str
    count: int
    metrics: Mapping[str, float]
    source: str = "baseline"
    errors: int = 0  # wrong predictions (classifiers)
    classes: tuple[str, ...] = ()  # the confusion matrix's classes ("other" last when used)
    matrix: tuple[tuple[int, ...], ...] = ()
    abs_errors: NumericReference | None = None  # regressors
    abs_mean: float = math.nan
    abs_var: float = math.nan  # sample variance (ddof 1)
    errors_summary: Mapping[str, Any] | None = None  # regressors: error_summary()

    @property
    def measured(self) -> bool:
        return self.count > 0

    @property
    def accuracy(self) -> float | None:
        if self.task != CLASSIFICATION:
            return None
        if self.measured:
            return 1.0 - self.errors / self.count
        return self.metrics.get("accuracy")

    @property
    def error_rate(self) -> float | None:
        accuracy = self.accuracy
        return None if accuracy is None else 1.0 - accuracy

    @property
    def mae(self) -> float | None:
        if self.task != REGRESSION:
            return None
        return self.abs_mean if self.measured else self.metrics.get("mae")

    @property
    def testable(self) -> bool:
        """Whether the performance test can judge against it (a configured one needs accuracy or mae)."""
        return (self.accuracy if self.task == CLASSIFICATION else self.mae) is not None

    @property
    def summary(self) -> dict[str, Any]:
        """What an alert shows of it."""
        out: dict[str, Any] = {"source": self.source, "count": self.count, **dict(self.metrics)}
        if self.task == CLASSIFICATION:
            rate = self.error_rate
            if rate is not None:
                out["error_rate"] = rate
            if self.matrix:
                out["confusion"] = {"labels": list(self.classes), "matrix": [list(row) for row in self.matrix]}
        elif self.errors_summary is not None:
            out["errors"] = dict(self.errors_summary)
        return out

    @classmethod
    def expected(cls, task: str, values: Mapping[str, float]) -> QualityReference:
        """A reference of the values the config expects (``QualitySpec.expected``)."""
        keep = CLASSIFICATION_METRICS if task == CLASSIFICATION else REGRESSION_METRICS
        return cls(task, 0, FrozenMap({k: v for k, v in values.items() if k in keep}), source="config")

    def to_plain(self) -> dict[str, Any]:
        return {
            "v": REFERENCE_VERSION,
            "task": self.task,
            "count": self.count,
            "source": self.source,
            "metrics": dict(self.metrics),
            "errors": self.errors,
            "classes": list(self.classes),
            "matrix": [list(row) for row in self.matrix],
            "abs_errors": None if self.abs_errors is None else self.abs_errors.to_plain(),
            "abs_mean": None if math.isnan(self.abs_mean) else self.abs_mean,
            "abs_var": None if math.isnan(self.abs_var) else self.abs_var,
            "errors_summary": None if self.errors_summary is None else dict(self.errors_summary),
        }

    @classmethod
    def from_plain(cls, data: Any) -> QualityReference:
        if not isinstance(data, dict) or data.get("v") != REFERENCE_VERSION:
            raise SnapshotError(f"quality reference must be version {REFERENCE_VERSION}, got "
                                f"{data.get('v') if isinstance(data, dict) else type(data).__name__!r}")  # fmt: skip
        try:
            task, count, source = str(data["task"]), int(data["count"]), str(data["source"])
            if task not in (CLASSIFICATION, REGRESSION) or count < 0:
                raise ValueError(f"task {task!r}, count {count}")
            metrics = FrozenMap({str(k): float(v) for k, v in data["metrics"].items()})
            classes = tuple(str(c) for c in data["classes"])
            matrix = tuple(tuple(int(x) for x in row) for row in data["matrix"])
            if matrix and (len(matrix) != len(classes) or any(len(row) != len(classes) for row in matrix)):
                raise ValueError("the confusion matrix does not match its classes")
            errors = int(data["errors"])
            abs_errors = None if data["abs_errors"] is None else NumericReference.from_plain(data["abs_errors"])
            abs_mean = math.nan if data["abs_mean"] is None else float(data["abs_mean"])
            abs_var = math.nan if data["abs_var"] is None else float(data["abs_var"])
            summary = data["errors_summary"]
            if summary is not None and not isinstance(summary, dict):
                raise ValueError("errors_summary must be a mapping")
        except SnapshotError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SnapshotError(f"malformed quality reference: {exc!r}") from exc
        if task == REGRESSION and count and abs_errors is None:
            raise SnapshotError("a measured regression reference needs its absolute errors")
        return cls(task, count, metrics, source, errors, classes, matrix, abs_errors, abs_mean, abs_var, summary)


# -- parsing -----------------------------------------------------------------------------------


class _Version:
    """What one model version's labels have shown: its task and its positive class."""

    def __init__(self, task: str | None, positive: str | None) -> None:
        self.task = task
        self.positive = positive
        self.negative: str | None = None
        self.label_kind: str | None = None  # bool | int | str: of the first label
        self.seen: list[str] = []  # the first two distinct classes (labels and predicted classes)

    def see(self, text: str) -> None:
        if len(self.seen) < 2 and text not in self.seen:
            self.seen.append(text)

    def resolve(self, scores: bool = False) -> None:
        """Fix the positive (and a score's negative) class once the classes seen tell them."""
        if self.positive is None:
            if self.label_kind == "bool":
                self.positive = "true"
            elif "1" in self.seen:
                self.positive = "1"
            elif "true" in self.seen:
                self.positive = "true"
            elif len(self.seen) == 2:
                self.positive = sorted(self.seen)[1]
            elif scores and self.label_kind == "int":
                self.positive = "1"  # a score is the probability of 1
        if self.positive is not None and self.negative is None:
            others = [c for c in self.seen if c != self.positive]
            if others:
                self.negative = others[0]
            elif self.positive == "true" and self.label_kind == "bool":
                self.negative = "false"
            elif self.positive == "1" and self.label_kind == "int":
                self.negative = "0"

    def snapshot(self) -> list[Any]:
        return [self.task, self.positive, self.negative, self.label_kind, list(self.seen)]

    @classmethod
    def restore(cls, data: list[Any]) -> _Version:
        task, positive, negative, kind, seen = data
        if task not in (None, CLASSIFICATION, REGRESSION) or kind not in (None, "bool", "int", "str"):
            raise SnapshotError(f"malformed version state {data!r}")
        if not all(isinstance(x, str) for x in seen) or len(seen) > 2:
            raise SnapshotError(f"malformed classes seen {seen!r}")
        version = cls(task, None if positive is None else str(positive))
        version.negative, version.label_kind, version.seen = (None if negative is None else str(negative)), kind, seen
        return version


@dataclass
class _Parsed:
    """The rows of one batch as their tasks read them (each array one entry per row)."""

    valid: np.ndarray  # bool
    label_text: list[str | None]
    predicted_text: list[str | None]
    correct: np.ndarray  # bool
    p_true: np.ndarray  # probability given to the true class; NaN: none sent
    score: np.ndarray  # the positive class's score of a numeric prediction; NaN: none
    probabilities: list[dict[str, float] | None]
    prediction: np.ndarray  # regressors
    label: np.ndarray


def _parse(rows: LabeledRows, infos: Mapping[str | None, _Version], threshold: float) -> _Parsed:
    n = len(rows)
    parsed = _Parsed(np.zeros(n, bool), [None] * n, [None] * n, np.zeros(n, bool), np.full(n, np.nan),
                     np.full(n, np.nan), [None] * n, np.full(n, np.nan), np.full(n, np.nan))  # fmt: skip
    for row in range(n):
        info = infos[rows.versions[row]]
        label, prediction = rows.labels[row], rows.predictions[row]
        probabilities = rows.probabilities[row]
        if info.task is None:
            info.task = infer_task(label, prediction, probabilities)
            if info.task is None:
                continue
        if info.task == REGRESSION:
            if is_number(label) and is_number(prediction):
                parsed.valid[row] = True
                parsed.label[row], parsed.prediction[row] = float(label), float(prediction)  # type: ignore[arg-type]
            continue
        _parse_class(parsed, row, info, label, prediction, probabilities, threshold)
    return parsed


def _parse_class(parsed: _Parsed, row: int, info: _Version, label: object, prediction: object,
                 probabilities: object, threshold: float) -> None:  # fmt: skip
    truth = class_text(label)
    if truth is None:
        return
    if info.label_kind is None:
        info.label_kind = "bool" if isinstance(label, bool) else "str" if isinstance(label, str) else "int"
    given: dict[str, float] | None = None
    if isinstance(probabilities, dict) and probabilities:
        if not all(is_number(p) and 0.0 <= p <= 1.0 for p in probabilities.values()):
            return
        given = {str(k): float(v) for k, v in probabilities.items()}
    info.see(truth)
    score = math.nan
    if isinstance(prediction, (str, bool, int)):
        predicted = class_text(prediction)
    elif is_number(prediction):  # a score of the positive class
        info.resolve(scores=True)
        if info.positive is None or info.negative is None:
            return  # a string-labeled model sending scores: which class is positive is not known yet
        score = float(prediction)  # type: ignore[arg-type]
        predicted = info.positive if score >= threshold else info.negative
    elif prediction is None and given is not None:
        predicted = max(given, key=given.__getitem__)  # the first of the most probable
    else:
        return
    if predicted is None:
        return
    info.see(predicted)
    parsed.valid[row] = True
    parsed.label_text[row], parsed.predicted_text[row] = truth, predicted
    parsed.correct[row] = truth == predicted
    parsed.probabilities[row] = given
    parsed.score[row] = score
    if given is not None:
        parsed.p_true[row] = given.get(truth, 0.0)
    elif not math.isnan(score) and 0.0 <= score <= 1.0:
        parsed.p_true[row] = score if truth == info.positive else 1.0 - score


# -- classes -----------------------------------------------------------------------------------


class _Classes:
    """The classes one (version, scope) tracks: the first ``max_classes`` seen (labels, predicted
    classes and probability keys, row by row in label order); the rest share ``_OTHER``."""

    def __init__(self, limit: int, classes: Sequence[str] = ()) -> None:
        self.limit = limit
        self.names: list[str] = list(classes)
        self.index = {name: i for i, name in enumerate(self.names)}

    def __call__(self, text: str) -> int:
        index = self.index.get(text)
        if index is None:
            if len(self.names) >= self.limit:
                return _OTHER
            index = self.index[text] = len(self.names)
            self.names.append(text)
        return index

    def columns(self, task: str, parsed: _Parsed, rows: np.ndarray, times: np.ndarray,
                lags: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray | None]:  # fmt: skip
        """The columns of the batch's ``rows``; for classifiers also their per-class probabilities."""
        common = {"time": times, "lag": lags}
        if task == REGRESSION:
            return {"prediction": parsed.prediction[rows], "label": parsed.label[rows], **common}, None
        n = rows.size
        y, predicted, known = np.empty(n, np.int32), np.empty(n, np.int32), np.empty(n, np.int32)
        given = [parsed.probabilities[row] for row in rows.tolist()]
        for i, row in enumerate(rows.tolist()):
            y[i] = self(parsed.label_text[row] or "")
            predicted[i] = self(parsed.predicted_text[row] or "")
            probabilities = given[i]
            if probabilities is not None:
                for name in probabilities:
                    self(name)
            known[i] = len(self.names)  # classes known once this row is in: what a window up to it shows
        matrix = np.zeros((n, len(self.names)))
        has = np.zeros(n, np.uint8)
        for i, probabilities in enumerate(given):
            if probabilities is not None:
                has[i] = 1
                for name, p in probabilities.items():
                    column = self.index.get(name)
                    if column is not None:
                        matrix[i, column] = p
        columns = {"y": y, "predicted": predicted, "correct": parsed.correct[rows].astype(np.uint8),
                   "p_true": parsed.p_true[rows], "score": parsed.score[rows], "has_probabilities": has,
                   "known": known, **common}  # fmt: skip
        return columns, matrix


# -- windows -----------------------------------------------------------------------------------

_CLASS_COLUMNS = {"y": "<i4", "predicted": "<i4", "correct": "|u1", "p_true": "<f8", "score": "<f8",
                  "has_probabilities": "|u1", "known": "<i4"}  # fmt: skip
_REGRESSION_COLUMNS = {"prediction": "<f8", "label": "<f8"}
_COMMON_COLUMNS = {"time": "<f8", "lag": "<f8"}


class _Window:
    """The labeled rows of one window (or of the windows a reference is built from), as columns."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.dtypes = {**(_CLASS_COLUMNS if task == CLASSIFICATION else _REGRESSION_COLUMNS), **_COMMON_COLUMNS}
        self.chunks: dict[str, list[np.ndarray]] = {name: [] for name in self.dtypes}
        self.matrices: list[np.ndarray] = []  # per-class probabilities (classifiers), widths may differ
        self.count = 0
        self.low, self.high = math.inf, -math.inf  # event-time range

    def append(self, columns: dict[str, np.ndarray], matrix: np.ndarray | None = None) -> None:
        for name in self.dtypes:
            self.chunks[name].append(columns[name])
        if self.task == CLASSIFICATION:
            assert matrix is not None
            known, has = columns["known"], columns["has_probabilities"]
            # no columns when it holds no probabilities, else those of the classes known by its last row
            self.matrices.append(matrix[:, : int(known[-1])] if has.any() else matrix[:, :0])
        times = columns["time"]
        self.count += len(times)
        if len(times):
            self.low, self.high = min(self.low, float(times.min())), max(self.high, float(times.max()))

    def extend(self, other: _Window) -> None:
        for name in self.dtypes:
            self.chunks[name] += other.chunks[name]
        self.matrices += other.matrices
        self.count += other.count
        self.low, self.high = min(self.low, other.low), max(self.high, other.high)

    def column(self, name: str) -> np.ndarray:
        chunks = self.chunks[name]
        return np.concatenate(chunks) if chunks else np.empty(0, dtype=self.dtypes[name])

    def matrix(self) -> np.ndarray:
        """Per-class probabilities (rows x classes known by the last row; no columns when none were sent)."""
        width = int(self.chunks["known"][-1][-1]) if any(m.shape[1] for m in self.matrices) else 0
        padded = [np.pad(m, ((0, 0), (0, width - m.shape[1]))) for m in self.matrices]
        return np.concatenate(padded) if padded else np.zeros((0, width))

    @property
    def span(self) -> float:
        return self.high - self.low if self.count else 0.0

    def snapshot(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: np.ascontiguousarray(self.column(name), dtype).tobytes()
                                for name, dtype in self.dtypes.items()}  # fmt: skip
        if self.task == CLASSIFICATION:
            matrix = self.matrix()
            data["matrix"] = [int(matrix.shape[1]), matrix.astype("<f8").tobytes()]
        return data

    @classmethod
    def restore(cls, task: str, data: dict[str, Any]) -> _Window:
        window = cls(task)
        columns = {name: np.frombuffer(data[name], dtype=dtype).copy() for name, dtype in window.dtypes.items()}
        sizes = {len(column) for column in columns.values()}
        if len(sizes) != 1:
            raise SnapshotError(f"window columns of different lengths {sorted(sizes)}")
        rows = sizes.pop()
        matrix = None
        if task == CLASSIFICATION:
            width, raw = int(data["matrix"][0]), data["matrix"][1]
            values = np.frombuffer(raw, dtype="<f8").copy()
            if width < 0 or values.size != width * rows:
                raise SnapshotError("window probabilities do not match its rows")
            matrix = values.reshape(rows, width)
            known = columns["known"]
            sent = bool(columns["has_probabilities"].any())
            if rows and (known.min() < 0 or (np.diff(known) < 0).any() or width != (int(known[-1]) if sent else 0)):
                raise SnapshotError("window classes are not in the order they became known")
        if rows:
            window.append(columns, matrix)
        return window


def _lag_quantiles(lag: np.ndarray) -> tuple[float, float]:
    if not lag.size:
        return math.nan, math.nan
    p50, p95 = np.quantile(lag, (0.5, 0.95))
    return float(p50), float(p95)


# -- the tests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Test:
    statistic: float  # the window's metric
    line: float  # the metric's line at alpha (nan: the test cannot flag this window's size)
    z: float  # z (classifiers) or t (regressors)
    p_value: float
    alpha: float
    reference: float  # the reference's metric


def accuracy_test(count: int, errors: int, reference: QualityReference, alpha: float) -> _Test:
    """Is a window's accuracy (``count`` labeled events, ``errors`` wrong) below the reference's?

    Against a measured reference: Fisher's exact test, one-sided (the window's errors are
    hypergeometric given both samples' total); against a configured accuracy ``a``: the
    binomial tail of the errors at rate ``1 - a``. ``z`` is the two-proportion z (pooled),
    or the one-sample z, for reading.
    """
    accuracy = 1.0 - errors / count
    p_value = _accuracy_p(count, errors, reference)
    if reference.measured:
        n_r, k_r = reference.count, reference.errors
        reference_accuracy = 1.0 - k_r / n_r
        pooled = (errors + k_r) / (count + n_r)
        se = math.sqrt(pooled * (1 - pooled) * (1 / count + 1 / n_r))
    else:
        reference_accuracy = float(reference.accuracy)  # type: ignore[arg-type]
        se = math.sqrt(reference_accuracy * (1 - reference_accuracy) / count)
    gap = accuracy - reference_accuracy
    z = gap / se if se > 0 else (0.0 if gap == 0 else math.copysign(math.inf, gap))
    return _Test(accuracy, math.nan, z, p_value, alpha, reference_accuracy)


def _accuracy_p(count: int, errors: int, reference: QualityReference) -> float:
    if reference.measured:
        n_r, k_r = reference.count, reference.errors
        return float(stats.hypergeom.sf(errors - 1, count + n_r, errors + k_r, count))
    return float(stats.binom.sf(errors - 1, count, 1.0 - reference.accuracy))  # type: ignore[operator]


def accuracy_line(count: int, reference: QualityReference, alpha: float) -> float:
    """The highest accuracy of a window of ``count`` labeled events that ``accuracy_test`` flags at
    ``alpha`` (NaN when none would be). Its p-value falls as the errors grow: a bisection."""
    if _accuracy_p(count, count, reference) >= alpha:
        return math.nan
    low, high = -1, count  # p(low) >= alpha (or none), p(high) < alpha
    while high - low > 1:
        middle = (low + high) // 2
        if middle >= 0 and _accuracy_p(count, middle, reference) < alpha:
            high = middle
        else:
            low = middle
    return 1.0 - high / count


def mae_test(absolute: np.ndarray, reference: QualityReference, alpha: float) -> _Test:
    """Did the mean absolute error rise? One-sided Welch t-test against a measured reference's
    absolute errors, one-sample t-test against a configured MAE."""
    n = absolute.size
    mean = float(absolute.mean())
    var = float(absolute.var(ddof=1)) if n > 1 else 0.0
    if reference.measured:
        n_r, mean_r = reference.count, reference.abs_mean
        var_r = reference.abs_var if n_r > 1 and not math.isnan(reference.abs_var) else 0.0
        a, b = var / n, var_r / n_r
        se = math.sqrt(a + b)
        denominator = (a * a / (n - 1) if n > 1 else 0.0) + (b * b / (n_r - 1) if n_r > 1 else 0.0)
        df = (a + b) ** 2 / denominator if denominator > 0 else float(max(n + n_r - 2, 1))
    else:
        mean_r = float(reference.mae)  # type: ignore[arg-type]
        se = math.sqrt(var / n)
        df = float(max(n - 1, 1))
    gap = mean - mean_r
    if se > 0:
        t = gap / se
        p_value = float(stats.t.sf(t, df))
        line = mean_r + float(stats.t.isf(alpha, df)) * se
    else:
        t = 0.0 if gap == 0 else math.copysign(math.inf, gap)
        p_value = 0.0 if gap > 0 else 1.0
        line = mean_r
    return _Test(mean, line, t, p_value, alpha, mean_r)


# -- one (version, scope) ----------------------------------------------------------------------


class _Track:
    """Quality of one model version in one scope: windows, reference, tests, detector, alerts."""

    def __init__(self, monitor: QualityMonitor, version: str | None, key: str, segment: dict[str, str] | None,
                 task: str, baseline: QualityReference | None) -> None:  # fmt: skip
        self.monitor = monitor
        self.config = monitor.config
        self.lines: QualityLines = monitor.lines
        self.version, self.key, self.segment, self.task = version, key, segment, task
        self.classes = _Classes(self.config.max_classes)
        self.window = _Window(task)
        self.building: _Window | None = _Window(task)  # the first windows, until the stream's reference is built
        self.windows_built = 0
        self.built: QualityReference | None = None
        self.baseline = baseline if baseline is not None and baseline.task == task else None
        expected = monitor.spec.expected
        config_ref = QualityReference.expected(task, expected) if key == "" and expected else None
        self.expected = config_ref if config_ref is not None and config_ref.testable else None
        self.detector: ChangeDetector | None = None
        self.stretch = [0, math.inf, -math.inf, 0.0]  # labels since the detector (re)started, time range, errors
        self.recent = np.empty(0)  # the last _RECENT errors (0/1, or absolute errors)
        self.recent_scores = np.empty(0)  # regressors: the last _SHIFT_ROWS normal scores
        self.policies = {kind: AlertPolicy() for kind in ALERT_TYPES}
        self.pending: list[tuple[int, int, Alert]] = []
        self.windows = 0  # windows closed
        self.last: dict[str, Any] = {}  # the last closed window's metrics: evidence for a change point
        if self.baseline is not None:
            self.building = None
        self._start_detector()

    # -- identity and references

    def describe(self) -> str:
        what = "the model" if self.version is None else f"version {self.version!r}"
        return what if self.segment is None else f"{what} in segment {self.key}"

    @property
    def reference(self) -> QualityReference | None:
        """What the performance test judges against: a baseline, else the config's values, else the stream's."""
        return self.baseline or self.expected or self.built

    @property
    def detector_reference(self) -> QualityReference | None:
        """What the concept-drift detector's lines (and a regressor's normal scores) come from."""
        if self.task == CLASSIFICATION:
            return self.reference
        return self.baseline or self.built

    def _detector_lines(self) -> dict[str, float] | None:
        reference = self.detector_reference
        if reference is None:
            return None
        if self.task == CLASSIFICATION:
            rate = reference.error_rate
            return None if rate is None else self.lines.error_lines(rate)
        if reference.abs_errors is None:
            return None
        return self.lines.regression_lines(reference.count)

    def _fresh_detector(self) -> ChangeDetector | None:
        lines = self._detector_lines()
        if lines is None:
            return None
        regression = self.task == REGRESSION
        name = self.config.regression_detector if regression else self.config.error_detector
        detector: ChangeDetector = quality_detector(self.config, name, regression=regression, lines=lines)
        return detector

    def _start_detector(self) -> None:
        if self.detector is None:
            self.detector = self._fresh_detector()
            self.stretch = [0, math.inf, -math.inf, 0.0]

    def use_baseline(self, baseline: QualityReference | None) -> bool:
        """Judge against a newly loaded baseline from the next window on; whether anything changed."""
        if baseline is not None and baseline.task != self.task:
            baseline = None
        current = None if self.baseline is None else self.baseline.to_plain()
        if (None if baseline is None else baseline.to_plain()) == current:
            return False
        self.baseline = baseline
        if baseline is not None:
            self.building = None  # the stream's reference is no longer needed
        elif self.built is None and self.building is None:
            self.building = _Window(self.task)
        self.detector = None  # its lines (and a regressor's scores) were for the old reference
        self._start_detector()
        for state in self.policies[CONCEPT_DRIFT].states.values():
            state.since_count, state.since_time = 0, math.nan
        return True

    # -- the stream

    def feed(self, parsed: _Parsed, rows: np.ndarray, index: np.ndarray, times: np.ndarray, lags: np.ndarray,
             out: Observation) -> None:  # fmt: skip
        """Feed the batch's ``rows`` of this track (valid, in label order): change points at once,
        windows judged as they close, one closing at a time, so any batching gives the same."""
        columns, matrix = self.classes.columns(self.task, parsed, rows, times, lags)
        n, start = rows.size, 0
        while start < n:
            stop = self._next_close(times, start, n)
            chunk = {name: column[start:stop] for name, column in columns.items()}
            if self.detector is not None:
                self._detect(chunk, index[start:stop], out)
            self.window.append(chunk, None if matrix is None else matrix[start:stop])
            if self._full():
                self._close(int(index[stop - 1]), out)
            start = stop
        self._settle(out)

    def _next_close(self, times: np.ndarray, start: int, n: int) -> int:
        # at least one row: a window restored under a smaller quality_window closes at the next one
        stop = min(n, start + max(self.config.quality_window - self.window.count, 1))
        seconds = self.config.quality_window_seconds
        if seconds > 0 and stop > start:
            part = times[start:stop]
            low = np.minimum.accumulate(np.concatenate(([self.window.low], part)))[1:]
            high = np.maximum.accumulate(np.concatenate(([self.window.high], part)))[1:]
            reached = np.flatnonzero(high - low >= seconds)
            if reached.size:
                stop = start + int(reached[0]) + 1
        return stop

    def _full(self) -> bool:
        seconds = self.config.quality_window_seconds
        return self.window.count >= self.config.quality_window or (
            seconds > 0 and self.window.count > 0 and self.window.span >= seconds)  # fmt: skip

    def _errors(self, chunk: dict[str, np.ndarray]) -> np.ndarray:
        if self.task == CLASSIFICATION:
            return 1.0 - chunk["correct"].astype(np.float64)
        return np.abs(chunk["prediction"] - chunk["label"])

    def _detect(self, chunk: dict[str, np.ndarray], index: np.ndarray, out: Observation) -> None:
        """The error stream's change points in this chunk."""
        detector = self.detector
        assert detector is not None
        errors = self._errors(chunk)
        times = chunk["time"]
        scores = None
        if self.task == REGRESSION:
            reference = self.detector_reference
            assert reference is not None and reference.abs_errors is not None
            scores = reference.abs_errors.normal_scores(errors)
            verdicts = detector.update(scores)
        elif isinstance(detector, BinaryDetector):
            verdicts = detector.update_zones(errors)
        else:
            verdicts = detector.update(errors)
        name = detector.name
        zones = isinstance(detector, BinaryDetector)  # its verdicts: "warning" zone entries, "critical" drifts
        done = 0
        for verdict in verdicts:
            upto = verdict.position + 1
            self._stretch(errors[done:upto], times[done:upto])
            recent = np.concatenate([self.recent, errors[:upto]])[-_RECENT:]
            shift = verdict.shift
            if scores is not None and shift is None:
                shift = float(np.concatenate([self.recent_scores, scores[:upto]])[-_SHIFT_ROWS:].mean())
            warning_zone = zones and verdict.severity == "warning"
            self._on_change(name, verdict, warning_zone, shift, recent, int(index[verdict.position]))
            done = upto
            if not warning_zone:  # a drift: the detector starts a new stretch
                self.stretch = [0, math.inf, -math.inf, 0.0]
        self._stretch(errors[done:], times[done:])
        self.recent = np.concatenate([self.recent, errors])[-_RECENT:]
        if scores is not None:
            self.recent_scores = np.concatenate([self.recent_scores, scores])[-_SHIFT_ROWS:]
        out.statistics[(self.version, self.key, QUALITY, name)] = float(detector.statistic)

    def _stretch(self, errors: np.ndarray, times: np.ndarray) -> None:
        if errors.size:
            count, low, high, total = self.stretch
            # summed one value after another: the same to the last bit however the stream is batched
            self.stretch = [int(count) + int(errors.size), min(float(low), float(times.min())),
                            max(float(high), float(times.max())), float(carried(np.add, float(total), errors)[-1])]

    def _on_change(self, detector: str, verdict: Verdict, warning_zone: bool, shift: float | None,
                   recent: np.ndarray, index: int) -> None:  # fmt: skip
        if not warning_zone and shift is not None and shift <= 0:
            return  # the errors fell: the model got better, no alert
        severity: Severity = "warning" if warning_zone else "critical"
        policy = self.policies[CONCEPT_DRIFT]
        if not policy.on_change(detector, severity, index):
            return
        count, low, high, total = self.stretch
        what = "errors" if self.task == CLASSIFICATION else "absolute errors"
        current: dict[str, Any] = {"count": int(count), "recent_count": int(recent.size)}
        if self.last:
            current["last_window"] = dict(self.last)
        if self.task == CLASSIFICATION:
            current.update(error_rate=total / count if count else 0.0,
                           recent_error_rate=float(recent.mean()) if recent.size else 0.0)  # fmt: skip
            how = f"the error rate of its last {recent.size} labeled events is {current['recent_error_rate']:.3f}"
        else:
            current.update(mae=total / count if count else 0.0,
                           recent_mae=float(recent.mean()) if recent.size else 0.0)  # fmt: skip
            if shift is not None:
                current["shift_normal_scores"] = shift
            how = f"the mean absolute error of its last {recent.size} labeled events is {current['recent_mae']:.4g}"
        reference = self.reference
        if reference is not None:
            line = reference.error_rate if self.task == CLASSIFICATION else reference.mae
            if line is not None:
                how += f" against {line:.4g} in the reference"
        zone = "entered its warning zone" if warning_zone else "detected a change"
        message = (f"{detector} {zone} in the {what} of {self.describe()} after {int(count)} labeled events since "
                   f"its last restart: {how} (concept drift, {severity})")  # fmt: skip
        at = float(high) if math.isfinite(high) else math.nan
        self.pending.append((index, _CHANGE, self._alert(
            CONCEPT_DRIFT, "firing", severity, detector, verdict.statistic, verdict.threshold, None, index,
            int(count), float(low), at, message, current)))  # fmt: skip

    # -- window close

    def _close(self, index: int, out: Observation) -> None:
        window, self.window = self.window, _Window(self.task)
        self.windows += 1
        out.windows_judged += 1
        current, metrics, errors = self._measure(window)
        for metric, value in metrics.items():
            out.quality[(self.version, self.key, metric)] = value
        lag_p50, lag_p95 = _lag_quantiles(window.column("lag"))
        out.quality[(self.version, self.key, "label_lag_p50")] = lag_p50
        out.quality[(self.version, self.key, "label_lag_p95")] = lag_p95
        coverage = self.monitor.coverage if self.key == "" else None
        if coverage is not None:
            out.quality[(self.version, self.key, "coverage")] = coverage
            current["coverage"] = coverage
        current["label_lag_p50"] = lag_p50
        self.last = {"count": window.count, **metrics}
        judged = window.count >= min(MIN_JUDGED, self.config.quality_window)
        judged_reference = self.reference if judged else None
        if self.building is not None and self.built is None:
            self.building.extend(window)
            self.windows_built += 1
            enough = self.building.count >= min(MIN_JUDGED, self.config.quality_window)
            if self.windows_built >= self.config.quality_reference_windows and enough:
                self.built = _reference_of(self.building, self.classes.names, self._positive(), "stream",
                                           self.config.psi_bins, self.config.reference_points)  # fmt: skip
                self.building = None
                self._start_detector()
        context = (index, window, current)
        self._resolve_dropped(context)
        self._review_changes(context)
        if judged_reference is not None:
            self._performance(judged_reference, errors, context, out)
        if judged:
            self._floors(metrics, context)
            self._health(lag_p50, coverage, context)

    def _positive(self) -> tuple[str | None, str | None]:
        """The configured positive class, and the kind of the version's labels."""
        info = self.monitor.infos.get(self.version)
        return self.monitor.spec.positive_class, None if info is None else info.label_kind

    def _measure(self, window: _Window) -> tuple[dict[str, Any], dict[str, float], np.ndarray]:
        """The window's evidence, its metrics, and its errors (0/1, or absolute)."""
        if self.task == REGRESSION:
            prediction, label = window.column("prediction"), window.column("label")
            metrics = regression_metrics(prediction, label)
            current = {"count": window.count, **metrics, "errors": error_summary(prediction, label)}
            return current, metrics, np.abs(prediction - label)
        metrics, matrix, labels = _class_metrics(window, self.classes.names, self._positive())
        correct = window.column("correct").astype(bool)
        current = {"count": window.count, **metrics, "error_rate": 1.0 - metrics["accuracy"],
                   "confusion": {"labels": labels, "matrix": matrix.tolist()}}  # fmt: skip
        return current, metrics, (~correct).astype(np.float64)

    def _performance(self, reference: QualityReference, errors: np.ndarray,
                     context: tuple[int, _Window, dict[str, Any]], out: Observation) -> None:  # fmt: skip
        index, window, current = context
        alpha = self.lines.performance_alpha(window.count)
        if self.task == CLASSIFICATION:
            test = accuracy_test(window.count, int(errors.sum()), reference, alpha)
            detector, metric, letter = ACCURACY_TEST, "accuracy", "z"
            drop = test.reference - test.statistic
            critical = drop >= self.config.performance_critical_drop
        else:
            test = mae_test(errors, reference, alpha)
            detector, metric, letter = MAE_TEST, "MAE", "t"
            rise = test.statistic - test.reference
            limit = self.config.performance_critical_rise
            critical = rise > 0 if test.reference == 0 else rise / test.reference >= limit
        out.statistics[(self.version, self.key, QUALITY, detector)] = test.z
        severity: Severity | None = None
        if test.p_value < alpha:
            severity = "critical" if critical else "warning"
        elif test.p_value < math.sqrt(alpha):
            # Still worse than the reference at a looser level: a firing alert stands (a drop that sits
            # at the line would otherwise fire and resolve window after window).
            severity = self.policies[PERFORMANCE].firing(detector)
        decision = self.policies[PERFORMANCE].on_window(detector, severity)
        if decision is None:
            return
        status, severity = decision
        numbers = f"{letter}={test.z:.1f}, p={test.p_value:.2g}, alpha {alpha:.2g}"
        if status == "firing":
            message = (f"{metric} of {self.describe()} is {test.statistic:.4g} against {test.reference:.4g} in the "
                       f"reference over {window.count} labeled events ({numbers}, {severity})")  # fmt: skip
        else:
            message = (f"{metric} of {self.describe()} is back to {test.statistic:.4g} against {test.reference:.4g} "
                       f"in the reference over {window.count} labeled events ({numbers})")  # fmt: skip
        line = accuracy_line(window.count, reference, alpha) if self.task == CLASSIFICATION else test.line
        line = line if math.isfinite(line) else test.reference
        self._window_alert(PERFORMANCE, status, severity, detector, test.statistic, line, test.p_value, context,
                           message, reference)  # fmt: skip

    def _floors(self, metrics: dict[str, float], context: tuple[int, _Window, dict[str, Any]]) -> None:
        floors = self.monitor.spec.floors
        if not floors and self.policies[PERFORMANCE].firing(FLOOR) is None:
            return
        past = [(metric, metrics[metric], floor) for metric, floor in floors.items()
                if metric in metrics and past_floor(metric, metrics[metric], floor)]  # fmt: skip
        severity: Severity | None = "critical" if past else None
        decision = self.policies[PERFORMANCE].on_window(FLOOR, severity)
        if decision is None:
            return
        status, severity = decision
        _, window, _ = context
        if past:
            # the worst first: the largest distance past its floor, relative to the floor
            past.sort(key=lambda p: (-abs(p[1] - p[2]) / max(abs(p[2]), 1e-12), p[0]))
            metric, value, floor = past[0]
            side = ">=" if metric in HIGHER_IS_BETTER else "<="
            listed = ", ".join(f"{m} {v:.4g} (floor {f:.4g})" for m, v, f in past)
            message = (f"{self.describe()} is past its quality floor over {window.count} labeled events: {listed}; "
                       f"{metric} must stay {side} {floor:.4g} (critical)")  # fmt: skip
        else:
            floors_set = [m for m in floors if m in metrics] or list(floors)
            metric = floors_set[0]
            value, floor = metrics.get(metric, math.nan), floors[metric]
            message = f"{self.describe()} is back within its quality floors over {window.count} labeled events"
        self._window_alert(PERFORMANCE, status, severity, FLOOR, value, floor, None, context, message,
                           self.reference)  # fmt: skip

    def _health(self, lag_p50: float, coverage: float | None, context: tuple[int, _Window, dict[str, Any]]) -> None:
        _, window, _ = context
        limit = self.config.label_lag_max
        if limit > 0:
            late = not math.isnan(lag_p50) and lag_p50 > limit
            decision = self.policies[DATA_QUALITY].on_window(LABEL_LAG, "warning" if late else None)
            if decision is not None:
                status, severity = decision
                verb = "arrive" if status == "firing" else "are back to arriving"
                message = (f"labels of {self.describe()} {verb} a median {lag_p50:.0f} s after their predictions "
                           f"over {window.count} labeled events (line {limit:g} s)")  # fmt: skip
                self._window_alert(DATA_QUALITY, status, severity, LABEL_LAG, lag_p50, limit, None, context,
                                   message, None)  # fmt: skip
        minimum = self.config.label_coverage_min
        if minimum > 0 and self.key == "" and coverage is not None:
            low = coverage < minimum
            decision = self.policies[DATA_QUALITY].on_window(LABEL_COVERAGE, "warning" if low else None)
            if decision is not None:
                status, severity = decision
                message = (f"{coverage:.1%} of the stored predictions of {self.describe()} are labeled "
                           f"({'under' if low else 'back over'} the line {minimum:.1%})")  # fmt: skip
                self._window_alert(DATA_QUALITY, status, severity, LABEL_COVERAGE, coverage, minimum, None, context,
                                   message, None)  # fmt: skip

    def _review_changes(self, context: tuple[int, _Window, dict[str, Any]]) -> None:
        """At a window close: a concept-drift alert with no change point for resolve_after labels resolves."""
        index, window, current = context
        policy = self.policies[CONCEPT_DRIFT]
        for detector in sorted(policy.states):
            quiet = policy.quiet_for(detector, index)
            if quiet is not None and quiet >= self.config.resolve_after:
                last = policy.state(detector).last_change
                message = (f"{detector} on {self.describe()}: no change point in the {quiet} labeled events since "
                           f"the last one (label {last}); the detector has adapted to the new error level")  # fmt: skip
                self._resolve(CONCEPT_DRIFT, detector, _REVIEW, message, float(quiet),
                              float(self.config.resolve_after), context)  # fmt: skip

    def _resolve_dropped(self, context: tuple[int, _Window, dict[str, Any]]) -> None:
        """Alerts of detectors the config no longer runs (restored from another config) resolve."""
        index, window, current = context
        running = {self.detector.name} if self.detector is not None else set()
        policy = self.policies[CONCEPT_DRIFT]
        for detector in sorted(policy.states):
            if detector not in running and policy.firing(detector) is not None:
                message = f"{detector} on {self.describe()}: no longer run (the config dropped it); its alert resolves"
                self._resolve(CONCEPT_DRIFT, detector, _WINDOW, message, 0.0, 0.0, context)
        health = self.policies[DATA_QUALITY]
        options = ((LABEL_LAG, self.config.label_lag_max), (LABEL_COVERAGE, self.config.label_coverage_min))
        for detector, option in options:
            if option <= 0 and health.firing(detector) is not None:
                message = f"{detector} on {self.describe()}: turned off; its alert resolves"
                self._resolve(DATA_QUALITY, detector, _WINDOW, message, 0.0, 0.0, context)

    def _resolve(self, kind: str, detector: str, phase: int, message: str, statistic: float, threshold: float,
                 context: tuple[int, _Window, dict[str, Any]]) -> None:  # fmt: skip
        """End a detector's firing alert and queue the resolved alert it sends (of the window ``context``)."""
        index, window, current = context
        severity = self.policies[kind].resolve(detector)
        self.pending.append((index, phase, self._alert(kind, "resolved", severity, detector, statistic, threshold,
                                                       None, index, window.count, window.low, window.high, message,
                                                       current)))  # fmt: skip

    def _window_alert(self, kind: str, status: Status, severity: Severity, detector: str, statistic: float,
                      threshold: float, p_value: float | None, context: tuple[int, _Window, dict[str, Any]],
                      message: str, reference: QualityReference | None) -> None:  # fmt: skip
        index, window, current = context
        self.pending.append((index, _WINDOW, self._alert(
            kind, status, severity, detector, statistic, threshold, p_value, index, window.count, window.low,
            window.high, message, current, reference)))  # fmt: skip

    def _alert(self, kind: str, status: Status, severity: Severity, detector: str, statistic: float,
               threshold: float, p_value: float | None, index: int, count: int, start: float, end: float,
               message: str, current: dict[str, Any], reference: QualityReference | None = None) -> Alert:  # fmt: skip
        reference = reference if reference is not None else self.reference
        return Alert(
            type=kind,
            status=status,
            severity=severity,
            feature=None,
            detector=detector,
            statistic=float(statistic),
            threshold=float(threshold),
            p_value=None if p_value is None else float(p_value),
            event_index=index,
            window_count=int(count),
            window_start=start if math.isfinite(start) else end,
            window_end=end,
            reference=reference.summary if reference is not None else {},
            current=dict(current),
            message=message,
            version=self.version,
            segment=self.segment,
            detectors=(detector,),
        )

    # -- incidents

    def _settle(self, out: Observation) -> None:
        """The pending alerts, in event order, as their incidents send them (one per alert type)."""
        pending, self.pending = sorted(self.pending, key=lambda entry: entry[:2]), []
        per_detector = self.config.alert_per_detector
        event: list[Alert] = []
        for position, (index, _, alert) in enumerate(pending):
            policy = self.policies[alert.type]
            decision = policy.incident(alert.detector, alert.status, alert.severity)
            if per_detector:
                out.alerts.append(alert)
            elif decision is not None:
                status, severity, detectors = decision
                event.append(dataclasses.replace(alert, status=status, severity=severity, detectors=detectors))
            if event and (position + 1 == len(pending) or pending[position + 1][0] != index):
                out.alerts += (self._named(alert) for alert in event)
                event = []

    def _named(self, alert: Alert) -> Alert:
        detectors = alert.detectors
        if alert.status == "firing":
            detectors = self.policies[alert.type].firing_in(incident_of(alert.detector)) or detectors
        others = [name for name in detectors if name != alert.detector]
        if not others:
            return dataclasses.replace(alert, detectors=detectors)
        also = "also firing" if alert.status == "firing" else "also fired during the incident"
        return dataclasses.replace(alert, detectors=detectors, message=f"{alert.message}; {also}: {', '.join(others)}")

    def close(self, index: int, at: float, reason: str) -> list[Alert]:
        """Resolve everything this track is firing: it stops (its version retired)."""
        closed = Observation()
        self._settle(closed)
        ended = _Window(self.task)  # the window it was filling, as far as it got
        ended.count, ended.low, ended.high = self.window.count, at, at
        context = (index, ended, {"count": self.window.count})
        for kind, policy in self.policies.items():
            for detector in sorted(policy.states):
                if policy.firing(detector) is not None:
                    self._resolve(kind, detector, _WINDOW, f"{detector} on {self.describe()}: closed, {reason}",
                                  float(self.config.max_versions + 1), float(self.config.max_versions), context)
        self._settle(closed)
        return closed.alerts

    # -- snapshots

    def snapshot(self) -> dict[str, Any]:
        count, low, high, total = self.stretch
        return {
            "task": self.task,
            "classes": list(self.classes.names),
            "window": self.window.snapshot(),
            "building": None if self.building is None else self.building.snapshot(),
            "windows_built": self.windows_built,
            "built": None if self.built is None else self.built.to_plain(),
            "detector": None if self.detector is None else self.detector.snapshot(),
            "stretch": [int(count), None if math.isinf(low) else float(low), None if math.isinf(high) else float(high),
                        float(total)],
            "recent": self.recent.astype("<f8").tobytes(),
            "recent_scores": self.recent_scores.astype("<f8").tobytes(),
            "policies": {kind: [policy.snapshot(), policy.incidents_snapshot()]
                         for kind, policy in self.policies.items()},
            "windows": self.windows,
            "last": dict(self.last),
        }  # fmt: skip

    @classmethod
    def restore(cls, monitor: QualityMonitor, version: str | None, key: str, segment: dict[str, str] | None,
                data: dict[str, Any], baseline: QualityReference | None) -> _Track:  # fmt: skip
        task = data["task"]
        if task not in (CLASSIFICATION, REGRESSION):
            raise SnapshotError(f"quality track has task {task!r}")
        track = cls(monitor, version, key, segment, task, None)
        classes = [str(c) for c in data["classes"]]
        if len(set(classes)) != len(classes):
            raise SnapshotError(f"quality track repeats a class: {classes!r}")
        track.classes = _Classes(max(monitor.config.max_classes, len(classes)), classes)
        track.window = _Window.restore(task, data["window"])
        track.building = None if data["building"] is None else _Window.restore(task, data["building"])
        track.windows_built = int(data["windows_built"])
        track.built = None if data["built"] is None else QualityReference.from_plain(data["built"])
        count, low, high, total = data["stretch"]
        track.stretch = [int(count), math.inf if low is None else float(low),
                         -math.inf if high is None else float(high), float(total)]  # fmt: skip
        track.recent = np.frombuffer(data["recent"], dtype="<f8").copy()
        track.recent_scores = np.frombuffer(data["recent_scores"], dtype="<f8").copy()
        if track.recent.size > _RECENT or track.recent_scores.size > _SHIFT_ROWS:
            raise SnapshotError("quality track keeps too many recent errors")
        policies = data["policies"]
        if set(policies) != set(ALERT_TYPES):
            raise SnapshotError(f"quality track policies {sorted(policies)} are not {sorted(ALERT_TYPES)}")
        track.policies = {kind: AlertPolicy.restore(states, incidents)
                          for kind, (states, incidents) in policies.items()}  # fmt: skip
        track.windows = int(data["windows"])
        last = data["last"]
        if not isinstance(last, dict):
            raise SnapshotError(f"quality track's last window must be a mapping, got {last!r}")
        track.last = {str(k): v for k, v in last.items()}
        track.baseline = baseline if baseline is not None and baseline.task == task else None
        if track.baseline is not None:
            track.building = None
        track.detector = None
        fresh = track._fresh_detector()
        saved = data["detector"]
        if fresh is not None and saved is not None and saved.get("params") == fresh.snapshot()["params"]:
            track.detector = type(fresh).restore(saved)
        else:  # none yet, or built for other lines (the budget, an option or the reference changed): afresh
            track.detector = fresh
            if saved is not None:
                track.stretch = [0, math.inf, -math.inf, 0.0]
        return track


def _class_metrics(window: _Window, classes: list[str], positive_of: tuple[str | None, str | None]
                   ) -> tuple[dict[str, float], np.ndarray, list[str]]:  # fmt: skip
    """A classifier window's metrics, its confusion matrix and the matrix's classes.

    The classes are those known by the window's last row (in the order they came), so a
    window's numbers do not depend on rows after it. Binary metrics when exactly two are
    known and none past ``max_classes``: of the configured positive class, else "true" for
    boolean labels, else "1" or "true" when known, else the second of the two in sorted order.
    """
    k = int(window.column("known")[-1]) if window.count else 0
    known = classes[:k]
    y = window.column("y").astype(np.int64)
    predicted = window.column("predicted").astype(np.int64)
    y[y == _OTHER], predicted[predicted == _OTHER] = k, k
    configured, label_kind = positive_of
    positive: int | None = None
    if k == 2 and not ((y == k).any() or (predicted == k).any()):
        name = configured or ("true" if label_kind == "bool" else None)
        if name is None:
            name = "1" if "1" in known else "true" if "true" in known else sorted(known)[1]
        positive = known.index(name) if name in known else None
    matrix = window.matrix()
    has = window.column("has_probabilities").astype(bool)
    scores = None
    if positive is not None:
        scores = window.column("score").copy()
        if matrix.shape[1]:
            scores[has] = matrix[has, positive]
    probabilities = None
    if matrix.shape[1]:
        probabilities = np.where(has[:, None], matrix, np.nan)
    metrics, confusion = classification_metrics(y, predicted, window.column("correct").astype(bool), k + 1,
                                                positive, scores, probabilities, window.column("p_true"))  # fmt: skip
    labels = list(known)
    if confusion[k].sum() or confusion[:, k].sum():
        labels.append(OTHER_CLASS)
    else:
        confusion = confusion[:k, :k]
    return metrics, confusion, labels


def _reference_of(rows: _Window, classes: list[str], positive_of: tuple[str | None, str | None], source: str,
                  bins: int = 10, points: int = DEFAULT_REFERENCE_POINTS) -> QualityReference:  # fmt: skip
    """A measured reference from labeled rows."""
    if rows.task == CLASSIFICATION:
        metrics, matrix, labels = _class_metrics(rows, classes, positive_of)
        errors = int(rows.count - int(rows.column("correct").astype(np.int64).sum()))
        return QualityReference(CLASSIFICATION, rows.count, FrozenMap(metrics), source, errors, tuple(labels),
                                tuple(tuple(int(x) for x in row) for row in matrix.tolist()))  # fmt: skip
    prediction, label = rows.column("prediction"), rows.column("label")
    absolute = np.abs(prediction - label)
    return QualityReference(
        REGRESSION, rows.count, FrozenMap(regression_metrics(prediction, label)), source,
        abs_errors=NumericReference.build(absolute, max(bins, 2), points=points),
        abs_mean=float(absolute.mean()), abs_var=float(absolute.var(ddof=1)) if rows.count > 1 else 0.0,
        errors_summary=error_summary(prediction, label),
    )  # fmt: skip


def quality_reference(rows: LabeledRows, spec: QualitySpec, max_classes: int = 20, *,
                      points: int = DEFAULT_REFERENCE_POINTS) -> QualityReference:  # fmt: skip
    """The reference quality of labeled rows (a baseline: ``driftstream baseline --label-column``).

    The task is ``spec.task``, or what the first row with a usable label shows; rows that are
    not of it (a missing label or prediction, a text label for a regressor) are left out.
    Raises ValueError when no row is usable.
    """
    if not isinstance(max_classes, int) or isinstance(max_classes, bool) or max_classes < 2:
        raise ValueError(f"max_classes must be an integer >= 2, got {max_classes!r}")
    info = _Version(None if spec.task == "auto" else spec.task, spec.positive_class)
    parsed = _parse(rows, _AllVersions(info), spec.score_threshold)
    valid = np.flatnonzero(parsed.valid)
    if info.task is None or not valid.size:
        raise ValueError("no labeled row with a usable label and prediction to build a quality reference from")
    times = np.asarray(rows.event_times, dtype=np.float64)
    lags = np.asarray(rows.label_times, dtype=np.float64) - times
    classes = _Classes(max_classes)
    columns, matrix = classes.columns(info.task, parsed, valid, times[valid], lags[valid])
    window = _Window(info.task)
    window.append(columns, matrix)
    return _reference_of(window, classes.names, (spec.positive_class, info.label_kind), "baseline", points=points)


class _AllVersions(Mapping[str | None, _Version]):
    """Every version of a baseline's rows read as one."""

    def __init__(self, info: _Version) -> None:
        self.info = info

    def __getitem__(self, key: str | None) -> _Version:
        return self.info

    def __iter__(self) -> Iterator[str | None]:
        return iter([None])

    def __len__(self) -> int:
        return 1


# -- the model ---------------------------------------------------------------------------------


class _Scope:
    def __init__(self, key: str = "", segment: dict[str, str] | None = None) -> None:
        self.key, self.segment = key, segment
        self.tracks: dict[str | None, _Track] = {}  # by model version


class QualityMonitor:
    """Quality of one model (within one labels partition): per (version, scope) quality windows,
    the performance test, the concept-drift detector on the error stream, label lag/coverage lines."""

    def __init__(self, model: str, config: MonitorConfig, spec: QualitySpec = QualitySpec(), *,
                 segments: Sequence[SliceSpec] = (),
                 references: dict[str | None, QualityReference] | None = None) -> None:  # fmt: skip
        self.model = model
        self.config = config
        self.spec = spec
        self.slices = tuple(tuple(s) for s in segments)
        self.references = dict(references or {})
        self.lines = quality_lines(config, len(self.slices))  # the model's budget share per labeled value
        self.whole = _Scope()
        self.tracked: dict[str, _Scope] = {}
        self.versions: dict[str | None, int] = {}  # live versions -> the index of their last label
        self.infos: dict[str | None, _Version] = {}
        self.labels_seen = 0
        self.other_labels = 0  # labels of segment values beyond max_segments
        self.versions_retired = 0
        # The latest label coverage the caller passed: read live from shared counters, so it is not
        # part of the snapshot (a replay must rebuild the same state whenever it reads them).
        self.coverage: float | None = None

    @property
    def scopes(self) -> list[_Scope]:
        return [self.whole, *self.tracked.values()]

    def firing(self) -> list[tuple[str | None, str, str, str, tuple[str, ...]]]:
        """What fires now, per (version, scope key, alert type): the highest severity and the detectors
        firing (from the alert policy's states, so alike with incidents or alerts per detector)."""
        found = []
        for scope in self.scopes:
            for version, track in scope.tracks.items():
                for kind, policy in track.policies.items():
                    standing = {name: state.severity for name, state in policy.states.items() if state.severity}
                    if standing:
                        severity = "critical" if "critical" in standing.values() else "warning"
                        found.append((version, scope.key, kind, severity, tuple(sorted(standing))))
        return found

    def baseline_of(self, version: str | None) -> QualityReference | None:
        return self.references.get(version, self.references.get(None))

    # -- the stream

    def observe(self, rows: LabeledRows, coverage: float | None = None) -> Observation:
        """Apply labeled rows (in the order they were applied); ``coverage`` is the share of
        the model's stored predictions labeled, when known."""
        out = Observation()
        if coverage is not None and math.isfinite(coverage):
            self.coverage = float(coverage)
        start, n = 0, len(rows)
        while start < n:
            # A version this batch retired that comes back in it meets a fresh monitor, as it would
            # one label at a time: the rows before it go first (a loop: late labels of many versions
            # can interleave at every row).
            part = rows if start == 0 else rows.rows(start, n)
            cut = None if set(part.versions) <= self.versions.keys() else self._version_cut(list(part.versions))
            if cut is not None:
                part = part.rows(0, cut)
            out.merge(self._observe(part))
            start += len(part)
        return out

    def _observe(self, rows: LabeledRows) -> Observation:
        """Apply rows in which no version retired by an earlier row comes back."""
        out = Observation()
        n = len(rows)
        versions = list(rows.versions)
        index = np.arange(self.labels_seen, self.labels_seen + n)
        retired = self._see_versions(versions, index)
        out.retired_versions = [version for version, _ in retired]
        for version in set(versions):
            if version not in self.infos:
                baseline = self.baseline_of(version)
                task = self.spec.task if self.spec.task != "auto" else (baseline.task if baseline else None)
                self.infos[version] = _Version(task, self.spec.positive_class)
        parsed = _parse(rows, self.infos, self.spec.score_threshold)
        out.invalid_values += int(n - parsed.valid.sum())
        times = np.asarray(rows.event_times, dtype=np.float64)
        lags = np.asarray(rows.label_times, dtype=np.float64) - times
        members = {self.whole: list(range(n)), **self._segment_rows(rows)}
        for scope, scope_rows in members.items():
            groups: dict[str | None, list[int]] = {}
            for row in scope_rows:
                if parsed.valid[row]:
                    groups.setdefault(versions[row], []).append(row)
            for version, group in groups.items():
                track = scope.tracks.get(version)
                if track is None:
                    task = self.infos[version].task
                    assert task is not None
                    baseline = self.baseline_of(version) if scope is self.whole else None
                    track = scope.tracks[version] = _Track(self, version, scope.key, scope.segment, task, baseline)
                at = np.asarray(group, dtype=np.intp)
                track.feed(parsed, at, index[at], times[at], lags[at], out)
        for version, row in retired:  # after its windows of this batch, as one label at a time would
            reason = (f"version {version!r} retired: {self.config.max_versions} more recently labeled versions "
                      f"are live (max_versions)")  # fmt: skip
            self.infos.pop(version, None)
            for scope in self.scopes:
                track = scope.tracks.pop(version, None)
                if track is not None:
                    out.alerts += track.close(int(index[row]), float(times[row]), reason)
        rank = {scope.key: position for position, scope in enumerate(self.scopes)}
        out.alerts.sort(key=lambda a: (a.event_index, rank.get(segment_key(a.segment) if a.segment else "", 0),
                                       a.version or "", a.version is not None))  # fmt: skip
        self.labels_seen += n
        return out

    def _version_cut(self, versions: list[str | None]) -> int | None:
        """The first row whose version this batch retired at an earlier row, or None."""
        return version_cut(self.versions, versions, self.config.max_versions, self.labels_seen)

    def _see_versions(self, versions: list[str | None], index: np.ndarray) -> list[tuple[str | None, int]]:
        live = self.versions
        retired: list[tuple[str | None, int]] = []
        for row, version in enumerate(versions):
            if version not in live and len(live) >= self.config.max_versions:
                oldest = min(live, key=live.__getitem__)
                del live[oldest]
                retired.append((oldest, row))
                self.versions_retired += 1
            live[version] = int(index[row])
        return retired

    def _segment_rows(self, rows: LabeledRows) -> dict[_Scope, list[int]]:
        """Rows of each tracked segment value; new values tracked while there is room, in label order."""
        members: dict[_Scope, list[int]] = {}
        if not self.slices:
            return members
        candidates: list[tuple[int, int, str, dict[str, str], list[int]]] = []
        for position, spec in enumerate(self.slices):
            for texts, group in _group_rows(rows.segments, spec).items():
                value = dict(zip(spec, texts, strict=True))
                key = segment_key(value)
                scope = self.tracked.get(key)
                if scope is None:
                    candidates.append((group[0], position, key, value, group))
                else:
                    members[scope] = group
        for _, _, key, value, group in sorted(candidates, key=lambda c: (c[0], c[1])):
            if len(self.tracked) >= self.config.max_segments:
                self.other_labels += len(group)
                continue
            scope = self.tracked[key] = _Scope(key, value)
            members[scope] = group
        return members

    # -- baselines

    def rebase(self, references: dict[str | None, QualityReference]) -> list[str]:
        """Judge the whole model against newly loaded baselines from the next window on.

        A version whose baseline differs from the one it judges against gets it, and its
        concept-drift detector starts afresh (its lines come from the reference); firing
        alerts resolve or stand at its next window. Returns what changed.
        """
        self.references = dict(references)
        changed: list[str] = []
        for version, track in self.whole.tracks.items():
            if track.use_baseline(self.baseline_of(version)):
                changed.append(QUALITY if version is None else f"{QUALITY}@{version}")
        return changed

    # -- snapshots

    def snapshot(self) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "model": self.model,
            "labels_seen": self.labels_seen,
            "versions": [[version, last] for version, last in self.versions.items()],
            "versions_retired": self.versions_retired,
            "other_labels": self.other_labels,
            "infos": [[version, info.snapshot()] for version, info in self.infos.items()],
            "scopes": [[scope.key, {"segment": scope.segment,
                                    "tracks": [[version, track.snapshot()] for version, track in scope.tracks.items()]}]
                       for scope in self.scopes],
        }  # fmt: skip

    @classmethod
    def restore(cls, data: Any, config: MonitorConfig, spec: QualitySpec = QualitySpec(), *,
                segments: Sequence[SliceSpec] = (),
                references: dict[str | None, QualityReference] | None = None) -> QualityMonitor:  # fmt: skip
        version = data.get("v") if isinstance(data, dict) else None
        if version != SNAPSHOT_VERSION:
            raise SnapshotError(f"quality snapshot version {version!r} is not {SNAPSHOT_VERSION}")
        try:
            monitor = cls(str(data["model"]), config, spec, segments=segments, references=references)
            monitor.labels_seen = int(data["labels_seen"])
            monitor.versions = {_version(v): int(last) for v, last in data["versions"]}
            monitor.versions_retired = int(data["versions_retired"])
            monitor.other_labels = int(data["other_labels"])
            monitor.infos = {_version(v): _Version.restore(info) for v, info in data["infos"]}
            for key, scope_data in data["scopes"]:
                segment = scope_data["segment"]
                if segment is not None and not (isinstance(segment, dict) and all(
                        isinstance(k, str) and isinstance(v, str) for k, v in segment.items())):  # fmt: skip
                    raise SnapshotError(f"quality scope {key!r} has a malformed segment {segment!r}")
                if key != "" and (not segment or tuple(segment) not in monitor.slices):
                    continue  # a slice the config no longer names is dropped
                scope = monitor.whole if key == "" else _Scope(str(key), segment)
                for v, track in scope_data["tracks"]:
                    v = _version(v)
                    if v not in monitor.infos:
                        raise SnapshotError(f"quality track of version {v!r} has no version state")
                    baseline = monitor.baseline_of(v) if key == "" else None
                    scope.tracks[v] = _Track.restore(monitor, v, scope.key, segment, track, baseline)
                if key != "":
                    monitor.tracked[str(key)] = scope
        except SnapshotError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise SnapshotError(f"malformed quality snapshot: {exc!r}") from exc
        return monitor


def _version(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise SnapshotError(f"model version {value!r} is not a string")
    return value
