"""When an alert fires, escalates and resolves: one policy for every monitor.

Monitors report verdicts; the policy keeps, per detector of one monitored
subject, whether an alert is firing and at which severity, and answers what
to send. One firing alert per (subject, detector) until it resolves; it is
sent once more only if it escalates from warning to critical.

* Windowed tests resolve when a window is back under the warning line.
* Change detectors (ADWIN, Page-Hinkley) signal a change point and then adapt
  to the new level, so their alert resolves after ``resolve_after`` events
  without a new change point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from detectors import SnapshotError
from detectors.base import Severity

Status = Literal["firing", "resolved"]
_SEVERITIES = (None, "warning", "critical")


@dataclass
class AlertState:
    severity: Severity | None = None  # None: not firing
    last_change: int = -1  # event index of the last change point (change detectors)
    # Where the change detector's current stretch of values began (after its last change
    # point), and how many values it holds: the data a change-point alert judged.
    since_time: float = math.nan
    since_count: int = 0


class AlertPolicy:
    """Firing state of one monitored subject's detectors."""

    def __init__(self) -> None:
        self.states: dict[str, AlertState] = {}

    def state(self, detector: str) -> AlertState:
        return self.states.setdefault(detector, AlertState())

    def firing(self, detector: str) -> Severity | None:
        state = self.states.get(detector)
        return state.severity if state else None

    def on_window(self, detector: str, severity: Severity | None) -> tuple[Status, Severity] | None:
        """A judged window: what to send (firing or resolved, at which severity), or None."""
        state = self.state(detector)
        if severity is not None:
            if state.severity == severity or state.severity == "critical":
                return None  # already said, or already critical: a calmer window changes nothing
            state.severity = severity
            return "firing", severity
        if state.severity is not None:
            was, state.severity = state.severity, None
            return "resolved", was
        return None

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

    # -- snapshots ---------------------------------------------------------

    def snapshot(self) -> dict[str, list[Any]]:
        # sorted: the order alerts first fired in depends on how the stream was batched
        return {
            name: [state.severity, state.last_change, None if math.isnan(state.since_time) else state.since_time,
                   state.since_count]
            for name, state in sorted(self.states.items())
        }  # fmt: skip

    @classmethod
    def restore(cls, data: dict[str, list[Any]]) -> AlertPolicy:
        policy = cls()
        for name, entry in data.items():
            # Version-2 model snapshots kept [severity, last_change] only.
            severity, last, since_time, since_count = (*entry, None, 0) if len(entry) == 2 else entry
            if severity not in _SEVERITIES:
                raise SnapshotError(f"alert state of {name!r} has severity {severity!r}")
            policy.states[str(name)] = AlertState(
                severity, int(last), math.nan if since_time is None else float(since_time), int(since_count)
            )
        return policy
