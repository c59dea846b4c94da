"""When an alert fires, escalates and resolves: one policy for every monitor.

Monitors report verdicts; the policy keeps, per detector of one monitored
subject, whether it is firing and at which severity. One firing state per
(subject, detector) until it resolves; it changes once more only if it
escalates from warning to critical.

Detectors that fire together on one subject are one *incident* per alert type:
``null_rate`` is data quality (missing values are not drift), every other
detector drift. By default an incident, not a detector, is what is sent: it
fires when its first member fires, fires again only when it escalates to
critical, and resolves when its last member has resolved (``incident``). With
``alert_per_detector`` every detector's own firing and resolving is sent.

* Windowed tests resolve when a window is back under the warning line.
* Change detectors (ADWIN, Page-Hinkley) signal a change point and then adapt
  to the new level, so their alert resolves after ``resolve_after`` events
  without a new change point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from detectors import SnapshotError
from detectors.base import Severity

Status = Literal["firing", "resolved"]
_SEVERITIES = (None, "warning", "critical")
QUALITY = "data_quality"
DRIFT = "drift"
QUALITY_DETECTORS = frozenset({"null_rate", "out_of_range"})  # a column's data quality, not drift


def incident_of(detector: str) -> str:
    """The incident a detector's alerts belong to: missing values are data quality, not drift."""
    return QUALITY if detector in QUALITY_DETECTORS else DRIFT


def window_decision(firing: Severity | None, severity: Severity | None) -> tuple[Status, Severity] | None:
    """What a judged window at ``severity`` (None: under its lines) sends while ``firing`` (None: not
    firing): firing when it crosses, once more when it escalates to critical, resolved at the first
    window back under; None when nothing changes (already said, or already critical: a calmer window
    changes nothing). Every windowed check keeps its state in its own way and decides with this."""
    if severity is not None:
        if firing == severity or firing == "critical":
            return None
        return "firing", severity
    if firing is not None:
        return "resolved", firing
    return None


def firing_after(decision: tuple[Status, Severity]) -> Severity | None:
    """The severity firing once ``decision`` is sent (None: resolved)."""
    status, severity = decision
    return severity if status == "firing" else None


@dataclass
class AlertState:
    severity: Severity | None = None  # None: not firing
    last_change: int = -1  # event index of the last change point (change detectors)
    # Where the change detector's current stretch of values began (after its last change
    # point), and how many values it holds: the data a change-point alert judged.
    since_time: float = math.nan
    since_count: int = 0


@dataclass
class Incident:
    """The detectors of one subject and alert type firing together (only a firing one is kept)."""

    severity: Severity  # the highest any member fired at since it began
    firing: set[str] = field(default_factory=set)  # members firing now
    fired: set[str] = field(default_factory=set)  # every member that fired since it began


