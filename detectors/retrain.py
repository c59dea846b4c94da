"""When a model's alerts call for retraining: the retrain policy of one model.

It reads the model's alerts in the order the alert topic holds them (one model's
alerts share a partition: the topic is keyed by model name), keeps which of them
fire critically now, and turns a *trigger* into one retraining request:

* a firing ``performance`` or ``concept_drift`` alert, or a model-level
  ``data_drift`` alert (dataset drift: enough input features in critical drift
  for long enough, ``detectors/monitors/dataset.py``), at or above the policy's
  severity and of a type it is asked to act on;
* at most one request per model per ``cooldown`` seconds of detection time (the
  alerts' ``detected_at``, fixed once in the topic: a replay decides alike); a trigger
  within it waits, and is requested with the first alert of the model read once the
  cooldown is over, if it still fires then;
* the request id derives from the model and the trigger's alert id, so a request
  replayed after a crash has the id of the first (consumers dedupe on it, as on
  alert ids).

Alerts read twice (an upstream worker that replayed its batch republishes them
with the same id) change nothing the second time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from detectors import SnapshotError
from detectors.monitors.dataset import DETECTOR as DATASET

SNAPSHOT_VERSION = 1
TRIGGER_TYPES = ("performance", "concept_drift", "data_drift", "prediction_drift")
_SEVERITY = {"warning": 1, "critical": 2}
SEEN_IDS = 1024  # recent alert ids remembered to ignore repeats (an upstream replay republishes its batch's)
MAX_FIRING = 500  # critical firing alerts remembered per model (the oldest go first)
MAX_ALERT_IDS = 50  # alert ids a request names


class SeenAlert(NamedTuple):
    """The parts of an alert the policy reads."""

    alert_id: str
    type: str
    status: str
    severity: str
    version: str | None
    feature: str | None
    segment: str  # its segment key ("" for the whole model)
    detector: str
    window_start: float  # event time, Unix seconds
    detected_at: float  # Unix seconds
    message: str
    detectors: tuple[str, ...] = ()  # every detector it speaks for (a resolved incident's: all that fired)


@dataclass(frozen=True)
class RetrainConfig:
    on: tuple[str, ...] = ("performance", "concept_drift", "data_drift")  # alert types that trigger; () = off
    severity: str = "critical"  # the lowest severity that triggers
    cooldown: float = 86400.0  # seconds of detection time between two requests for one model

    def __post_init__(self) -> None:
        for kind in self.on:
            if kind not in TRIGGER_TYPES:
                raise ValueError(f"retrain_on: {kind!r} is not one of {', '.join(TRIGGER_TYPES)}")
        if self.severity not in _SEVERITY:
            raise ValueError(f"retrain_severity must be warning or critical, got {self.severity!r}")
        if not self.cooldown >= 0:
            raise ValueError(f"retrain_cooldown must be >= 0, got {self.cooldown!r}")


@dataclass(frozen=True)
class RetrainRequest:
    request_id: str
    model: str
    version: str | None
    reason: str
    alert_ids: tuple[str, ...]  # the trigger first, then the critical alerts firing with it
    since: float  # event time where the change began: the trigger's window start
    trigger: SeenAlert


Outcome = Literal["published", "suppressed"]


@dataclass
class RetrainPolicy:
    """The retrain policy of one model (in one partition of the alert topic)."""

    model: str
    config: RetrainConfig
    seen: list[str] = field(default_factory=list)  # recent alert ids, oldest first
    # (type, feature, segment, version, detector) of each critical alert standing -> (alert id, window start);
    # version "" for input drift (its alerts name the model's latest version, which moves on)
    firing: dict[tuple[str, str, str, str, str], tuple[str, float]] = field(default_factory=dict)
    last_request: tuple[str, float] | None = None  # (request id, the detected_at it was published at)
    pending: SeenAlert | None = None  # the last trigger the cooldown held back

    def observe(self, alert: SeenAlert) -> tuple[Outcome, RetrainRequest] | None:
        """Take one alert; a request it triggers (published, or held back by the cooldown), or the held
        back one it lets go (the cooldown is over and that trigger still fires)."""
        if alert.alert_id in self.seen:
            return None
        self.seen.append(alert.alert_id)
        del self.seen[:-SEEN_IDS]
        self._track(alert)
        if self._triggers(alert):
            request = self._request(alert)
            if not self._cooled(alert.detected_at):
                self.pending = alert
                return "suppressed", request
            self.pending = None  # this one speaks for the model now
            self.last_request = (request.request_id, alert.detected_at)
            return "published", request
        held = self.pending
        if held is None:
            return None
        if self.firing.get(_key(held)) != (held.alert_id, held.window_start):
            self.pending = None  # resolved (or superseded) while held back
            return None
        if not self._cooled(alert.detected_at):
            return None
        self.pending = None
        request = self._request(held)
        self.last_request = (request.request_id, alert.detected_at)
        return "published", request

    def _cooled(self, at: float) -> bool:
        return self.last_request is None or at - self.last_request[1] >= self.config.cooldown

    def _track(self, alert: SeenAlert) -> None:
        """Which critical alerts stand: a firing critical one adds its detector's, a warning one takes it
        away, a resolved one takes away every detector it names (an incident's: all that fired)."""
        if alert.status == "firing" and alert.severity == "critical":
            key = _key(alert)
            self.firing.pop(key, None)  # re-inserted: the newest last
            self.firing[key] = (alert.alert_id, alert.window_start)
            while len(self.firing) > MAX_FIRING:
                del self.firing[next(iter(self.firing))]
            return
        detectors = {alert.detector} if alert.status == "firing" else {alert.detector, *alert.detectors}
        for detector in detectors:
            self.firing.pop(_key(alert, detector), None)

    def _triggers(self, alert: SeenAlert) -> bool:
        if alert.status != "firing" or alert.type not in self.config.on:
            return False
        if _SEVERITY.get(alert.severity, 0) < _SEVERITY[self.config.severity]:
            return False
        # One input feature's drift is that feature's: only dataset drift speaks for the model. Not the
        # inputs' joint drift (pca_reconstruction) either: a broken pipeline moves it too (missing values
        # are imputed), and a retrain on broken data is what must not happen.
        return alert.type != "data_drift" or alert.detector == DATASET

    def _request(self, trigger: SeenAlert) -> RetrainRequest:
        """The request ``trigger`` makes (its id from the model and the trigger's alert id alone)."""
        others = sorted((start, alert_id) for alert_id, start in self.firing.values() if alert_id != trigger.alert_id)
        alert_ids = (trigger.alert_id, *(alert_id for _, alert_id in others[: MAX_ALERT_IDS - 1]))
        digest = hashlib.sha256("\x1f".join((self.model, trigger.alert_id)).encode()).hexdigest()[:32]
        what = {"performance": "its quality dropped", "concept_drift": "the relation of its inputs to the labels "
                "changed", "data_drift": "its inputs drifted", "prediction_drift": "its predictions drifted"}
        version = f" version {trigger.version}" if trigger.version is not None else ""
        more = f"; {len(others)} more critical alert(s) firing" if others else ""
        reason = (f"Retrain {self.model}{version}: {what[trigger.type]} ({trigger.type}, {trigger.severity}, "
                  f"{trigger.detector}){more}: {trigger.message}")  # fmt: skip
        return RetrainRequest(digest, self.model, trigger.version, reason, alert_ids, trigger.window_start, trigger)

    # -- snapshots ---------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "model": self.model,
            "seen": list(self.seen),
            "firing": [[*key, alert_id, start] for key, (alert_id, start) in self.firing.items()],
            "last_request": list(self.last_request) if self.last_request is not None else None,
            "pending": [*self.pending[:-1], list(self.pending.detectors)] if self.pending is not None else None,
        }

    @classmethod
    def restore(cls, data: dict[str, Any], config: RetrainConfig) -> RetrainPolicy:
        version = data.get("v") if isinstance(data, dict) else None
        if version != SNAPSHOT_VERSION:
            raise SnapshotError(f"retrain policy snapshot version {version!r} is not {SNAPSHOT_VERSION}")
        try:
            policy = cls(str(data["model"]), config, seen=[str(x) for x in data["seen"]])
            for kind, feature, segment, version, detector, alert_id, start in data["firing"]:
                key = (str(kind), str(feature), str(segment), str(version), str(detector))
                policy.firing[key] = (str(alert_id), float(start))
            last = data["last_request"]
            policy.last_request = None if last is None else (str(last[0]), float(last[1]))
            held = data["pending"]
            if held is not None:
                *fields, detectors = held
                if len(fields) != len(SeenAlert._fields) - 1:
                    raise ValueError(f"a held back trigger has {len(held)} fields")
                policy.pending = SeenAlert._make([*fields, tuple(str(d) for d in detectors)])
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"malformed retrain policy snapshot: {exc!r}") from exc
        return policy


def _key(alert: SeenAlert, detector: str | None = None) -> tuple[str, str, str, str, str]:
    """What one standing critical alert is: its subject and detector."""
    version = "" if alert.type == "data_drift" else alert.version or ""
    return alert.type, alert.feature or "", alert.segment, version, alert.detector if detector is None else detector
