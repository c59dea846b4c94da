"""Multivariate drift of a model's numeric inputs: PCA reconstruction error, and outlier events.

A change in how inputs move together (a correlation that flips, a ratio that breaks)
leaves every marginal where it was, and each feature's own tests quiet. In the manner of
NannyML's DataReconstructionDriftCalculator, this fits a PCA to the model's standardised
numeric inputs, keeps the fewest components that explain ``pca_variance`` of their
variance, and follows the mean distance between each event's inputs and their
reconstruction from those components (missing values imputed with the reference mean):
events that no longer fit the reference's structure reconstruct worse
(``pca_reconstruction``, ``data_drift``). Unlike NannyML, standardised values are clipped
to +/- ``_CLIP`` first: one extreme but legitimate value (an amount of money, say) would
otherwise move a window's mean error on its own, past lines learned from a reference
that may hold no such value; extreme values are the outlier test's business. The same
fit gives each input's mean and standard deviation: the share of events with an input
more than ``outlier_sigma`` of them from its mean is the second test (``outliers``,
``data_quality``). Both watch the whole model only.

Phases, by the model's event index counted from the first event this monitor sees (the
model's event 0; R = ``reference_size``):

* columns, at event 0: the inputs holding a finite number there whose declared kind is
  numeric or undeclared, sorted by name, at most ``max_features``; inputs that appear later
  are ignored. PCA needs two of them, the outlier test one.
* fit, events [0, R): pairwise-complete sums (counts, sums, squares, cross-products, each
  shifted by event 0's values against cancellation), O(d^2) whatever R; at its end each
  input's mean and standard deviation, the covariance of the standardised inputs and its
  eigenvectors.
* calibration, events [R, 2R): each event's reconstruction error and outlier flag: the
  errors' count, mean, second and third central moments, and the outlier count, which
  the lines are learned from.
* judging, from 2R: tumbling windows of ``window_size`` events; a test fires on the first
  window across its line and resolves on the first back inside (escalating once, from
  warning to critical). Rows with none of the columns given count for neither test.

Lines, at ``alpha`` the stricter of the test's option and the budget's per-window alpha:
the window's mean error against the calibration's, two-sided, ``z`` standard errors of
their difference (both are means of row errors) out, bent by Cornish-Fisher for the
difference's skewness (only ever outwards: the correction is unreliable in the tails it
would tighten); critical once it moved ``pca_critical_change`` of the calibration's mean.
The outlier share's line is the stricter of ``outlier_warning`` (``outlier_critical``) and
the share a stable window reaches with probability ``alpha`` given the calibration's.

The same stream cut into other batches gives the same bits, so the same alerts: each
event's residuals come from a product of one fixed shape in which the event sits at a
fixed row (its index modulo ``_ROW_BLOCK``; BLAS rounds a row differently in a product
of another shape, or as a vector), the fit's sums are taken per fixed block of events,
and sums over events are folded in event order (``numpy.cumsum`` is sequential) rather
than merged per batch.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from scipy import special, stats

from detectors import SnapshotError
from detectors.base import Severity
from detectors.columns import Column, FeatureKind
from detectors.config import MonitorConfig
from detectors.monitors.base import PREDICTION, Alert
from detectors.nulls import share_rise_line
from detectors.policy import Status, firing_after, window_decision

PCA = "pca_reconstruction"
OUTLIERS = "outliers"
DETECTORS = (PCA, OUTLIERS)
ALERT_TYPES = {PCA: "data_drift", OUTLIERS: "data_quality"}  # joint drift of the inputs; bad values in them
SNAPSHOT_VERSION = 1
_FIT_BLOCK = 256  # events per product of the fit's sums (a partial block is held until it completes)
_ROW_BLOCK = 64  # rows per product of the per-event residuals
_NAMED = 20  # columns a reference names at most
_TOP = 5  # columns a window's summary names
_TOLERANCE = 1e-9  # added to the PCA line's half-width: an error that is all rounding never fires
_CLIP = 6.0  # standardised values are clipped to +/- this before the reconstruction


@functools.lru_cache(maxsize=64)
def _two_sided_z(alpha: float) -> float:
    return float(stats.norm.isf(alpha / 2.0))


def _fold(total: float, values: np.ndarray) -> float:
    """``total`` plus ``values`` added one by one in order: the same bits however they were batched."""
    if not values.size:
        return total
    return float(np.cumsum(np.concatenate(([total], values)))[-1])


def _fold_rows(total: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Column sums folded in row order onto ``total`` (see ``_fold``)."""
    if not rows.shape[0]:
        return total
    # A copy: the last row as a view would keep every row's running sums alive (~190 KB a model).
    return np.cumsum(np.vstack((total[None, :], rows)), axis=0)[-1].copy()


