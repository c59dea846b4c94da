"""Alerts as the wire contract wants them (drift-alerts topic)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from detectors.monitor import Alert


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def alert_id(alert: Alert, model: str, topic: str, partition: int) -> str:
    """Deterministic: replaying the same input yields the same id (consumers dedupe on it)."""
    parts = (
        model, topic, str(partition), alert.feature or "", alert.detector, alert.status,
        alert.severity, str(alert.event_index),
    )  # fmt: skip
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def to_wire(
    alert: Alert,
    model: str,
    model_version: str | None,
    topic: str,
    partition: int,
    detected_at: float,
) -> dict[str, Any]:
    return {
        "alert_id": alert_id(alert, model, topic, partition),
        "type": alert.type,
        "status": alert.status,
        "severity": alert.severity,
        "model": model,
        "model_version": model_version,
        "feature": alert.feature,
        "segment": None,
        "detector": alert.detector,
        "statistic": alert.statistic,
        "threshold": alert.threshold,
        "p_value": alert.p_value,
        "window": {
            "count": alert.window_count,
            "start": rfc3339(alert.window_start),
            "end": rfc3339(alert.window_end),
            "event_index": alert.event_index,
        },
        "reference": alert.reference,
        "current": alert.current,
        "detected_at": rfc3339(detected_at),
        "message": f"{model}: {alert.message}",
        "source": {"topic": topic, "partition": partition},
    }
