"""ADWIN (adaptive windowing) over a numeric stream, via river's Rust core."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np
from river.drift import ADWIN

from detectors import SnapshotError
from detectors.base import ChangePoint

_VERSION = 1


class AdwinDetector:
    """river's ADWIN fed a batch at a time, with plain-data snapshots.

    The detection itself is river's, index for index. river does not expose
    where it cut its window, so a change point reports an estimate: the shift
    between the mean of the last ``clock`` values (ADWIN checks for cuts every
    ``clock`` values) and the mean of the window before them, against ADWIN's
    cut threshold for that split (Bifet & Gavalda 2007, eq. 3.1).
    """

    name = "adwin"

    def __init__(self, delta: float = 0.002) -> None:
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        self.delta = delta
        self._adwin = ADWIN(delta=delta)
        self._recent: deque[float] = deque(maxlen=self._adwin.clock)

    @property
    def width(self) -> int:
        return self._adwin.width

    def update(self, values: np.ndarray) -> list[ChangePoint]:
        adwin = self._adwin
        recent = self._recent
        found: list[ChangePoint] = []
        for position, value in enumerate(values.tolist()):
            recent.append(value)
            before = (adwin.width, adwin.total, adwin.variance) if len(recent) == recent.maxlen else None
            adwin.update(value)
            if adwin.drift_detected and before is not None:
                found.append(self._change_point(position, *before, value))
            elif adwin.drift_detected:
                found.append(ChangePoint(position, 0.0, 0.0, 0.0))
        return found

    def _change_point(
        self, position: int, width: int, total: float, variance: float, last: float
    ) -> ChangePoint:
        n_after = len(self._recent)
        sum_after = sum(self._recent)
        width += 1
        total += last
        n_before = max(1, width - n_after)
        shift = sum_after / n_after - (total - sum_after) / n_before
        m = 1.0 / (1.0 / n_before + 1.0 / n_after)
        delta_prime = self.delta / max(math.log(width), 1.0)
        log_term = math.log(2.0 / delta_prime)
        per_value_variance = variance / max(width - 1, 1)  # river reports the window's sum of squares
        eps_cut = math.sqrt(2.0 / m * per_value_variance * log_term) + 2.0 / (3.0 * m) * log_term
        return ChangePoint(position=position, statistic=abs(shift), threshold=eps_cut, shift=shift)

    def snapshot(self) -> dict[str, Any]:
        return {
            "v": _VERSION,
            "delta": self.delta,
            "helper": self._adwin._helper.__getstate__(),
            "drift": self._adwin.drift_detected,
            "recent": list(self._recent),
        }

    @classmethod
    def restore(cls, data: dict[str, Any]) -> AdwinDetector:
        if data.get("v") != _VERSION:
            raise SnapshotError(f"adwin snapshot version {data.get('v')!r} is not {_VERSION}")
        detector = cls(delta=data["delta"])
        detector._adwin._helper.__setstate__(data["helper"])
        detector._adwin._drift_detected = bool(data["drift"])
        detector._recent.extend(float(x) for x in data["recent"])
        return detector