def _bytes(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, dtype=np.float64).astype("<f8").tobytes()


def _array(data: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A float64 array of ``shape`` from ``_bytes`` output; ValueError when it does not fit."""
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    if len(data) != 8 * math.prod(shape):
        raise ValueError(f"{len(data)} bytes do not hold an array of shape {shape}")
    return np.frombuffer(bytes(data), dtype="<f8").astype(np.float64).reshape(shape)


class _Window:
    """The sums of the open judging window."""

    __slots__ = ("number", "events", "rows", "error", "residual", "outliers", "column_outliers", "start",
                 "last_index", "last_time")  # fmt: skip

    def __init__(self, number: int, columns: int, start: float) -> None:
        self.number = number
        self.events = 0  # rows seen
        self.rows = 0  # rows with at least one of the columns given
        self.error = 0.0  # sum of the rows' reconstruction errors
        self.residual = np.zeros(columns)  # per column: sum of squared standardised residuals
        self.outliers = 0  # rows with an input out
        self.column_outliers = np.zeros(columns, dtype=np.int64)
        self.start = start  # event time of its first row
        self.last_index = -1
        self.last_time = start

    def snapshot(self) -> dict[str, Any]:
        return {"number": self.number, "events": self.events, "rows": self.rows, "error": self.error,
                "residual": _bytes(self.residual), "outliers": self.outliers,
                "column_outliers": [int(c) for c in self.column_outliers], "start": self.start,
                "last_index": self.last_index, "last_time": self.last_time}  # fmt: skip

    @classmethod
    def restore(cls, data: dict[str, Any], columns: int) -> _Window:
        window = cls(int(data["number"]), columns, float(data["start"]))
        window.events, window.rows = int(data["events"]), int(data["rows"])
        window.error = float(data["error"])
        window.residual = _array(data["residual"], (columns,))
        window.outliers = int(data["outliers"])
        counts = [int(c) for c in data["column_outliers"]]
        if len(counts) != columns:
            raise ValueError(f"{len(counts)} column outlier counts for {columns} columns")
        window.column_outliers = np.array(counts, dtype=np.int64)
        window.last_index, window.last_time = int(data["last_index"]), float(data["last_time"])
        return window


class MultivariateMonitor:
    """PCA reconstruction error and outlier events over a model's numeric inputs (whole model).

    ``kinds``: the features' declared kinds (a feature declared categorical or boolean is left
    out); ``alpha``: the budget's per-window alpha (``detectors.budget.window_alpha``; None:
    budget off), each test's alpha is the stricter of it and its own option.
    """

    def __init__(self, config: MonitorConfig, kinds: dict[str, FeatureKind] | None = None,
                 alpha: float | None = None) -> None:  # fmt: skip
        self.config = config
        self.kinds = dict(kinds or {})
        self.alpha = alpha
        self.pca_on = config.pca_variance > 0
        self.outliers_on = config.outlier_sigma > 0
        self.pca_alpha = config.pca_alpha if alpha is None else min(config.pca_alpha, alpha)
        self.outlier_alpha = config.outlier_alpha if alpha is None else min(config.outlier_alpha, alpha)
        self.origin: int | None = None  # the model's index of the first event seen (0 unless restored late)
        self.next_index = 0  # the next event expected; earlier ones (a replay) are skipped
        self.columns: list[str] = []
        self.shift = np.zeros(0)  # the columns' values at the first event
        # -- fit --
        self.fit_sums: np.ndarray | None = None  # [x^T x; x^T p; (x^2)^T p; p^T p], x shifted, p: present
        self.fit_block = -1  # the block held in fit_rows
        self.fit_rows: np.ndarray | None = None  # its rows so far (NaN where none)
        # -- the fitted model --
        self.fitted = False
        self.mean = np.zeros(0)
        self.std = np.ones(0)
        self.eigenvalues = np.zeros(0)  # of the standardised covariance, descending
        self.components: np.ndarray | None = None  # (columns, kept), None: PCA off for this model
        self.projector: np.ndarray | None = None  # onto what the kept components leave out
        self.limit = np.zeros(0)  # outlier_sigma x std
        # -- calibration: errors shifted by the first, summed to the third power, in event order --
        self.cal_rows = 0
        self.cal_shift: float | None = None
        self.cal_sums = [0.0, 0.0, 0.0]
        self.cal_residual = np.zeros(0)
        self.cal_outliers = 0
        self.calibrated = False
        self.error_mean = self.error_sd = self.error_skew = math.nan
        # -- judging --
        self.window: _Window | None = None
        self.firing: dict[str, Severity | None] = {PCA: None, OUTLIERS: None}
        self.latest: dict[str, tuple[float, float]] = {}

    # -- the stream --------------------------------------------------------

    def observe(self, features: dict[str, Column], event_index: np.ndarray, timestamps: np.ndarray) -> list[Alert]:
        """Feed one batch of the model's events (consecutive indices); the alerts it completes, in event order."""
        if not (self.pca_on or self.outliers_on) or not len(event_index):
            return []
        index = np.asarray(event_index, dtype=np.int64)
        times = np.asarray(timestamps, dtype=np.float64)
        first = 0
        if self.origin is not None and index[0] < self.next_index:  # seen already (a replay): once only
            first = int(np.searchsorted(index, self.next_index))
            if first >= index.size:
                return []
            index, times = index[first:], times[first:]
        if self.origin is None:
            self.origin = int(index[0])
            self._choose_columns(features, first)
        self.next_index = int(index[-1]) + 1
        if not self.columns:
            return []
        x = self._matrix(features, first, index.size)
        rel = index - self.origin
        size = self.config.reference_size
        fit_end, cal_end = (int(i) for i in np.searchsorted(rel, [size, 2 * size]))
        if not self.fitted:
            if fit_end:
                self._fit(x[:fit_end], rel[:fit_end])
            if rel[-1] >= size - 1:
                self._finish_fit()
        if fit_end == index.size:
            return []
        rows = self._rows(x[fit_end:], rel[fit_end:])
        if cal_end > fit_end and not self.calibrated:
            self._calibrate(rows, slice(0, cal_end - fit_end))
        if not self.calibrated and rel[-1] >= 2 * size - 1:
            self._finish_calibration()
        if cal_end == index.size:
            return []
        return self._judge_rows(rows, slice(cal_end - fit_end, None), rel[cal_end:], index[cal_end:], times[cal_end:])

    def statistics(self) -> dict[str, tuple[float, float]]:
        """Detector -> (its statistic, the line it is judged against) of the last judged window."""
        return dict(self.latest)

    def _choose_columns(self, features: dict[str, Column], row: int) -> None:
        names = []
        for name, column in features.items():
            if name == PREDICTION or self.kinds.get(name, "numeric") != "numeric":
                continue
            values = column.numeric()[0]
            if values.size > row and math.isfinite(values[row]):
                names.append(name)
        self.columns = sorted(names)[: self.config.max_features]
        if self.columns:
            self.shift = self._matrix(features, row, 1)[0]
            d = len(self.columns)
            self.fit_sums = np.zeros((4 * d, d))
            self.cal_residual = np.zeros(d)

    def _matrix(self, features: dict[str, Column], first: int, rows: int) -> np.ndarray:
        """The columns' values of rows ``first`` to ``first + rows`` (NaN: missing, of another type, or absent)."""
        x = np.full((rows, len(self.columns)), np.nan)
        for j, name in enumerate(self.columns):
            column = features.get(name)
            if column is not None:
                x[:, j] = column.numeric()[0][first:first + rows]
        return x

    # -- fit ---------------------------------------------------------------

    def _fit(self, x: np.ndarray, rel: np.ndarray) -> None:
        size, block = self.config.reference_size, _FIT_BLOCK
        blocks = rel // block
        starts = [0, *(np.flatnonzero(np.diff(blocks)) + 1).tolist()]
        for start, stop in zip(starts, [*starts[1:], rel.size], strict=True):
            number = int(blocks[start])
            if self.fit_rows is not None and number != self.fit_block:
                self._flush_fit()
            if self.fit_rows is None:
                self.fit_rows = np.full((block, len(self.columns)), np.nan)
                self.fit_block = number
            self.fit_rows[rel[start:stop] - number * block] = x[start:stop]
            if rel[stop - 1] >= min((number + 1) * block, size) - 1:
                self._flush_fit()

    def _flush_fit(self) -> None:
        """Add the held block's sums: products of one fixed shape, so the same bits however it was fed."""
        assert self.fit_rows is not None and self.fit_sums is not None
        present = np.isfinite(self.fit_rows)
        shifted = np.where(present, self.fit_rows - self.shift, 0.0)
        weights = present.astype(np.float64)
        d = len(self.columns)
        self.fit_sums[:d] += shifted.T @ shifted
        self.fit_sums[d:] += np.hstack((shifted, shifted * shifted, weights)).T @ weights
        self.fit_rows, self.fit_block = None, -1

    def _finish_fit(self) -> None:
        if self.fit_rows is not None:
            self._flush_fit()
        assert self.fit_sums is not None
        d = len(self.columns)
        sums = self.fit_sums
        cross, total, squares, count = sums[:d], sums[d:2 * d], sums[2 * d:3 * d], sums[3 * d:]
        n = np.diag(count)
        with np.errstate(divide="ignore", invalid="ignore"):
            centre = np.diag(total) / n
            variance = (np.diag(squares) - np.diag(total) * centre) / n  # ddof 0, as StandardScaler
            std = np.sqrt(np.maximum(variance, 0.0))
        std[~(np.isfinite(std) & (std > 0))] = 1.0
        mean = self.shift + np.where(np.isfinite(centre), centre, 0.0)
        eigenvalues, components = np.zeros(d), None
        if self.pca_on and d >= 2:
            eigenvalues, components = self._pca(cross, total, count, std)
        self._set_model(mean, std, eigenvalues, components)
        self.fit_sums = None
        self.fitted = True

    def _pca(self, cross: np.ndarray, total: np.ndarray, count: np.ndarray, std: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
        """Eigenvalues (descending) of the pairwise-complete covariance of the standardised columns,
        and the components kept (None: none left out, or nothing to fit)."""
        d = len(self.columns)
        with np.errstate(divide="ignore", invalid="ignore"):
            # Over the rows where both are present, about the means of those rows (pairwise-complete).
            covariance = (cross - total * total.T / count) / (count - 1.0)
            covariance = np.where(count >= 2, covariance, 0.0) / np.outer(std, std)
        covariance = (covariance + covariance.T) / 2.0
        if not np.all(np.isfinite(covariance)):
            return np.zeros(d), None
        eigenvalues, vectors = np.linalg.eigh(covariance)
        order = np.argsort(-eigenvalues, kind="stable")
        eigenvalues, vectors = eigenvalues[order], vectors[:, order]
        # The sign of an eigenvector is arbitrary: its largest component positive.
        signs = np.sign(vectors[np.argmax(np.abs(vectors), axis=0), np.arange(d)])
        vectors = vectors * np.where(signs == 0, 1.0, signs)
        explained = np.maximum(eigenvalues, 0.0)
        if explained.sum() <= 0:
            return eigenvalues, None
        kept = min(d, int(np.searchsorted(np.cumsum(explained) / explained.sum(), self.config.pca_variance)) + 1)
        return eigenvalues, (vectors[:, :kept] if kept < d else None)

    def _set_model(self, mean: np.ndarray, std: np.ndarray, eigenvalues: np.ndarray,
                   components: np.ndarray | None) -> None:  # fmt: skip
        self.mean, self.std, self.eigenvalues, self.components = mean, std, eigenvalues, components
        self.limit = self.config.outlier_sigma * std
        self.projector = None
        if components is not None and self.pca_on:  # a restore under pca_variance 0 keeps it off
            self.projector = np.eye(len(self.columns)) - components @ components.T

    @property
    def kept(self) -> int:
        """Components kept (0: PCA off for this model)."""
        return 0 if self.components is None else int(self.components.shape[1])

    @property
    def explained_variance(self) -> float:
        """Share of the standardised inputs' variance the kept components explain."""
        explained = np.maximum(self.eigenvalues, 0.0)
        return float(explained[: self.kept].sum() / explained.sum()) if self.kept else math.nan

    # -- per event ---------------------------------------------------------

    def _rows(self, x: np.ndarray, rel: np.ndarray) -> dict[str, np.ndarray]:
        """Per row: present (a column given), error, squared residuals, outlier flags per column and row."""
        rows: dict[str, np.ndarray] = {"present": ~np.isnan(x).all(axis=1)}
        if self.projector is not None:
            finite = np.isfinite(x)
            with np.errstate(invalid="ignore", over="ignore"):
                z = np.where(finite, (x - self.mean) / self.std, 0.0)  # missing: the reference mean
            z = np.clip(z, -_CLIP, _CLIP)  # one extreme value must not move a window's mean alone
            squared = self._residuals(z, rel) ** 2
            rows["squared"] = squared
            rows["error"] = np.sqrt(squared.sum(axis=1))
        if self.outliers_on:
            with np.errstate(invalid="ignore"):
                out = np.asarray(np.abs(x - self.mean) > self.limit)  # NaN: not out; infinity: out
            rows["out"] = out
            rows["outlier"] = np.asarray(out.any(axis=1))
        return rows

    def _residuals(self, z: np.ndarray, rel: np.ndarray) -> np.ndarray:
        """``z`` less its reconstruction, each row computed at row ``rel % _ROW_BLOCK`` of a product of
        fixed shape: the same bits whatever the batch."""
        assert self.projector is not None
        d, block = z.shape[1], _ROW_BLOCK
        numbers, slot = np.unique(rel // block, return_inverse=True)
        position = slot * block + rel % block
        padded = np.zeros((numbers.size * block, d))
        padded[position] = z
        return (padded.reshape(numbers.size, block, d) @ self.projector).reshape(-1, d)[position]

    # -- calibration -------------------------------------------------------

    def _calibrate(self, rows: dict[str, np.ndarray], part: slice) -> None:
        present = rows["present"][part]
        self.cal_rows += int(present.sum())
        if "error" in rows:
            errors = rows["error"][part][present]
            if errors.size:
                if self.cal_shift is None:
                    self.cal_shift = float(errors[0])
                step = errors - self.cal_shift
                self.cal_sums = [_fold(self.cal_sums[0], step), _fold(self.cal_sums[1], step * step),
                                 _fold(self.cal_sums[2], step * step * step)]  # fmt: skip
                self.cal_residual = _fold_rows(self.cal_residual, rows["squared"][part][present])
        if "outlier" in rows:
            self.cal_outliers += int(rows["outlier"][part].sum())

    def _finish_calibration(self) -> None:
        self.calibrated = True
        self._moments()

    def _moments(self) -> None:
        """The calibration errors' mean, standard deviation and skewness, from their shifted power sums."""
        n = self.cal_rows
        if n < 2 or self.cal_shift is None:
            self.error_mean = self.error_sd = self.error_skew = math.nan
            return
        s1, s2, s3 = self.cal_sums
        centre = s1 / n
        m2 = max(s2 - n * centre * centre, 0.0)
        m3 = s3 - 3.0 * centre * s2 + 2.0 * n * centre**3
        self.error_mean = self.cal_shift + centre
        self.error_sd = math.sqrt(m2 / (n - 1))
        self.error_skew = math.sqrt(n) * m3 / m2**1.5 if m2 > 0 else 0.0

    # -- judging -----------------------------------------------------------

    def _judge_rows(self, rows: dict[str, np.ndarray], part: slice, rel: np.ndarray, index: np.ndarray,
                    times: np.ndarray) -> list[Alert]:  # fmt: skip
        """Add the rows to their windows; judge each window completed."""
        rows = {key: value[part] for key, value in rows.items()}
        width, begin = self.config.window_size, 2 * self.config.reference_size
        numbers = (rel - begin) // width
        starts = [0, *(np.flatnonzero(np.diff(numbers)) + 1).tolist()]
        out: list[Alert] = []
        for start, stop in zip(starts, [*starts[1:], rel.size], strict=True):
            number = int(numbers[start])
            if self.window is not None and self.window.number != number:  # a gap skipped its end
                out += self._judge(self.window)
                self.window = None
            if self.window is None:
                self.window = _Window(number, len(self.columns), float(times[start]))
            self._add(self.window, {key: value[start:stop] for key, value in rows.items()})
            self.window.last_index, self.window.last_time = int(index[stop - 1]), float(times[stop - 1])
            if rel[stop - 1] >= begin + (number + 1) * width - 1:
                out += self._judge(self.window)
                self.window = None
        return out

    @staticmethod
    def _add(window: _Window, rows: dict[str, np.ndarray]) -> None:
        present = rows["present"]
        window.events += present.size
        window.rows += int(present.sum())
        if "error" in rows:
            window.error = _fold(window.error, rows["error"][present])
            window.residual = _fold_rows(window.residual, rows["squared"][present])
        if "outlier" in rows:
            window.outliers += int(rows["outlier"].sum())
            window.column_outliers += rows["out"].sum(axis=0)

    def _judge(self, window: _Window) -> list[Alert]:
        n = window.rows
        if n < 2 or not self.calibrated or self.cal_rows < 2:
            return []
        current: dict[str, Any] = {"events": window.events, "rows": n}
        verdicts: list[tuple[str, Severity | None, float, float, float | None, str]] = []
        if self.projector is not None and math.isfinite(self.error_sd):
            verdicts.append(self._pca_verdict(window, current))
        if self.outliers_on:
            verdicts.append(self._outlier_verdict(window, current))
        alerts = []
        for detector, severity, statistic, line, p_value, message in verdicts:
            status = self._decide(detector, severity)
            if status is not None:
                alerts.append(self._alert(detector, status[0], status[1], statistic, line, p_value, window,
                                          current, message))  # fmt: skip
        return alerts

    def _pca_verdict(self, window: _Window, current: dict[str, Any]
                     ) -> tuple[str, Severity | None, float, float, float | None, str]:  # fmt: skip
        n, count = window.rows, self.cal_rows
        mean, reference = window.error / n, self.error_mean
        # The window's mean less the calibration's: both are means of row errors (skewed: Cornish-Fisher
        # on the difference's skewness, only ever widening the normal line).
        spread = 1.0 / n + 1.0 / count
        se = self.error_sd * math.sqrt(spread)
        skew = self.error_skew * (1.0 / n**2 - 1.0 / count**2) / spread**1.5
        z = _two_sided_z(self.pca_alpha)
        bend = (z * z - 1.0) * skew / 6.0
        tolerance = _TOLERANCE * max(1.0, abs(reference))
        upper = reference + se * max(z, z + bend) + tolerance
        lower = reference - se * max(z, z - bend) - tolerance
        change = (mean - reference) / max(reference, _TOLERANCE)  # relative: what pca_critical_change reads
        line = upper if mean >= reference else lower
        p_value = float(2.0 * special.ndtr(-abs(mean - reference) / se)) if se > 0 else float(mean == reference)
        severity: Severity | None = None
        if mean > upper or mean < lower:
            severity = "critical" if abs(change) >= self.config.pca_critical_change else "warning"
        self.latest[PCA] = (mean, line)
        # The columns that moved the error: their mean squared residual's change, in its direction.
        direction = 1.0 if mean >= reference else -1.0
        now, before = window.residual / n, self.cal_residual / count
        ranked = sorted(range(len(self.columns)), key=lambda j: (-direction * (now[j] - before[j]), self.columns[j]))
        current.update({
            "error_mean": mean, "error_change": float(change), "lower_line": lower, "upper_line": upper,
            "residual_columns": [[self.columns[j], float(now[j]), float(before[j])] for j in ranked[:_TOP]],
        })  # fmt: skip
        movers = [self.columns[j] for j in ranked[:3] if direction * (now[j] - before[j]) > 0]
        where = f"; most of it in {', '.join(movers)}" if movers else ""
        if severity is not None:
            message = (f"the PCA reconstruction error of model inputs is {mean:.3g} over the last {window.events} "
                       f"events against {reference:.3g} +/- {se:.2g} in the reference (line {line:.3g}, {self.kept} of "
                       f"{len(self.columns)} components kept{where}) (data_drift, {severity})")  # fmt: skip
        else:
            message = (f"the PCA reconstruction error of model inputs is back to {mean:.3g} over the last "
                       f"{window.events} events (reference {reference:.3g}, lines {lower:.3g} to {upper:.3g})")
        return PCA, severity, mean, line, p_value, message

    def _outlier_verdict(self, window: _Window, current: dict[str, Any]
                         ) -> tuple[str, Severity | None, float, float, float | None, str]:  # fmt: skip
        n, count, hits = window.rows, self.cal_rows, self.cal_outliers
        share, reference = window.outliers / n, hits / count
        null = share_rise_line(self.outlier_alpha, hits, count, n) + reference
        warning, critical = max(self.config.outlier_warning, null), max(self.config.outlier_critical, null)
        severity: Severity | None = "critical" if share >= critical else "warning" if share >= warning else None
        line = critical if severity == "critical" else warning
        self.latest[OUTLIERS] = (share, line)
        counts = window.column_outliers
        ranked = sorted((j for j in range(len(self.columns)) if counts[j]), key=lambda j: (-counts[j], self.columns[j]))
        named: list[list[Any]] = [[self.columns[j], int(counts[j])] for j in ranked[:_TOP]]
        current.update({"outlier_share": share, "outliers": window.outliers, "outlier_line": warning,
                        "outlier_critical_line": critical, "outlier_columns": named})  # fmt: skip
        sigma = f"{self.config.outlier_sigma:g}"
        if severity is not None:
            where = f"; most often {', '.join(str(name) for name, _ in named[:3])}" if named else ""
            message = (f"{share:.2%} of the last {window.events} events have an input more than {sigma} reference "
                       f"std from its reference mean against {reference:.2%} in the reference (line {line:.2%}"
                       f"{where}) (data_quality, {severity})")  # fmt: skip
        else:
            message = (f"the share of events with an input more than {sigma} reference std out is back to "
                       f"{share:.2%} over the last {window.events} events (line {line:.2%})")
        return OUTLIERS, severity, share, line, None, message

    def _decide(self, detector: str, severity: Severity | None) -> tuple[Status, Severity] | None:
        """Firing on the first window across, again on escalation; resolved on the first back inside."""
        decision = window_decision(self.firing[detector], severity)
        if decision is not None:
            self.firing[detector] = firing_after(decision)
        return decision

    def _reference(self, detector: str) -> dict[str, Any]:
        base: dict[str, Any] = {"rows": self.cal_rows, "features": len(self.columns),
                                "columns": self.columns[:_NAMED]}  # fmt: skip
        if detector == PCA:
            return {**base, "error_mean": self.error_mean, "error_sd": self.error_sd, "error_skew": self.error_skew,
                    "components": self.kept, "explained_variance": self.explained_variance,
                    "alpha": self.pca_alpha}  # fmt: skip
        return {**base, "outlier_share": self.cal_outliers / self.cal_rows, "outliers": self.cal_outliers,
                "sigma": float(self.config.outlier_sigma), "alpha": self.outlier_alpha}  # fmt: skip

    def _alert(self, detector: str, status: Status, severity: Severity, statistic: float, line: float,
               p_value: float | None, window: _Window, current: dict[str, Any], message: str) -> Alert:  # fmt: skip
        return Alert(
            type=ALERT_TYPES[detector],
            status=status,
            severity=severity,
            feature=None,
            detector=detector,
            statistic=float(statistic),
            threshold=float(line),
            p_value=p_value,
            event_index=window.last_index,
            window_count=window.events,
            window_start=window.start,
            window_end=window.last_time,
            reference=self._reference(detector),
            current=dict(current),
            message=message,
            detectors=(detector,),
        )

    # -- snapshots ---------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Its state as plain data (arrays as little-endian float64 bytes)."""
        model = None
        if self.fitted:
            model = {"mean": _bytes(self.mean), "std": _bytes(self.std), "eigenvalues": _bytes(self.eigenvalues),
                     "kept": self.kept, "components": None if self.components is None else _bytes(self.components)}
        return {
            "v": SNAPSHOT_VERSION,
            "origin": self.origin,
            "next": self.next_index,
            "columns": list(self.columns),
            "shift": _bytes(self.shift),
            "fit": None if self.fit_sums is None else {
                "sums": _bytes(self.fit_sums), "block": self.fit_block,
                "rows": None if self.fit_rows is None else _bytes(self.fit_rows)},
            "model": model,
            "calibration": {"rows": self.cal_rows, "shift": self.cal_shift, "sums": list(self.cal_sums),
                            "residual": _bytes(self.cal_residual), "outliers": self.cal_outliers,
                            "done": self.calibrated},
            "window": None if self.window is None else self.window.snapshot(),
            "firing": [self.firing[PCA], self.firing[OUTLIERS]],
            "latest": [[detector, *self.latest[detector]] for detector in DETECTORS if detector in self.latest],
        }  # fmt: skip

    @classmethod
    def restore(cls, data: dict[str, Any], config: MonitorConfig, kinds: dict[str, FeatureKind] | None = None,
                alpha: float | None = None) -> MultivariateMonitor:  # fmt: skip
        """A monitor from ``snapshot()``; SnapshotError when the data is malformed."""
        monitor = cls(config, kinds, alpha)
        try:
            if data["v"] != SNAPSHOT_VERSION:
                raise ValueError(f"version {data['v']!r} is not {SNAPSHOT_VERSION}")
            monitor._restore(data)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise SnapshotError(f"malformed multivariate state: {exc!r}") from exc
        return monitor

    def _restore(self, data: dict[str, Any]) -> None:
        self.origin = None if data["origin"] is None else int(data["origin"])
        self.next_index = int(data["next"])
        columns = data["columns"]
        if not isinstance(columns, list) or not all(isinstance(name, str) for name in columns):
            raise TypeError("columns must be a list of names")
        self.columns = list(columns)
        d = len(self.columns)
        self.shift = _array(data["shift"], (d,))
        fit = data["fit"]
        if fit is not None:
            self.fit_sums = _array(fit["sums"], (4 * d, d))
            self.fit_block = int(fit["block"])
            self.fit_rows = None if fit["rows"] is None else _array(fit["rows"], (_FIT_BLOCK, d))
        model = data["model"]
        if model is not None:
            kept = int(model["kept"])
            if not 0 <= kept < max(d, 1) or (kept == 0) != (model["components"] is None):
                raise ValueError(f"{kept} components kept of {d} columns")
            components = None if model["components"] is None else _array(model["components"], (d, kept))
            self._set_model(_array(model["mean"], (d,)), _array(model["std"], (d,)),
                            _array(model["eigenvalues"], (d,)), components)  # fmt: skip
            self.fitted = True
        calibration = data["calibration"]
        self.cal_rows = int(calibration["rows"])
        self.cal_shift = None if calibration["shift"] is None else float(calibration["shift"])
        sums = [float(value) for value in calibration["sums"]]
        if len(sums) != 3:
            raise ValueError(f"{len(sums)} calibration sums, not 3")
        self.cal_sums = sums
        self.cal_residual = _array(calibration["residual"], (d,))
        self.cal_outliers = int(calibration["outliers"])
        self.calibrated = bool(calibration["done"])
        if self.calibrated:
            if not self.fitted:
                raise ValueError("calibrated but not fitted")
            self._moments()
        self.window = None if data["window"] is None else _Window.restore(data["window"], d)
        pca, outliers = data["firing"]
        for detector, severity in ((PCA, pca), (OUTLIERS, outliers)):
            if severity not in (None, "warning", "critical"):
                raise ValueError(f"{detector} firing {severity!r}")
            self.firing[detector] = severity
        for detector, statistic, line in data["latest"]:
            if detector not in DETECTORS:
                raise ValueError(f"unknown detector {detector!r}")
            self.latest[detector] = (float(statistic), float(line))
