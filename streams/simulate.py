"""A serving system's traffic, with drift injected on demand. Seeded: runs repeat."""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
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
FIRST_VERSION = "1"  # the model_version of events before any version switch
_CHUNK = 1000  # events are generated in fixed chunks so a seed gives the same stream at any batch size


@dataclass(frozen=True)
class SegmentMix:
    """One segment key of the events and the share of traffic each of its values gets."""

    key: str
    values: tuple[str, ...]
    weights: tuple[float, ...]  # relative shares, normalised on use

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("segment key must be non-empty")
        if not self.values or any(not v for v in self.values) or len(set(self.values)) != len(self.values):
            raise ValueError(f"segment {self.key!r}: values must be distinct non-empty strings, got {self.values}")
        if len(self.weights) != len(self.values):
            raise ValueError(f"segment {self.key!r}: {len(self.values)} values but {len(self.weights)} weights")
        if any(not (np.isfinite(w) and w > 0) for w in self.weights):
            raise ValueError(f"segment {self.key!r}: weights must be finite and > 0, got {self.weights}")

    @property
    def probabilities(self) -> np.ndarray:
        weights = np.array(self.weights, dtype=float)
        return weights / weights.sum()

    @classmethod
    def parse(cls, text: str) -> SegmentMix:
        """``KEY=VALUE[:WEIGHT],VALUE[:WEIGHT],...`` (a missing weight is 1), e.g. ``region=eu:0.5,us:0.5``."""
        key, sep, rest = text.partition("=")
        if not sep or not rest:
            raise ValueError(f"segment {text!r}: expected KEY=VALUE[:WEIGHT],..., e.g. region=eu:0.5,us:0.3,apac:0.2")
        values: list[str] = []
        weights: list[float] = []
        for item in rest.split(","):
            value, sep, weight = item.partition(":")
            values.append(value.strip())
            try:
                weights.append(float(weight) if sep else 1.0)
            except ValueError:
                raise ValueError(f"segment {text!r}: weight {weight!r} of {value!r} is not a number") from None
        return cls(key.strip(), tuple(values), tuple(weights))


@dataclass(frozen=True)
class Drift:
    feature: str
    start: int  # index of the model's first drifted event (counted over all its events, not the segment's)
    kind: DriftKind = "mean_shift"
    magnitude: float = 1.0  # sigmas (mean_shift), std factor (variance), null share (null_rate)
    model: str | None = None  # None: the first model
    segment: dict[str, str] | None = None  # only events whose segment has all these values drift

    def __post_init__(self) -> None:
        if self.kind not in DRIFT_KINDS:
            raise ValueError(f"kind must be one of {DRIFT_KINDS}, got {self.kind!r}")
        if self.start < 0:
            raise ValueError(f"start must be >= 0, got {self.start}")
        if self.segment is not None and not self.segment:
            raise ValueError("segment must name at least one key=value, or be None")

    @classmethod
    def parse(cls, text: str) -> Drift:
        """``[MODEL/]FEATURE:KIND:START[:MAGNITUDE][@KEY=VALUE[,KEY=VALUE]]``.

        E.g. ``f2:mean_shift:8000:1.0@region=eu``: f2 of the first model, +1 sigma from its event 8000,
        in region eu only.
        """
        body, at, where = text.partition("@")
        head, slash, spec = body.rpartition("/")
        parts = (spec if slash else body).split(":")
        if len(parts) not in (3, 4) or not parts[0]:
            raise ValueError(f"drift {text!r}: expected [MODEL/]FEATURE:KIND:START[:MAGNITUDE][@KEY=VALUE,...]")
        try:
            start = int(parts[2])
            magnitude = float(parts[3]) if len(parts) == 4 else 1.0
        except ValueError:
            raise ValueError(f"drift {text!r}: START must be an integer and MAGNITUDE a number") from None
        segment = parse_segment_filter(where) if at else None
        return cls(parts[0], start, parts[1], magnitude, (head or None) if slash else None, segment)  # type: ignore[arg-type]


def parse_segment_filter(text: str) -> dict[str, str]:
    """``KEY=VALUE[,KEY=VALUE]``: the segment a drift is confined to."""
    segment: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key or not value or key in segment:
            raise ValueError(f"segment {text!r}: expected KEY=VALUE[,KEY=VALUE] with distinct keys, e.g. region=eu")
        segment[key] = value
    return segment


