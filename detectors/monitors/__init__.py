"""Monitors: what is watched per model, version, segment and column.

``base`` holds the contract every monitor keeps; ``feature`` the monitor of one
column (a feature, or a version's prediction); ``model`` the monitors of one
model, keyed by segment and version, and the p-value correction across them;
``quality`` a model's quality from late labels (quality windows, the
performance test, concept drift on the error stream, label health).
"""

from __future__ import annotations

from detectors.monitors.base import PREDICTION, Alert, Monitor, Observation, Rows
from detectors.monitors.feature import FeatureMonitor
from detectors.monitors.model import SNAPSHOT_VERSION, ModelBatch, ModelMonitor
from detectors.monitors.quality import (
           QUALITY,
           LabeledRows,
           QualityMonitor,
           QualityReference,
           QualitySpec,
           quality_reference,
)

__all__ = ["PREDICTION", "QUALITY", "SNAPSHOT_VERSION", "Alert", "FeatureMonitor", "LabeledRows", "ModelBatch",
           "ModelMonitor", "Monitor", "Observation", "QualityMonitor", "QualityReference", "QualitySpec", "Rows",
           "quality_reference"]  # fmt: skip
