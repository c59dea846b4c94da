"""The one small contract every detector keeps, and the helpers that enforce it.

A detector is fed batches (numpy arrays) with ``update`` and answers with the
verdicts those values caused. Its latest result is readable (``drift_detected``,
``statistic``, ``threshold``, ``p_value``) and its whole state round-trips
through ``snapshot()`` / ``restore()`` as versioned plain data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from detectors import SnapshotError

Severity = Literal["warning", "critical"]
InputKind = Literal["numeric", "categorical", "binary"]


@dataclass(frozen=True)
class Verdict:
    """One decision of a detector inside one ``update`` call.

    Change detectors give one when they signal a change; windowed tests give
    one per evaluated window, drift or not. ``statistic`` grows with drift and
    ``threshold`` is the line it is judged against (the critical line when the
    verdict is critical).
    """

    position: int  # index in the updated batch of the value that completed this verdict
    statistic: float
    threshold: float
    p_value: float | None = None
    severity: Severity | None = None  # None: no drift
    shift: float | None = None  # estimated change of the mean, in input units (change detectors)
    test: str = ""  # which test, for detectors that run several on one window

    @property
    def drift(self) -> bool:
        return self.severity is not None


@runtime_checkable
class Detector(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def input_kind(self) -> InputKind: ...

    def update(self, values: np.ndarray) -> list[Verdict]:
        """Feed values in order; return the verdicts they completed."""
        ...

    @property
    def drift_detected(self) -> bool:
        """Whether the last ``update`` produced a drift verdict."""
        ...

    @property
    def statistic(self) -> float: ...

    @property
    def threshold(self) -> float: ...

    @property
    def p_value(self) -> float | None: ...

    def snapshot(self) -> dict[str, Any]:
        """Versioned plain data (numbers, strings, bytes, lists, dicts)."""
        ...


def require(ok: bool, name: str, value: object, rule: str) -> None:
    """Raise the ValueError that names a bad constructor parameter."""
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value!r}")


def check_probability(name: str, value: float) -> None:
    require(isinstance(value, (int, float)) and 0 < value < 1, name, value, "in (0, 1)")


def check_positive(name: str, value: float) -> None:
    require(isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0, name, value, "> 0")


def check_count(name: str, value: int, minimum: int = 1) -> None:
    require(isinstance(value, int) and not isinstance(value, bool) and value >= minimum, name, value,
            f"an integer >= {minimum}")  # fmt: skip


def check_snapshot(data: object, name: str, version: int) -> dict[str, Any]:
    """The snapshot as a dict, or SnapshotError when it is not ``name``'s ``version``."""
    if not isinstance(data, dict):
        raise SnapshotError(f"{name} snapshot must be a mapping, got {type(data).__name__}")
    if data.get("detector") != name or type(data.get("v")) is not int or data.get("v") != version:  # not True
        raise SnapshotError(
            f"snapshot of {data.get('detector')!r} version {data.get('v')!r} is not {name} version {version}"
        )
    return data
