"""A serving system's traffic, with drift injected on demand. Seeded: runs repeat."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson
from confluent_kafka import Producer

from streams.settings import Settings

log = logging.getLogger(__name__)

DriftKind = Literal["mean_shift", "variance", "category_mix", "null_rate"]
DRIFT_KINDS: tuple[DriftKind, ...] = ("mean_shift", "variance", "category_mix", "null_rate")
CATEGORIES = ("a", "b", "c", "d", "e")
_CATEGORY_P = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
_CHUNK = 1000  # events are generated in fixed chunks so a seed gives the same stream at any batch size


@dataclass(frozen=True)
class Drift:
    feature: str
    start: int  # index of the model's first drifted event
    kind: DriftKind = "mean_shift"
    magnitude: float = 1.0  # sigmas (mean_shift), std factor (variance), null share (null_rate)
    model: str | None = None  # None: the first model

    def __post_init__(self) -> None:
        if self.kind not in DRIFT_KINDS:
            raise ValueError(f"kind must be one of {DRIFT_KINDS}, got {self.kind!r}")
        if self.start < 0:
            raise ValueError(f"start must be >= 0, got {self.start}")


@dataclass(frozen=True)
class Traffic:
    models: tuple[str, ...] = ("fraud",)
    numeric: int = 8
    categorical: int = 2
    seed: int = 7
    drifts: tuple[Drift, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("models must name at least one model")
        if self.numeric < 0 or self.categorical < 0 or self.numeric + self.categorical == 0:
            raise ValueError("numeric and categorical must be >= 0 and not both 0")
        names = set(self.feature_names)
        for drift in self.drifts:
            if drift.feature not in names:
                raise ValueError(f"drift feature {drift.feature!r} is not one of {sorted(names)}")

    @property
    def feature_names(self) -> list[str]:
        return [f"f{i}" for i in range(self.numeric)] + [f"c{i}" for i in range(self.categorical)]


def model_events(traffic: Traffic, model_index: int) -> Iterator[dict[str, Any]]:
    """Endless events of one model; event i is the same for a given seed."""
    model = traffic.models[model_index]
    rng = np.random.default_rng([traffic.seed, model_index])
    means = np.arange(traffic.numeric, dtype=float)
    stds = 1.0 + 0.1 * np.arange(traffic.numeric)
    drifts = [d for d in traffic.drifts if (d.model or traffic.models[0]) == model]
    start = 0
    while True:
        numeric = rng.standard_normal((_CHUNK, traffic.numeric)) * stds + means
        categorical = rng.choice(len(CATEGORIES), size=(_CHUNK, traffic.categorical), p=_CATEGORY_P)
        reversed_mix = rng.choice(len(CATEGORIES), size=(_CHUNK, traffic.categorical), p=_CATEGORY_P[::-1])
        missing = rng.random((_CHUNK, traffic.numeric + traffic.categorical))
        columns: list[list[Any]] = [numeric[:, j].tolist() for j in range(traffic.numeric)]
        columns += [[CATEGORIES[c] for c in categorical[:, j]] for j in range(traffic.categorical)]
        for drift in drifts:
            first = max(0, drift.start - start)
            if first >= _CHUNK:
                continue
            j = traffic.feature_names.index(drift.feature)
            column = columns[j]
            for i in range(first, _CHUNK):
                if drift.kind == "null_rate":
                    if missing[i, j] < drift.magnitude:
                        column[i] = None
                elif drift.kind == "category_mix" and j >= traffic.numeric:
                    column[i] = CATEGORIES[reversed_mix[i, j - traffic.numeric]]
                elif drift.kind == "mean_shift" and j < traffic.numeric:
                    column[i] = float(column[i] + drift.magnitude * stds[j])
                elif drift.kind == "variance" and j < traffic.numeric:
                    column[i] = float(means[j] + (column[i] - means[j]) * drift.magnitude)
        score = 1.0 / (1.0 + np.exp(-(numeric[:, 0] - means[0]) if traffic.numeric else np.zeros(_CHUNK)))
        names = traffic.feature_names
        for i in range(_CHUNK):
            yield {
                "model": model,
                "model_version": "1",
                "event_id": f"{model}-{start + i}",
                "timestamp": time.time(),
                "features": {name: columns[j][i] for j, name in enumerate(names)},
                "prediction": round(float(score[i]), 4),
            }
        start += _CHUNK


def produce(
    settings: Settings,
    traffic: Traffic,
    count: int,
    rate: float = 0.0,
    batch_size: int = 1,
    producer: Producer | None = None,
    topic: str | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Send ``count`` events per model (0: forever) at ``rate`` events/s (0: flat out)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    own = producer is None
    producer = producer or Producer({**settings.confluent_config(), "linger.ms": 5,
                                     "message.max.bytes": settings.max_message_bytes})  # fmt: skip
    topic = topic or settings.topic_events
    streams = [model_events(traffic, i) for i in range(len(traffic.models))]
    sent = 0
    per_model = [0] * len(streams)
    started = time.monotonic()
    while (count == 0 or min(per_model) < count) and not (should_stop and should_stop()):
        for k, (model, stream) in enumerate(zip(traffic.models, streams, strict=False)):
            take = batch_size if count == 0 else min(batch_size, count - per_model[k])
            if take <= 0:
                continue
            per_model[k] += take
            events = [next(stream) for _ in range(take)]
            payload = orjson.dumps(events[0] if batch_size == 1 else events)
            while True:
                try:
                    producer.produce(topic, key=model.encode(), value=payload)
                    break
                except BufferError:
                    producer.poll(0.05)
            sent += take
        producer.poll(0)
        if rate > 0:
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    if own:
        producer.flush(30)
    return sent
