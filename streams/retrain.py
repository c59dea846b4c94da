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

MAX_ID_LENGTH = 200  # an alert id (driftstream's are 32 characters), a model or detector name
MAX_MESSAGE_LENGTH = 2000


def read_alert(value: bytes | None) -> tuple[str, SeenAlert]:
    """The model an alert message of the alert topic names, and what the policy reads of it; ``Invalid``
    (reason ``invalid_alert``) names what is wrong."""
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
        if not isinstance(text, str) or not 0 < len(text) <= MAX_ID_LENGTH:
            raise Invalid("invalid_alert", f"{name} must be a string of 1 to {MAX_ID_LENGTH} characters")
    if texts["status"] not in ("firing", "resolved") or texts["severity"] not in ("warning", "critical"):
        raise Invalid("invalid_alert", "status must be firing or resolved, severity warning or critical")
    version, feature, detectors = alert.get("model_version"), alert.get("feature"), alert.get("detectors")
    if not isinstance(version, (str, type(None))) or not isinstance(feature, (str, type(None))):
        raise Invalid("invalid_alert", "model_version and feature must be strings or null")
    if start is None or detected_at is None:
        raise Invalid("invalid_alert", "window.start and detected_at must be RFC 3339 times")
    if segment is not None and not (isinstance(segment, dict) and all(isinstance(v, str) for v in segment.values())):
        raise Invalid("invalid_alert", "segment must be an object of strings or null")
    if detectors is None:
        detectors = [texts["detector"]]  # from before incidents
    if not isinstance(detectors, list) or not all(isinstance(d, str) and len(d) <= MAX_ID_LENGTH for d in detectors):
        raise Invalid("invalid_alert", "detectors must be a list of names")
    model, message = texts["model"], alert.get("message")
    # The model is named apart already; the sentence is what follows its "model: ".
    message = message.removeprefix(f"{model}: ")[:MAX_MESSAGE_LENGTH] if isinstance(message, str) else ""
    return model, SeenAlert(
        texts["alert_id"], texts["type"], texts["status"], texts["severity"], version, feature,
        segment_key(segment or {}), texts["detector"], start, detected_at, message, tuple(detectors[:100]),
    )  # fmt: skip


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
