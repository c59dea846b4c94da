"""Dataset drift: enough input features of a model in critical drift, for long enough.

One feature's drift is a fact about that feature; a model whose inputs moved on
several of them at once is what a team retrains for (Evidently calls it dataset
drift: a share of drifted columns). This follows the whole model's critical
``data_drift`` alerts (not a segment's: a segment's drift is also its model's
once it is large enough, and slices would count one change many times) and
sends one model-level ``data_drift`` alert (``feature`` None, detector
``dataset``) when at least ``features`` of them have been critical for at least
``events`` events, and resolves it when fewer are.

It judges event indices, never batches: the same stream cut into other batches
fires at the same event.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from detectors import SnapshotError
from detectors.monitors.base import Alert

DETECTOR = "dataset"
_NAMED = 20  # drifting features an alert names at most


class DatasetDrift:
    """Counts a model's input features in critical data drift; fires and resolves the model-level alert.

    ``features``: how many must be critical at once (0: off); ``events``: for how many events
    the last of them must have been critical before the alert fires.

    A feature is critical while a detector's critical alert of it stands: a firing critical alert
    adds its detector, a warning one takes it away, a resolved one takes away every detector it
    names (an incident's names all that fired during it). So it reads alerts per incident and
    per detector alike, and across a switch between the two.
    """

    def __init__(self, features: int, events: int) -> None:
        if features < 0:
            raise ValueError(f"features must be >= 0, got {features!r}")
        if events < 0:
            raise ValueError(f"events must be >= 0, got {events!r}")
        self.features, self.events = features, events
        # feature -> each detector with a critical alert of it standing -> (event index, window start)
        self.drifting: dict[str, dict[str, tuple[int, float]]] = {}
        self.firing: tuple[int, float] | None = None  # where the model-level alert fired

    def observe(self, alerts: list[Alert], index: np.ndarray, times: np.ndarray) -> list[Alert]:
        """The model-level alerts that ``alerts`` (one batch's, in event order) and the batch's rows
        (their event indices and times) cause."""
        if not self.features or not index.size:
            return []
        out: list[Alert] = []
        first = int(index[0])
        for alert in alerts:
            if alert.type != "data_drift" or alert.feature is None or alert.segment is not None:
                continue
            self._mature(alert.event_index - 1, first, times, out)
            keys = self.drifting.setdefault(alert.feature, {})
            if alert.status == "firing" and alert.severity == "critical":
                # From the start of the data that showed it: a retrain wants all of the change.
                keys.setdefault(alert.detector, (alert.event_index, alert.window_start))
            elif alert.status == "firing":
                keys.pop(alert.detector, None)
            else:
                for detector in {alert.detector, *alert.detectors}:
                    keys.pop(detector, None)
            if not keys:
                del self.drifting[alert.feature]
            if self.firing is not None and len(self.drifting) < self.features:
                out.append(self._resolved(alert))
        self._mature(int(index[-1]), first, times, out)
        return out

    def _since(self) -> list[tuple[int, float, str]]:
        """Each drifting feature with the event it turned critical at and the start of the data that showed
        it (its earliest critical alert standing)."""
        return sorted((*min(keys.values()), feature) for feature, keys in self.drifting.items())

    def _mature(self, upto: int, first: int, times: np.ndarray, out: list[Alert]) -> None:
        """Fire if, by event ``upto``, enough features were critical for long enough."""
        if self.firing is not None or len(self.drifting) < self.features:
            return
        since = self._since()
        at = since[self.features - 1][0] + self.events  # the event the condition held for `events` at
        if at > upto:
            return
        at = max(at, first)  # held already before this batch (a restart lowered nothing: fire now)
        when = float(times[at - first])
        self.firing = (at, when)
        names = [feature for _, _, feature in since]
        shown = ", ".join(names[:_NAMED]) + (f" and {len(names) - _NAMED} more" if len(names) > _NAMED else "")
        start = min(at for _, at, _ in since)  # a feature that turned critical later may have the older data
        message = (f"{len(names)} input features in critical data drift, {self.features} or more for at least "
                   f"{self.events} events: {shown} (dataset drift, critical)")  # fmt: skip
        out.append(Alert(
            "data_drift", "firing", "critical", None, DETECTOR, float(len(names)), float(self.features), None,
            at, at - since[0][0] + 1, start, when,
            {"features_needed": self.features, "events_needed": self.events},
            {"drifting_features": names[:_NAMED], "drifting_count": len(names),
             "since": [[feature, index] for index, _, feature in since[:_NAMED]]},
            message, detectors=(DETECTOR,),
        ))  # fmt: skip

    def _resolved(self, cause: Alert) -> Alert:
        assert self.firing is not None
        fired_at, fired_time = self.firing
        self.firing = None
        names = sorted(self.drifting)
        message = (f"dataset drift resolved: {len(names)} input features in critical data drift now, fewer than "
                   f"{self.features} ({cause.feature} no longer is)")  # fmt: skip
        return Alert(
            "data_drift", "resolved", "critical", None, DETECTOR, float(len(names)), float(self.features), None,
            cause.event_index, cause.event_index - fired_at + 1, fired_time, cause.window_end,
            {"features_needed": self.features, "events_needed": self.events},
            {"drifting_features": names[:_NAMED], "drifting_count": len(names)}, message, detectors=(DETECTOR,),
        )  # fmt: skip

    # -- snapshots ---------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "drifting": [[feature, key, index, at] for feature, keys in sorted(self.drifting.items())
                         for key, (index, at) in sorted(keys.items())],
            "firing": list(self.firing) if self.firing is not None else None,
        }  # fmt: skip

    def restore(self, data: dict[str, Any] | None) -> None:
        """Its state from ``snapshot()`` (None: a snapshot from before dataset drift, nothing firing)."""
        if data is None:
            return
        try:
            for feature, key, index, at in data["drifting"]:
                self.drifting.setdefault(str(feature), {})[str(key)] = (int(index), float(at))
            firing = data["firing"]
            self.firing = None if firing is None else (int(firing[0]), float(firing[1]))
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"malformed dataset drift state: {exc!r}") from exc