@dataclass(frozen=True)
class VersionSwitch:
    """From event ``start`` on, a model's events carry ``version`` and its predictions move."""

    start: int  # index of the model's first event of the new version
    version: str
    shift: float = 1.0  # the new version's score is sigmoid(z + shift) where version 1's is sigmoid(z)
    model: str | None = None  # None: the first model

    def __post_init__(self) -> None:
        if self.start < 0:
            raise ValueError(f"version switch start must be >= 0, got {self.start}")
        if not self.version:
            raise ValueError("version must be non-empty")
        if not np.isfinite(self.shift):
            raise ValueError(f"version switch shift must be finite, got {self.shift}")

    @classmethod
    def parse(cls, text: str) -> VersionSwitch:
        """``[MODEL/]START:VERSION[:SHIFT]``, e.g. ``20000:v2`` or ``churn/20000:v2:-0.5``."""
        head, colon, rest = text.partition(":")
        model, slash, start = head.rpartition("/")
        version, _, shift = rest.partition(":")
        if not colon or not version:
            raise ValueError(f"version switch {text!r}: expected [MODEL/]START:VERSION[:SHIFT], e.g. 20000:v2")
        try:
            at, amount = int(start), float(shift) if shift else 1.0
        except ValueError:
            raise ValueError(f"version switch {text!r}: START must be an integer and SHIFT a number") from None
        return cls(at, version, amount, model if slash else None)


@dataclass(frozen=True)
class Traffic:
    models: tuple[str, ...] = ("fraud",)
    numeric: int = 8
    categorical: int = 2
    seed: int = 7
    drifts: tuple[Drift, ...] = field(default_factory=tuple)
    segments: tuple[SegmentMix, ...] = field(default_factory=tuple)  # every model's events carry these keys
    versions: tuple[VersionSwitch, ...] = field(default_factory=tuple)  # before the first: FIRST_VERSION

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("models must name at least one model")
        if self.numeric < 0 or self.categorical < 0 or self.numeric + self.categorical == 0:
            raise ValueError("numeric and categorical must be >= 0 and not both 0")
        names = set(self.feature_names)
        mixes = {mix.key: mix for mix in self.segments}
        if len(mixes) != len(self.segments):
            raise ValueError(f"segment keys must be distinct, got {[mix.key for mix in self.segments]}")
        for drift in self.drifts:
            if drift.feature not in names:
                raise ValueError(f"drift feature {drift.feature!r} is not one of {sorted(names)}")
            if drift.model is not None and drift.model not in self.models:
                raise ValueError(f"drift model {drift.model!r} is not one of {list(self.models)}")
            for key, value in (drift.segment or {}).items():
                # A drift confined to a segment no event carries would silently never happen.
                if key not in mixes:
                    raise ValueError(f"drift segment key {key!r} is not one of the traffic's {sorted(mixes)}")
                if value not in mixes[key].values:
                    raise ValueError(f"drift segment {key}={value!r}: {key} takes {list(mixes[key].values)}")
        for model in self.models:
            switches = self.switches(model)
            starts = [s.start for s in switches]
            if len(set(starts)) != len(starts):
                raise ValueError(f"version switches of {model!r} must start at distinct events, got {starts}")
            versions = [FIRST_VERSION] + [s.version for s in switches]
            if any(a == b for a, b in zip(versions, versions[1:], strict=False)):
                raise ValueError(f"version switches of {model!r} must each change the version, got {versions}")
        for switch in self.versions:
            if switch.model is not None and switch.model not in self.models:
                raise ValueError(f"version switch model {switch.model!r} is not one of {list(self.models)}")

    @property
    def feature_names(self) -> list[str]:
        return [f"f{i}" for i in range(self.numeric)] + [f"c{i}" for i in range(self.categorical)]

    def switches(self, model: str) -> list[VersionSwitch]:
        """The model's version switches in event order."""
        return sorted((s for s in self.versions if (s.model or self.models[0]) == model), key=lambda s: s.start)


