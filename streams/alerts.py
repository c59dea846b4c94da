"""Alerts as the wire contract wants them (drift-alerts topic)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from detectors.monitors import Alert
from detectors.monitors.model import segment_key


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def alert_id(alert: Alert, model: str, topic: str, partition: int) -> str:
    """Deterministic: replaying the same input yields the same id (consumers dedupe on it).

    It covers the monitor's identity: model, the version a prediction monitor watches and
    the tracked segment value, so the same detection in two segments or versions differs.
    """
    parts: tuple[str, ...] = (
        model, topic, str(partition), alert.feature or "", alert.detector, alert.status,
        alert.severity, str(alert.event_index),
    )  # fmt: skip
    if alert.version is not None or alert.segment is not None:  # ids of unsegmented, unversioned alerts unchanged
        parts += (alert.version or "", segment_key(alert.segment or {}))
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
        "segment": alert.segment,
        "detector": alert.detector,
        "detectors": list(alert.detectors or (alert.detector,)),  # every detector the alert speaks for
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
