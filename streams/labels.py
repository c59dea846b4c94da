"""A model's labels within one partition of the labels topic: its quality monitor, and the
labels that came before their predictions.

A label whose prediction is not in the join store yet *waits* here, in the partition's
checkpointed state (not in Redis beside the predictions): whether it joined is then
saved atomically with the quality state it changed, so a crash can neither lose it nor
apply it twice. Waiting labels are looked up again every ``label_retry_interval``
seconds; one that waited ``label_ttl`` (on the model's clock here: the Kafka timestamps
of its label records, checkpointed) leaves as ``unmatched``, and beyond ``label_wait_max``
the oldest leaves as ``overflow``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from detectors import SnapshotError
from detectors.monitors.quality import QualityMonitor

SNAPSHOT_VERSION = 1

#: How each label ended, for ``driftstream_labels_total{outcome}``.
OUTCOMES = ("joined", "duplicate", "conflict", "waiting", "unmatched", "overflow")


@dataclass(slots=True)
class WaitingLabel:
    mark: bytes  # streams.join.mark(): where it came from and its value
    label: Any
    label_time: float  # Unix seconds: the label's timestamp, else its record's
    since: float  # when it began to wait: its record's Kafka timestamp (the partition's clock)


class ModelLabels:
    """The quality state of one model in one labels partition."""

    def __init__(self, model: str, quality: QualityMonitor) -> None:
        self.model = model
        self.quality = quality
        self.waiting: dict[str, WaitingLabel] = {}  # by event id, oldest first
        self.clock = -math.inf  # the latest Kafka timestamp (s) of the model's label records here

    def wait(self, event_id: str, label: WaitingLabel, limit: int) -> int:
        """Let a label wait for its prediction; how many older ones it pushed out (beyond ``limit``)."""
        self.waiting[event_id] = label
        dropped = 0
        while len(self.waiting) > limit:
            del self.waiting[next(iter(self.waiting))]
            dropped += 1
        return dropped

    def expire(self, now: float, ttl: float) -> int:
        """Drop the labels that waited ``ttl`` seconds by ``now``; how many."""
        gone = [event_id for event_id, label in self.waiting.items() if now - label.since >= ttl]
        for event_id in gone:
            del self.waiting[event_id]
        return len(gone)

    def snapshot(self) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "model": self.model,
            "quality": self.quality.snapshot(),
            "waiting": [[event_id, w.mark, w.label, w.label_time, w.since] for event_id, w in self.waiting.items()],
            "clock": None if self.clock == -math.inf else self.clock,
        }

    @classmethod
    def restore(cls, data: Any, quality: QualityMonitor) -> ModelLabels:
        """From ``snapshot()``, with its quality monitor already restored from ``data["quality"]``."""
        if not isinstance(data, dict) or data.get("v") != SNAPSHOT_VERSION:
            raise SnapshotError(f"labels snapshot version {data.get('v') if isinstance(data, dict) else data!r} "
                                f"is not {SNAPSHOT_VERSION}")  # fmt: skip
        labels = cls(str(data["model"]), quality)
        try:
            clock = data.get("clock")
            labels.clock = -math.inf if clock is None else float(clock)
            for event_id, label_mark, label, label_time, since in data["waiting"]:
                if not isinstance(event_id, str) or not isinstance(label_mark, bytes):
                    raise SnapshotError(f"malformed waiting label {event_id!r}")
                labels.waiting[event_id] = WaitingLabel(label_mark, label, float(label_time), float(since))
        except (TypeError, ValueError) as exc:
            raise SnapshotError(f"malformed waiting labels: {exc!r}") from exc
        return labels
