"""Model quality metrics over a window of labeled predictions, vectorised with numpy.

Classes are small integers (indices into a model version's tracked classes); every metric
is the one scikit-learn computes from the same data (``tests/detectors/test_quality.py``
checks each to 1e-12):

* ``accuracy``: the share of rows whose predicted class is the label.
* ``precision``, ``recall``, ``f1``: of the positive class, when there are two classes
  (sklearn's ``average="binary"``; a ratio with nothing to count is 0, as sklearn's
  ``zero_division`` default).
* ``f1_macro``: the mean F1 over the classes that occur as a label or a prediction.
* ``roc_auc``: from the positive class's score (binary), or the macro mean of one-vs-rest
  AUCs over per-class probabilities (multi-class, the classes with both positives and
  negatives among the scored rows); rank-based, ties as half (Mann-Whitney).
* ``log_loss``: the mean of ``-ln p`` of the probability given to the true class, clipped
  into ``[eps, 1 - eps]`` (float64 ``eps``), without renormalising (as sklearn >= 1.5).
* Regression: ``mae``, ``rmse``, ``mape`` (over the rows whose label is not 0; sklearn
  divides by a tiny epsilon instead, which makes one zero label dominate), ``mean_error``
  (prediction - label: positive when the model over-predicts).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from detectors.columns import category_text

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = ("auto", CLASSIFICATION, REGRESSION)
#: Metrics that must stay at or above a floor, and those that must stay at or below it.
HIGHER_IS_BETTER = frozenset({"accuracy", "precision", "recall", "f1", "f1_macro", "roc_auc"})
LOWER_IS_BETTER = frozenset({"log_loss", "mae", "rmse", "mape", "mean_error"})  # mean_error: its absolute value
CLASSIFICATION_METRICS = frozenset({"accuracy", "precision", "recall", "f1", "f1_macro", "roc_auc", "log_loss"})
REGRESSION_METRICS = frozenset({"mae", "rmse", "mape", "mean_error"})
METRICS = CLASSIFICATION_METRICS | REGRESSION_METRICS
_EPS = float(np.finfo(np.float64).eps)
ERROR_QUANTILES = (0.5, 0.9, 0.99)


def class_text(value: object) -> str | None:
    """A label or predicted class as text (``True`` -> ``"true"``, ``1`` and ``1.0`` -> ``"1"``);
    None when it is no class (missing, a fractional or non-finite number, an object)."""
    if isinstance(value, (str, bool)):
        return category_text(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return None


def is_number(value: object) -> bool:
    """A finite int or float (a bool is no number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def infer_task(label: object, prediction: object, probabilities: object) -> str | None:
    """The task one labeled row shows, or None when it shows none (no usable label).

    Boolean and string labels are classes; an integer label is a class when the prediction is
    a class (string, integer, boolean), an object of probabilities or a score in [0, 1];
    otherwise (a float label, or an integer label with any other number) regression.
    """
    if isinstance(label, (str, bool)):
        return CLASSIFICATION
    if not is_number(label):
        return None
    if isinstance(label, int):
        if isinstance(prediction, (str, bool, int)) or isinstance(probabilities, dict):
            return CLASSIFICATION
        if is_number(prediction) and 0.0 <= float(prediction) <= 1.0:  # type: ignore[arg-type]
            return CLASSIFICATION
    return REGRESSION


def confusion(y: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """``k x k`` counts: rows the label's class, columns the predicted class."""
    return np.bincount(y.astype(np.int64) * k + predicted.astype(np.int64), minlength=k * k).reshape(k, k)


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def binary_metrics(matrix: np.ndarray, positive: int) -> dict[str, float]:
    """Precision, recall and F1 of the ``positive`` class from a confusion matrix."""
    tp = float(matrix[positive, positive])
    predicted, actual = float(matrix[:, positive].sum()), float(matrix[positive, :].sum())
    return {
        "precision": _ratio(tp, predicted),
        "recall": _ratio(tp, actual),
        "f1": _ratio(2.0 * tp, predicted + actual),
    }


def f1_macro(matrix: np.ndarray) -> float:
    """Mean F1 over the classes that occur as a label or a prediction."""
    tp = np.diag(matrix).astype(np.float64)
    denominator = matrix.sum(axis=0) + matrix.sum(axis=1)  # 2 tp + fp + fn
    present = denominator > 0
    if not present.any():
        return 0.0
    return float(np.mean(2.0 * tp[present] / denominator[present]))


def binary_auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC of ``scores`` for the boolean ``positive`` labels (Mann-Whitney, ties as half);
    None without both positives and negatives."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = stats.rankdata(scores, method="average")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def ovr_auc(y: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Macro one-vs-rest ROC AUC over the columns (classes) with both positives and negatives."""
    aucs = [auc for c in range(probabilities.shape[1])
            if (auc := binary_auc(y == c, probabilities[:, c])) is not None]  # fmt: skip
    return float(np.mean(aucs)) if aucs else None


def log_loss(p_true: np.ndarray) -> float:
    """Mean ``-ln p`` of the probabilities given to the true class, clipped into [eps, 1 - eps]."""
    return float(np.mean(-np.log(np.clip(p_true, _EPS, 1.0 - _EPS))))


def classification_metrics(y: np.ndarray, predicted: np.ndarray, correct: np.ndarray, k: int,
                           positive: int | None, scores: np.ndarray | None = None,
                           probabilities: np.ndarray | None = None,
                           p_true: np.ndarray | None = None) -> tuple[dict[str, float], np.ndarray]:  # fmt: skip
    """A window's classification metrics and its confusion matrix.

    ``y`` and ``predicted`` are class indices below ``k``; ``correct`` whether each prediction
    was right (compared as text, so two classes both past ``max_classes`` are not "right"
    for sharing the "other" index). ``positive`` is the positive class's index when the
    task is binary (two classes), else None. ``scores`` is the positive class's score per
    row (NaN where none was sent: binary AUC); ``probabilities`` the per-class probabilities
    (rows x k, NaN rows where none were sent: multi-class AUC); ``p_true`` the probability
    given to the true class (NaN where none: log loss).
    """
    matrix = confusion(y, predicted, k)
    metrics: dict[str, float] = {"accuracy": float(np.mean(correct)) if correct.size else 0.0}
    if positive is not None:
        metrics.update(binary_metrics(matrix, positive))
    metrics["f1_macro"] = f1_macro(matrix)
    auc: float | None = None
    if positive is not None and scores is not None:
        scored = ~np.isnan(scores)
        auc = binary_auc(y[scored] == positive, scores[scored])
    elif positive is None and probabilities is not None and k > 2:
        scored = ~np.isnan(probabilities).any(axis=1)
        auc = ovr_auc(y[scored], probabilities[scored])
    if auc is not None:
        metrics["roc_auc"] = auc
    if p_true is not None:
        given = p_true[~np.isnan(p_true)]
        if given.size:
            metrics["log_loss"] = log_loss(given)
    return metrics, matrix


def regression_metrics(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, MAPE (rows with a non-zero label) and mean error (prediction - label)."""
    error = predictions - labels
    absolute = np.abs(error)
    metrics = {
        "mae": float(absolute.mean()),
        "rmse": float(math.sqrt(float(np.mean(error * error)))),
        "mean_error": float(error.mean()),
    }
    nonzero = labels != 0
    if nonzero.any():
        metrics["mape"] = float(np.mean(absolute[nonzero] / np.abs(labels[nonzero])))
    return metrics


def error_summary(predictions: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """What an on-call engineer reads of a regressor's errors: MAE, RMSE, mean error, the
    absolute error's quantiles, and how many rows MAPE skipped for a zero label."""
    error = predictions - labels
    absolute = np.abs(error)
    quantiles = np.quantile(absolute, ERROR_QUANTILES) if absolute.size else np.zeros(len(ERROR_QUANTILES))
    return {
        "mae": float(absolute.mean()) if absolute.size else 0.0,
        "rmse": float(math.sqrt(float(np.mean(error * error)))) if error.size else 0.0,
        "mean_error": float(error.mean()) if error.size else 0.0,
        "abs_error_quantiles": {f"p{round(q * 100):02d}": float(v) for q, v in zip(ERROR_QUANTILES, quantiles,
                                                                                  strict=True)},
        "mape_zero_labels_skipped": int((labels == 0).sum()),
    }  # fmt: skip


def past_floor(metric: str, value: float, floor: float) -> bool:
    """Whether ``value`` of ``metric`` is on the wrong side of its floor."""
    if metric in HIGHER_IS_BETTER:
        return value < floor
    if metric == "mean_error":
        return abs(value) > floor
    return value > floor
