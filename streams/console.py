"""Alerts and retraining requests as a person reads them in a terminal (rich markup): the lines of
the demo and of ``driftstream alerts``."""

from __future__ import annotations

from typing import Any

from rich.markup import escape


def where(alert: dict[str, Any]) -> str:
    """What an alert is about: ``fraud/f2``, ``fraud[region=eu]/f5``, ``fraud/prediction v2``, ``churn/quality v1``,
    ``churn/inputs`` (dataset drift)."""
    segment = alert.get("segment")
    slice_ = "[" + ",".join(f"{k}={v}" for k, v in segment.items()) + "]" if segment else ""
    subject = alert["feature"]
    inputs = subject is not None or alert["type"] == "data_drift"  # a feature, or dataset drift over them
    if subject is None:  # the model's own: its inputs, its prediction, its quality (from labels), its labels' health
        subject = {"data_drift": "inputs", "performance": "quality", "concept_drift": "quality",
                   "data_quality": "labels"}.get(alert["type"], "prediction")  # fmt: skip
    text = f"{alert['model']}{slice_}/{subject}"
    # Inputs are monitored across versions; the prediction and quality per version, so say which.
    version = alert.get("model_version")
    if not inputs and version is not None:
        text += f" {version}" if str(version).startswith("v") else f" v{version}"
    return text


def detectors(alert: dict[str, Any]) -> str:
    """Who speaks in an alert: the detector that caused it, then the others of its incident, ``psi (+adwin, ks)``."""
    others = [name for name in alert.get("detectors") or () if name != alert["detector"]]  # none before incidents
    return f"{alert['detector']} (+{', '.join(others)})" if others else alert["detector"]


def format_alert(alert: dict[str, Any]) -> str:
    colour = {"critical": "bold red", "warning": "yellow"}.get(alert["severity"], "white")
    status = alert["status"].upper()
    if alert["status"] == "resolved":
        colour = "green"
    return (
        f"[{colour}]{status:<8} {alert['severity']:<8}[/] {alert['type']:<16} {escape(f'{where(alert):<22}')} "
        f"{escape(detectors(alert)):<12} statistic {alert['statistic']:.3f} (line {alert['threshold']:.3g})\n"
        f"         {escape(alert['message'])}"
    )


def format_request(request: dict[str, Any]) -> str:
    """A retraining request as the demo prints it."""
    alerts = len(request["alert_ids"])
    return (f"[bold magenta]RETRAIN[/]  request {request['request_id'][:12]}  since {request['since']['event_time']} "
            f"({alerts} alert{'s' if alerts != 1 else ''})\n         {escape(request['reason'])}")
