"""Retraining requests on the wire: alerts read back from the alert topic, requests out to retrain-requests.

The policy itself is pure (``detectors.retrain``); this module reads an alert message
into what it needs, and dresses a request for ``retrain-requests`` (CONTRACT.md).
"""

from __future__ import annotations

from typing import Any

import orjson

from detectors.monitors.model import segment_key
from detectors.retrain import RetrainRequest, SeenAlert
from streams.alerts import rfc3339
from streams.decode import Invalid, parse_timestamp


def read_alert(value: bytes | None) -> SeenAlert:
    """An alert message of the alert topic; ``Invalid`` (reason ``invalid_alert``) names what is wrong."""
    try:
        alert = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise Invalid("invalid_alert", f"not JSON: {exc}") from exc
    if not isinstance(alert, dict):
        raise Invalid("invalid_alert", f"an alert is a JSON object, got {type(alert).__name__}")
    try:
        texts = {name: alert[name] for name in ("alert_id", "type", "status", "severity", "model", "detector")}
        window, segment = alert["window"], alert.get("segment")
        start = parse_timestamp(window["start"]) if isinstance(window, dict) else None
        detected_at = parse_timestamp(alert["detected_at"])
    except KeyError as exc:
        raise Invalid("invalid_alert", f"field {exc.args[0]!r} is missing") from exc
    except Invalid as exc:
        raise Invalid("invalid_alert", exc.detail) from exc
    for name, text in texts.items():
        if not isinstance(text, str) or not text:
            raise Invalid("invalid_alert", f"{name} must be a non-empty string, got {text!r}")
    version, feature = alert.get("model_version"), alert.get("feature")
    if not isinstance(version, (str, type(None))) or not isinstance(feature, (str, type(None))):
        raise Invalid("invalid_alert", "model_version and feature must be strings or null")
    if start is None or detected_at is None:
        raise Invalid("invalid_alert", "window.start and detected_at must be RFC 3339 times")
    if segment is not None and not (isinstance(segment, dict) and all(isinstance(v, str) for v in segment.values())):
        raise Invalid("invalid_alert", "segment must be an object of strings or null")
    message = alert.get("message")
    message = message.removeprefix(f"{texts['model']}: ") if isinstance(message, str) else ""  # named already
    return SeenAlert(
        texts["alert_id"], texts["type"], texts["status"], texts["severity"], version, feature,
        segment_key(segment or {}), texts["detector"], start, detected_at, message,
    )  # fmt: skip


def alert_model(value: bytes | None) -> str | None:
    """The model an alert message names, or None (a malformed message is rejected by ``read_alert``)."""
    try:
        model = orjson.loads(value or b"").get("model")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return model if isinstance(model, str) and model else None


def to_wire(request: RetrainRequest, created_at: float, cooldown: float) -> dict[str, Any]:
    """A request as ``retrain-requests`` carries it; ``since.offsets`` is filled in by the worker
    (where each partition of the input topics reaches ``since.event_time``)."""
    trigger = request.trigger
    return {
        "request_id": request.request_id,
        "model": request.model,
        "model_version": request.version,
        "reason": request.reason,
        "alert_ids": list(request.alert_ids),
        "since": {"event_time": rfc3339(request.since), "offsets": {}},
        "created_at": rfc3339(created_at),
        "trigger": {"alert_id": trigger.alert_id, "type": trigger.type, "severity": trigger.severity,
                    "detector": trigger.detector, "feature": trigger.feature,
                    "detected_at": rfc3339(trigger.detected_at)},
        "cooldown_seconds": cooldown,
    }  # fmt: skip