def model_events(
    traffic: Traffic, model_index: int, clock: Callable[[], float] = time.time
) -> Iterator[dict[str, Any]]:
    """Endless events of one model; event i is the same for a given seed (``timestamp`` is ``clock()``)."""
    model = traffic.models[model_index]
    rng = np.random.default_rng([traffic.seed, model_index])
    # Segments and versions draw from generators of their own, so a traffic without them (and every
    # other key's values) stays the same stream as before they were added.
    segment_rngs = [
        np.random.default_rng([traffic.seed, model_index, 1, zlib.crc32(mix.key.encode())]) for mix in traffic.segments
    ]
    means = np.arange(traffic.numeric, dtype=float)
    stds = 1.0 + 0.1 * np.arange(traffic.numeric)
    drifts = [d for d in traffic.drifts if (d.model or traffic.models[0]) == model]
    switches = traffic.switches(model)
    switch_starts = np.array([s.start for s in switches], dtype=np.int64)
    shifts = np.array([0.0] + [s.shift for s in switches])
    versions = [FIRST_VERSION] + [s.version for s in switches]
    start = 0
    while True:
        numeric = rng.standard_normal((_CHUNK, traffic.numeric)) * stds + means
        categorical = rng.choice(len(CATEGORIES), size=(_CHUNK, traffic.categorical), p=_CATEGORY_P)
        reversed_mix = rng.choice(len(CATEGORIES), size=(_CHUNK, traffic.categorical), p=_CATEGORY_P[::-1])
        missing = rng.random((_CHUNK, traffic.numeric + traffic.categorical))
        segment_codes = [
            seg_rng.choice(len(mix.values), size=_CHUNK, p=mix.probabilities)
            for mix, seg_rng in zip(traffic.segments, segment_rngs, strict=True)
        ]
        columns: list[list[Any]] = [numeric[:, j].tolist() for j in range(traffic.numeric)]
        columns += [[CATEGORIES[c] for c in categorical[:, j]] for j in range(traffic.categorical)]
        for drift in drifts:
            first = max(0, drift.start - start)
            if first >= _CHUNK:
                continue
            j = traffic.feature_names.index(drift.feature)
            column = columns[j]
            rows: Iterable[int] = range(first, _CHUNK)
            if drift.segment:
                inside = np.ones(_CHUNK, dtype=bool)
                for k, mix in enumerate(traffic.segments):
                    if mix.key in drift.segment:
                        inside &= segment_codes[k] == mix.values.index(drift.segment[mix.key])
                rows = [i for i in rows if inside[i]]
            for i in rows:
                if drift.kind == "null_rate":
                    if missing[i, j] < drift.magnitude:
                        column[i] = None
                elif drift.kind == "category_mix" and j >= traffic.numeric:
                    column[i] = CATEGORIES[reversed_mix[i, j - traffic.numeric]]
                elif drift.kind == "mean_shift" and j < traffic.numeric:
                    column[i] = float(column[i] + drift.magnitude * stds[j])
                elif drift.kind == "variance" and j < traffic.numeric:
                    column[i] = float(means[j] + (column[i] - means[j]) * drift.magnitude)
        logit = numeric[:, 0] - means[0] if traffic.numeric else np.zeros(_CHUNK)
        version_index = np.zeros(_CHUNK, dtype=np.int64)
        if switches:
            version_index = np.searchsorted(switch_starts, np.arange(start, start + _CHUNK), side="right")
            logit = logit + shifts[version_index]
        score = 1.0 / (1.0 + np.exp(-logit))
        names = traffic.feature_names
        for i in range(_CHUNK):
            event: dict[str, Any] = {
                "model": model,
                "model_version": versions[version_index[i]],
                "event_id": f"{model}-{start + i}",
                "timestamp": clock(),
                "features": {name: columns[j][i] for j, name in enumerate(names)},
                "prediction": round(float(score[i]), 4),
            }
            if traffic.segments:
                event["segment"] = {
                    mix.key: mix.values[codes[i]] for mix, codes in zip(traffic.segments, segment_codes, strict=True)
                }
            yield event
        start += _CHUNK


def batches(
    traffic: Traffic, count: int, batch_size: int = 1, clock: Callable[[], float] = time.time
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(model, events) messages in sending order: round-robin over models, ``batch_size`` events each,
    ``count`` events per model (0: forever). Batching never changes the events themselves."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    streams = [model_events(traffic, i, clock) for i in range(len(traffic.models))]
    taken = [0] * len(streams)
    while count == 0 or min(taken) < count:
        for k, (model, stream) in enumerate(zip(traffic.models, streams, strict=True)):
            take = batch_size if count == 0 else min(batch_size, count - taken[k])
            if take > 0:
                taken[k] += take
                yield model, [next(stream) for _ in range(take)]


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
    sent = 0
    started = time.monotonic()
    for model, events in batches(traffic, count, batch_size):
        if should_stop and should_stop():
            break
        payload = orjson.dumps(events[0] if batch_size == 1 else events)
        while True:
            try:
                producer.produce(topic, key=model.encode(), value=payload)
                break
            except BufferError:
                producer.poll(0.05)
        sent += len(events)
        producer.poll(0)
        if rate > 0:
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    if own:
        producer.flush(30)
    return sent
