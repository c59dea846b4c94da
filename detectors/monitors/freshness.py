"""Freshness: a model that has been sending events falls silent.

Upstream breakage often looks like nothing at all: a serving job stops
publishing, and every detector stays quiet because no data means no drift.
This watches the gap since the model's last event in processing time (the
clock of the worker that holds the model): once it reaches ``stale_after``
seconds a ``data_quality`` alert fires (feature ``None``, detector
``freshness``, critical), and the model's next event resolves it.

The alert's ``event_index`` is the model's last event before the silence and
the resolution's the first one after it, so a replay (a worker restarted from
its last checkpoint, the silence seen again) sends the same alert ids. The
processing time an event was heard at lives in memory only: a checkpoint holds
what the events say (their index and event time), so replaying them writes the
same bytes. A worker that loads the state counts silence from its load.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from detectors import SnapshotError
from detectors.monitors.base import Alert

DETECTOR = "freshness"


def _text(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Freshness:
    """When the model's events stop, and when they come back.

    ``stale_after``: seconds of silence before the alert (0: off).
    """

    def __init__(self, stale_after: float) -> None:
        if not math.isfinite(stale_after) or stale_after < 0:
            raise ValueError(f"stale_after must be a finite number >= 0, got {stale_after!r}")
        self.stale_after = float(stale_after)
        self.heard_at = -math.inf  # processing time (Unix s) the model's last event was applied at; not saved
        self.last_index = -1  # the model's index of that event
        self.last_event_time = math.nan  # its event time
        self.silent = False  # the alert is firing
        self.silent_since = -math.inf  # when the silence began, as the alert said (in memory; -inf: unknown)

    def arrived(self, now: float, first_index: int, last_index: int, first_time: float, last_time: float
                ) -> list[Alert]:  # fmt: skip
        """The model's events ``first_index`` to ``last_index`` were applied at ``now``: a firing alert
        resolves with the first of them."""
        out: list[Alert] = []
        if self.silent:
            if math.isfinite(self.silent_since):
                silence = max(0.0, now - self.silent_since)
                message = (f"events are arriving again after {silence:.0f} s of silence (the last one before it, "
                           f"event {self.last_index:,}, came at {_text(self.silent_since)})")  # fmt: skip
                start = self.silent_since
            else:  # the alert fired before this worker loaded the model: when the silence began is not saved
                silence, start = 0.0, now
                message = f"events are arriving again after a silence since event {self.last_index:,}"
            out.append(self._alert("resolved", silence, first_index, start, now, first_time, message))
            self.silent, self.silent_since = False, -math.inf
        self.heard_at, self.last_index, self.last_event_time = now, last_index, last_time
        return out

    def check(self, now: float, not_before: float = -math.inf) -> list[Alert]:
        """The firing alert if the model has been silent for ``stale_after`` at ``now``.

        ``not_before``: silence is counted from no earlier than this (when the worker loaded the
        model's state: a worker catching up after an outage has not heard from it yet).
        """
        if not self.stale_after or self.silent or self.last_index < 0:
            return []
        since = max(self.heard_at, not_before)
        if not math.isfinite(since) or now - since < self.stale_after:
            return []
        self.silent, self.silent_since = True, since
        message = (f"no events for {now - since:.0f} s, since {_text(since)} (after event {self.last_index:,}); "
                   f"a model that has been sending stopped: is its serving job or pipeline down? "
                   f"(data_quality, critical)")  # fmt: skip
        return [self._alert("firing", now - since, self.last_index, since, now, self.last_event_time, message)]

    def _alert(self, status: str, silence: float, index: int, start: float, end: float, event_time: float,
               message: str) -> Alert:  # fmt: skip
        return Alert(
            "data_quality", status, "critical", None, DETECTOR, float(silence), self.stale_after, None,  # type: ignore[arg-type]
            index, 0, start, end,
            {"stale_after_seconds": self.stale_after},
            {"silent_seconds": float(silence), "last_event_index": self.last_index,
             "last_event_time": _text(event_time) if math.isfinite(event_time) else None},
            message, detectors=(DETECTOR,),
        )  # fmt: skip

    # -- snapshots ---------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {"last_index": self.last_index, "last_event_time": self.last_event_time, "silent": self.silent}

    def restore(self, data: dict[str, Any] | None) -> None:
        """Its state from ``snapshot()`` (None: a snapshot from before freshness)."""
        if data is None:
            return
        try:
            self.last_index = int(data["last_index"])
            self.last_event_time = float(data["last_event_time"])
            silent = data["silent"]
            if not isinstance(silent, bool):
                raise TypeError(f"silent must be true or false, got {silent!r}")
            self.silent = silent
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"malformed freshness state: {exc!r}") from exc
