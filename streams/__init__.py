"""All of driftstream's I/O: Kafka, Redis, Prometheus, the CLI."""

from __future__ import annotations


class DriftstreamError(Exception):
    """Root of every error raised by ``streams``."""
