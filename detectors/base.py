"""The contract every streaming change detector keeps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class ChangePoint:
    """A change a streaming detector signalled inside one ``update`` call."""

    position: int  # index in the updated batch of the value that triggered it
    statistic: float  # the test quantity that crossed ...
    threshold: float  # ... this line
    shift: float  # estimated change of the mean, in the units of the input


class ChangeDetector(Protocol):
    """Batch-in, change-points-out. State round-trips through plain data."""

    name: str

    def update(self, values: np.ndarray) -> list[ChangePoint]:
        """Feed values in order; return the change points they triggered."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """Versioned plain data from which ``restore`` continues exactly."""
        ...
