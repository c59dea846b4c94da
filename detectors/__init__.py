"""Pure drift-detection logic: references, detectors, alert policy.

Nothing in this package performs I/O: no Kafka, Redis, asyncio or Prometheus
imports (``tests/detectors/test_purity.py`` enforces it). State leaves a
detector only as a versioned snapshot of plain data (numbers, strings, lists,
dicts, bytes), never as a pickle.
"""

from __future__ import annotations


class DetectorError(Exception):
    """Root of every error raised by ``detectors``."""


class SnapshotError(DetectorError, ValueError):
    """A snapshot cannot be restored: unknown version or malformed content."""