class AlertPolicy:
    """Firing state of one monitored subject's detectors, and of its incidents."""

    def __init__(self) -> None:
        self.states: dict[str, AlertState] = {}
        self.incidents: dict[str, Incident] = {}  # incident_of(detector) -> the firing incident

    def state(self, detector: str) -> AlertState:
        return self.states.setdefault(detector, AlertState())

    def firing(self, detector: str) -> Severity | None:
        state = self.states.get(detector)
        return state.severity if state else None

    def on_window(self, detector: str, severity: Severity | None) -> tuple[Status, Severity] | None:
        """A judged window: what to send (firing or resolved, at which severity), or None."""
        state = self.state(detector)
        decision = window_decision(state.severity, severity)
        if decision is not None:
            state.severity = firing_after(decision)
        return decision

    def on_change(self, detector: str, severity: Severity, index: int) -> bool:
        """A change point at event ``index``: whether a firing alert (new or escalated) is due."""
        state = self.state(detector)
        state.last_change = index
        return self.escalate(detector, severity)

    def escalate(self, detector: str, severity: Severity) -> bool:
        state = self.state(detector)
        if state.severity == severity or state.severity == "critical":
            return False
        state.severity = severity
        return True

    def quiet_for(self, detector: str, index: int) -> int | None:
        """Events since the last change point of a firing change alert, or None when not firing."""
        state = self.states.get(detector)
        if state is None or state.severity is None:
            return None
        return index - state.last_change

    def resolve(self, detector: str) -> Severity:
        state = self.states[detector]
        was = state.severity
        assert was is not None
        state.severity = None
        return was

    def incident(self, detector: str, status: Status, severity: Severity
                 ) -> tuple[Status, Severity, tuple[str, ...]] | None:  # fmt: skip
        """A detector's own alert (in event order) as its incident sees it: what the incident sends, or None.

        Returns the status, the severity and the detectors to name: for a firing alert the
        members firing now, for a resolved one every member that fired during the incident.
        """
        kind = incident_of(detector)
        incident = self.incidents.get(kind)
        if status == "firing":
            if incident is None:
                incident = self.incidents[kind] = Incident(severity)
            elif _SEVERITIES.index(severity) <= _SEVERITIES.index(incident.severity):
                incident.firing.add(detector)  # joins at no higher severity: named in the next alert
                incident.fired.add(detector)
                return None
            incident.severity = severity
            incident.firing.add(detector)
            incident.fired.add(detector)
            return "firing", severity, tuple(sorted(incident.firing))
        if incident is None:  # not a member (cannot happen with consistent state): its own alert
            return "resolved", severity, (detector,)
        incident.firing.discard(detector)
        if incident.firing:
            return None  # the others still fire: no resolve, no de-escalation
        del self.incidents[kind]
        return "resolved", incident.severity, tuple(sorted(incident.fired | {detector}))

    def firing_in(self, kind: str) -> tuple[str, ...]:
        """Members of the ``kind`` incident firing now (sorted)."""
        incident = self.incidents.get(kind)
        return tuple(sorted(incident.firing)) if incident else ()

    # -- snapshots ---------------------------------------------------------

    def snapshot(self) -> dict[str, list[Any]]:
        # sorted: the order alerts first fired in depends on how the stream was batched
        return {
            name: [state.severity, state.last_change, None if math.isnan(state.since_time) else state.since_time,
                   state.since_count]
            for name, state in sorted(self.states.items())
        }  # fmt: skip

    def incidents_snapshot(self) -> dict[str, list[Any]]:
        """The firing incidents: kind -> [severity, members firing, members that fired] (sorted)."""
        return {
            kind: [incident.severity, sorted(incident.firing), sorted(incident.fired)]
            for kind, incident in sorted(self.incidents.items())
        }

    @classmethod
    def restore(cls, data: dict[str, list[Any]], incidents: dict[str, list[Any]] | None = None) -> AlertPolicy:
        """Detector states from ``snapshot()``, incidents from ``incidents_snapshot()``.

        Snapshots from before incidents (``incidents`` None) derive them from the firing
        detectors: one incident per alert type at the highest severity of its members.
        """
        policy = cls()
        for name, entry in data.items():
            # Version-2 model snapshots kept [severity, last_change] only.
            severity, last, since_time, since_count = (*entry, None, 0) if len(entry) == 2 else entry
            if severity not in _SEVERITIES:
                raise SnapshotError(f"alert state of {name!r} has severity {severity!r}")
            policy.states[str(name)] = AlertState(
                severity, int(last), math.nan if since_time is None else float(since_time), int(since_count)
            )
        for kind, entry in (incidents or {}).items():
            if kind not in (QUALITY, DRIFT):
                raise SnapshotError(f"incident {kind!r} is not one of {QUALITY}, {DRIFT}")
            if not isinstance(entry, list) or len(entry) != 3:
                raise SnapshotError(f"incident {kind!r} must be [severity, firing, fired], got {entry!r}")
            severity, firing, fired = entry
            if not isinstance(firing, list) or not isinstance(fired, list):
                raise SnapshotError(f"incident {kind!r} must list its detectors, got {firing!r}, {fired!r}")
            if severity not in _SEVERITIES[1:]:
                raise SnapshotError(f"incident {kind!r} has severity {severity!r}")
            if not all(isinstance(name, str) for name in (*firing, *fired)):
                raise SnapshotError(f"incident {kind!r} names a detector that is not a string")
            if firing:  # an incident with no member firing is over
                policy.incidents[kind] = Incident(severity, set(firing), set(fired) | set(firing))
        for name, state in sorted(policy.states.items()):
            # A firing detector outside its incident (a snapshot from before incidents): it joins it.
            if state.severity is not None and name not in policy.firing_in(incident_of(name)):
                policy.incident(name, "firing", state.severity)
        return policy
