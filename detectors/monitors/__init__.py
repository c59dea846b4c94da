"""Monitors: what is watched per model, version, segment and column.

``base`` holds the contract every monitor keeps; ``feature`` the monitor of one
column (a feature, or a version's prediction); ``model`` the monitors of one
model, keyed by segment and version, and the p-value correction across them.
"""

from __future__ import annotations

from detectors.monitors.base import PREDICTION, Alert, Monitor, Observation, Rows
from detectors.monitors.feature import FeatureMonitor
from detectors.monitors.model import SNAPSHOT_VERSION, ModelBatch, ModelMonitor

__all__ = ["PREDICTION", "SNAPSHOT_VERSION", "Alert", "FeatureMonitor", "ModelBatch", "ModelMonitor", "Monitor",
           "Observation", "Rows"]  # fmt: skip
