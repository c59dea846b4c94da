"""A serving system's traffic, with drift injected on demand. Seeded: runs repeat."""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import math
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
import orjson
from confluent_kafka import Producer

from streams.producer import DeliveryError, EventProducer, Format
from streams.settings import Settings

log = logging.getLogger(__name__)

DriftKind = Literal["mean_shift", "variance", "category_mix", "null_rate"]
DRIFT_KINDS: tuple[DriftKind, ...] = ("mean_shift", "variance", "category_mix", "null_rate")
CATEGORIES = ("a", "b", "c", "d", "e")
_CATEGORY_P = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
Task = Literal["classification", "regression"]
TASKS: tuple[Task, ...] = ("classification", "regression")
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
    # classification: the prediction is the score sigmoid(f0 - mean0 + version shift), in (0, 1);
    # regression: it is the value f0 - mean0 + version shift itself.
    task: Task = "classification"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
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
            self.check_segment("drift", drift.segment)
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

    def check_segment(self, what: str, segment: dict[str, str] | None) -> None:
        """A ``what`` confined to a segment no event carries would silently never happen: say so."""
        mixes = {mix.key: mix for mix in self.segments}
        for key, value in (segment or {}).items():
            if key not in mixes:
                raise ValueError(f"{what} segment key {key!r} is not one of the traffic's {sorted(mixes)}")
            if value not in mixes[key].values:
                raise ValueError(f"{what} segment {key}={value!r}: {key} takes {list(mixes[key].values)}")

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
    return _model_stream(traffic, model_index, clock)


def _model_stream(
    traffic: Traffic,
    model_index: int,
    clock: Callable[[], float],
    latent: Callable[[list[float], list[float]], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """``model_events``; ``latent`` gets each chunk's latent (never drifted) f0 and f1 in sigmas
    before the chunk's first event is yielded (f1: zeros when there is no f1).

    The model's prediction is a function of the latent f0, and so is the world's truth
    (``labeled_events``): an injected data drift changes what is logged, never the world.
    """
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
        # A classifier's prediction is the score sigmoid(logit); a regressor's the value itself.
        score = 1.0 / (1.0 + np.exp(-logit)) if traffic.task == "classification" else logit
        if latent is not None:
            z = (numeric[:, :2] - means[:2]) / stds[:2]
            latent(z[:, 0].tolist() if traffic.numeric else [0.0] * _CHUNK,
                   z[:, 1].tolist() if traffic.numeric > 1 else [0.0] * _CHUNK)  # fmt: skip
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


# -- labels: the world's truth, late ----------------------------------------------------------------------

ConceptKind = Literal["rotate", "flip", "shift"]
CONCEPT_KINDS: tuple[ConceptKind, ...] = ("rotate", "flip", "shift")
_CONCEPT_MAGNITUDE: dict[str, float] = {"rotate": 70.0, "flip": 180.0, "shift": 1.25}
DelayKind = Literal["fixed", "exp", "uniform"]
DELAY_KINDS: tuple[DelayKind, ...] = ("fixed", "exp", "uniform")
WORLD_NOISE = 0.3  # the standard deviation of the world's own noise around its truth, in sigmas of f0


@dataclass(frozen=True)
class ConceptDrift:
    """From the model's event ``start`` on, the world answers differently to the very same inputs.

    The truth is a function of the latent f0 and f1 in sigmas (z0, z1). Before any concept drift it
    is z0, the model's own logit, so the model is right but for the world's noise and the label noise.
    ``rotate``: cos(a) z0 + sin(a) z1, the truth turns by ``magnitude`` degrees (default 70) toward f1,
    which the model ignores; ``flip``: -z0; ``shift``: z0 - ``magnitude`` (default 1.25 sigmas), the class
    boundary (or the regression value) moves. With the default label noise (0.05) a classifier's error
    rate goes from about 13% to about 40% (rotate 70, shift 1.25) or 87% (flip); see
    ``LabelPlan.error_rate``. The events themselves never change.
    """

    start: int  # the model's first event with the new truth (counted over all its events)
    kind: ConceptKind = "rotate"
    magnitude: float | None = None  # degrees (rotate) or sigmas (shift); None: the kind's default
    model: str | None = None  # None: the first model
    segment: dict[str, str] | None = None  # only events whose segment has all these values

    def __post_init__(self) -> None:
        if self.kind not in CONCEPT_KINDS:
            raise ValueError(f"concept drift kind must be one of {CONCEPT_KINDS}, got {self.kind!r}")
        if self.start < 0:
            raise ValueError(f"concept drift start must be >= 0, got {self.start}")
        if self.magnitude is not None and not np.isfinite(self.magnitude):
            raise ValueError(f"concept drift magnitude must be finite, got {self.magnitude}")
        if self.kind == "flip" and self.magnitude is not None:
            raise ValueError("a flip concept drift takes no magnitude")
        if self.segment is not None and not self.segment:
            raise ValueError("segment must name at least one key=value, or be None")

    @property
    def size(self) -> float:
        """The magnitude, or the kind's default."""
        return _CONCEPT_MAGNITUDE[self.kind] if self.magnitude is None else self.magnitude

    def truth(self, z0: float, z1: float) -> float:
        if self.kind == "shift":
            return z0 - self.size
        if self.kind == "flip":
            return -z0
        angle = math.radians(self.size)
        return math.cos(angle) * z0 + math.sin(angle) * z1

    def covers(self, event: dict[str, Any]) -> bool:
        segment = event.get("segment") or {}
        return all(segment.get(key) == value for key, value in (self.segment or {}).items())

    @classmethod
    def parse(cls, text: str) -> ConceptDrift:
        """``[MODEL/]EVENT[:KIND[:MAGNITUDE]][@KEY=VALUE[,KEY=VALUE]]``, e.g. ``8000``, ``churn/5000:flip``,
        ``8000:shift:1.0@region=eu``."""
        body, at, where = text.partition("@")
        head, slash, spec = body.rpartition("/")
        parts = (spec if slash else body).split(":")
        if len(parts) > 3 or not parts[0] or (slash and not head):
            raise ValueError(f"concept drift {text!r}: expected [MODEL/]EVENT[:KIND[:MAGNITUDE]][@KEY=VALUE,...]")
        try:
            start = int(parts[0])
            magnitude = float(parts[2]) if len(parts) == 3 else None
        except ValueError:
            raise ValueError(f"concept drift {text!r}: EVENT must be an integer and MAGNITUDE a number") from None
        kind = parts[1] if len(parts) > 1 else "rotate"
        segment = parse_segment_filter(where) if at else None
        return cls(start, kind, magnitude, head if slash else None, segment)  # type: ignore[arg-type]


@dataclass(frozen=True)
class LabelDelay:
    """Seconds from a prediction's event time to its label's: ``fixed`` (``value``), ``exp`` (mean
    ``value``) or ``uniform`` (``value`` to ``high``)."""

    kind: DelayKind = "fixed"
    value: float = 0.0
    high: float | None = None  # uniform only

    def __post_init__(self) -> None:
        if self.kind not in DELAY_KINDS:
            raise ValueError(f"label delay kind must be one of {DELAY_KINDS}, got {self.kind!r}")
        if not (np.isfinite(self.value) and self.value >= 0):
            raise ValueError(f"label delay must be finite and >= 0, got {self.value}")
        if (self.kind == "uniform") != (self.high is not None):
            raise ValueError("a uniform label delay takes a high bound, and only a uniform one")
        if self.high is not None and not (np.isfinite(self.high) and self.high >= self.value):
            raise ValueError(f"uniform label delay: high bound must be finite and >= {self.value}, got {self.high}")

    @property
    def mean(self) -> float:
        return (self.value + self.high) / 2 if self.high is not None else self.value

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "exp":
            return rng.exponential(self.value, n) if self.value > 0 else np.zeros(n)
        if self.high is not None:  # uniform
            return rng.uniform(self.value, self.high, n)
        return np.full(n, self.value)

    @classmethod
    def parse(cls, text: str) -> LabelDelay:
        """``fixed:SECONDS``, ``exp:MEAN_SECONDS`` or ``uniform:LOW:HIGH``, e.g. ``exp:30``."""
        kind, *numbers = text.strip().split(":")
        if kind not in DELAY_KINDS or len(numbers) != (2 if kind == "uniform" else 1):
            raise ValueError(f"label delay {text!r}: expected fixed:SECONDS, exp:MEAN or uniform:LOW:HIGH")
        try:
            values = [float(number) for number in numbers]
        except ValueError:
            raise ValueError(f"label delay {text!r}: the seconds must be numbers") from None
        return cls(kind, values[0], values[1] if kind == "uniform" else None)


@dataclass(frozen=True)
class LabelPlan:
    """Which events get a label, what it says and when it comes (see ``labeled_events``)."""

    noise: float = 0.05  # share of labels that are wrong: a flipped class, or an unrelated regression value
    delay: LabelDelay = field(default_factory=LabelDelay)
    share: float = 1.0  # share of events that ever get a label
    early: float = 0.0  # share of the labels sent before their event (their prediction is the one late)
    concept_drifts: tuple[ConceptDrift, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for name in ("noise", "share", "early"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"label {name} must be a share in [0, 1], got {value}")

    def check(self, traffic: Traffic) -> None:
        """Raise ``ValueError`` naming what in this plan the traffic cannot carry."""
        if traffic.numeric < 1:
            raise ValueError("labels need a numeric feature: the truth is a function of f0")
        for drift in self.concept_drifts:
            if drift.model is not None and drift.model not in traffic.models:
                raise ValueError(f"concept drift model {drift.model!r} is not one of {list(traffic.models)}")
            if drift.kind == "rotate" and traffic.numeric < 2:
                raise ValueError("a rotate concept drift turns the truth toward f1: it needs 2 numeric features")
            traffic.check_segment("concept drift", drift.segment)

    def error_rate(self, concept: ConceptDrift | None = None) -> float:
        """The expected error rate of the version-1 classifier (class 1 when its score > 0.5) under the
        stable truth, or under ``concept``'s. About 0.134 stable with the default noise."""
        from scipy.special import ndtr

        z = np.linspace(-8.0, 8.0, 16_001)
        weight = np.exp(-0.5 * z * z)
        weight /= weight.sum()
        if concept is not None and concept.kind == "shift":
            mean, sd = z - concept.size, WORLD_NOISE
        else:
            angle = math.radians(concept.size) if concept is not None else 0.0
            mean, sd = math.cos(angle) * z, math.hypot(math.sin(angle), WORLD_NOISE)
        one = ndtr(mean / sd)  # P(true class 1 | z0) before the label noise
        one = one * (1 - self.noise) + (1 - one) * self.noise
        return float(np.sum(weight * np.where(z > 0, 1 - one, one)))


class Labeled(NamedTuple):
    """One event of ``labeled_events`` and its label event (None: it never gets one)."""

    event: dict[str, Any]
    label: dict[str, Any] | None  # {"model", "event_id", "label", "timestamp"}, the contract's label event
    delay: float | None  # seconds from the event's timestamp to the label's; None: no label
    early: bool  # the label is sent before its event


def labeled_events(
    traffic: Traffic, model_index: int, plan: LabelPlan, clock: Callable[[], float] = time.time
) -> Iterator[Labeled]:
    """``model_events`` with the world's answer to each: endless, and the same for a given seed.

    The events are exactly ``model_events``' (the labels draw from generators of their own), whatever
    the plan. The truth of event i is z0 (its latent f0 in sigmas, the model's own logit), or a
    ``ConceptDrift``'s function of z0 and z1 from its start on, plus the world's noise (sd
    ``WORLD_NOISE``). A classifier's label is 1 when that is > 0, else 0, flipped with probability
    ``plan.noise``; a regressor's is the value itself (4 decimals), replaced with probability
    ``plan.noise`` by an unrelated standard normal value. The truth ignores injected data drifts, as
    the prediction does: they change what is logged, not the world. A version switch's shift moves the
    prediction, not the truth: a new version with a shift is a worse model.

    A share ``plan.share`` of the events get a label. Its timestamp is the event's plus a delay drawn
    from ``plan.delay``; a share ``plan.early`` of the labels are sent before their event instead, with
    the event's own timestamp (delay 0), as when the prediction is the one that comes late.
    The label values, the labeled share and the delays draw from three generators of their own: a
    change of delay, share or early share moves nothing else.
    """
    plan.check(traffic)
    return _labeled(traffic, model_index, plan, clock)


def _labeled(traffic: Traffic, model_index: int, plan: LabelPlan, clock: Callable[[], float]) -> Iterator[Labeled]:
    model = traffic.models[model_index]
    truth_rng, pick_rng, delay_rng = (np.random.default_rng([traffic.seed, model_index, k]) for k in (2, 3, 4))
    drifts = sorted((d for d in plan.concept_drifts if (d.model or traffic.models[0]) == model), key=lambda d: d.start)
    regression = traffic.task == "regression"
    latent: list[list[float]] = [[], []]  # the current chunk's latent z0 and z1

    def keep(z0: list[float], z1: list[float]) -> None:
        latent[:] = [z0, z1]

    for i, event in enumerate(_model_stream(traffic, model_index, clock, keep)):
        j = i % _CHUNK
        if j == 0:  # drawn in fixed chunks, like the events
            z0s, z1s = latent
            noise = (truth_rng.standard_normal(_CHUNK) * WORLD_NOISE).tolist()
            wrong = (truth_rng.random(_CHUNK) < plan.noise).tolist()
            unrelated = truth_rng.standard_normal(_CHUNK).tolist()
            picks = pick_rng.random((_CHUNK, 2))
            labeled, early = (picks[:, 0] < plan.share).tolist(), (picks[:, 1] < plan.early).tolist()
            delays = plan.delay.sample(delay_rng, _CHUNK).tolist()
        if not labeled[j]:
            yield Labeled(event, None, None, False)
            continue
        truth = z0s[j]
        for drift in reversed(drifts):  # the latest concept drift under way for this event wins
            if drift.start <= i and drift.covers(event):
                truth = drift.truth(z0s[j], z1s[j])
                break
        truth += noise[j]
        value: int | float
        if regression:
            value = round(unrelated[j] if wrong[j] else truth, 4)
        else:
            value = int((truth > 0) != wrong[j])
        delay = 0.0 if early[j] else delays[j]
        label = {"model": model, "event_id": event["event_id"], "label": value, "timestamp": event["timestamp"] + delay}
        yield Labeled(event, label, delay, early[j])


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


class Message(NamedTuple):
    """One Kafka message of the simulation: events or labels of one model (the key)."""

    topic: Literal["events", "labels"]
    model: str
    values: list[dict[str, Any]]


def messages(
    traffic: Traffic,
    count: int,
    batch_size: int = 1,
    labels: LabelPlan | None = None,
    label_batch: int = 1,
    clock: Callable[[], float] = time.time,
) -> Iterator[Message]:
    """The simulation's messages in sending order: the events of ``batches`` and, with ``labels``, their labels.

    The simulated clock is the latest event timestamp sent. A label waits until the clock passes its
    timestamp (a label due with an events message follows it), then goes out in messages of
    ``label_batch`` labels of one model; early labels go out right before the events message that
    holds their event. When the events end, every label still waiting goes out at once, in label time.
    """
    if label_batch < 1:
        raise ValueError(f"label_batch must be >= 1, got {label_batch}")
    if labels is None:
        yield from (Message("events", model, events) for model, events in batches(traffic, count, batch_size, clock))
        return
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    streams = [labeled_events(traffic, i, labels, clock) for i in range(len(traffic.models))]
    taken = [0] * len(streams)
    pending: list[tuple[float, int, dict[str, Any]]] = []  # a heap of (label time, sequence, label)
    sequence = itertools.count()
    outbox: dict[str, list[dict[str, Any]]] = {model: [] for model in traffic.models}
    now = -math.inf

    def due(until: float) -> Iterator[Message]:
        while pending and pending[0][0] <= until:
            label = heapq.heappop(pending)[2]
            box = outbox[label["model"]]
            box.append(label)
            if len(box) == label_batch:
                yield Message("labels", label["model"], box[:])
                box.clear()

    while count == 0 or min(taken) < count:
        for k, (model, stream) in enumerate(zip(traffic.models, streams, strict=True)):
            take = batch_size if count == 0 else min(batch_size, count - taken[k])
            if take <= 0:
                continue
            taken[k] += take
            items = [next(stream) for _ in range(take)]
            early = [item.label for item in items if item.early and item.label is not None]
            for first in range(0, len(early), label_batch):
                yield Message("labels", model, early[first : first + label_batch])
            yield Message("events", model, [item.event for item in items])
            for item in items:
                if item.label is not None and not item.early:
                    heapq.heappush(pending, (item.label["timestamp"], next(sequence), item.label))
                now = max(now, item.event["timestamp"])
            yield from due(now)
    yield from due(math.inf)
    for model, box in outbox.items():
        if box:
            yield Message("labels", model, box)


@dataclass(frozen=True)
class Sent:
    """What ``send`` produced, and (when it flushed its own producer) how much the broker took."""

    events: int
    labels: int
    delivered_events: int | None = None  # None: the caller's producer, not flushed here
    delivered_labels: int | None = None
    error: str | None = None  # the first delivery error, if any

    @property
    def undelivered(self) -> int:
        """Events and labels produced but not acknowledged by the broker (0 when unknown)."""
        if self.delivered_events is None or self.delivered_labels is None:
            return 0
        return self.events - self.delivered_events + self.labels - self.delivered_labels


def produce(
    settings: Settings,
    traffic: Traffic,
    count: int,
    rate: float = 0.0,
    batch_size: int = 1,
    producer: Producer | None = None,
    topic: str | None = None,
    should_stop: Callable[[], bool] | None = None,
    labels: LabelPlan | None = None,
    label_batch: int = 1,
    format: Format = "rows",  # noqa: A002 - EventProducer's name
) -> int:
    """Send ``count`` events per model (0: forever) at ``rate`` events/s (0: flat out); how many.

    With ``labels``, their labels go to ``settings.topic_labels`` as ``messages`` orders them (see ``send``).
    """
    return send(settings, traffic, count, rate, batch_size, producer, topic, should_stop, labels, label_batch,
                format=format).events  # fmt: skip


def send(
    settings: Settings,
    traffic: Traffic,
    count: int,
    rate: float = 0.0,
    batch_size: int = 1,
    producer: Producer | None = None,
    topic: str | None = None,
    should_stop: Callable[[], bool] | None = None,
    labels: LabelPlan | None = None,
    label_batch: int = 1,
    clock: Callable[[], float] = time.time,
    progress: Callable[[int], None] | None = None,
    flush_timeout: float = 30.0,
    format: Format = "rows",  # noqa: A002 - EventProducer's name
) -> Sent:
    """``produce``, saying how many events and labels went out and, with its own producer (flushed
    for up to ``flush_timeout`` seconds), how many the broker acknowledged. Messages are keyed by
    model name. Events go through an ``EventProducer`` of ``format`` whose batches hold up to
    ``batch_size`` events of one model version: in rows, one event is sent as an object, more as a
    JSON array; json and arrow send the contract's columnar batches. Labels are JSON rows (one an
    object, more an array). ``rate`` paces the events only. ``progress`` is called with the events
    sent so far after each events message of ``messages``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if labels is not None:
        labels.check(traffic)
    own = producer is None
    producer = producer or Producer({**settings.confluent_config(), "linger.ms": 5,
                                     "message.max.bytes": settings.max_message_bytes})  # fmt: skip
    # The generator's batches fill the producer's: a message leaves as soon as its last event is in
    # (a batch split by a version switch waits for its linger, or the end).
    # A caller's producer keeps its own default delivery callback (the throughput bench counts with it).
    events = EventProducer(settings, format=format, max_batch_events=batch_size, topic=topic, producer=producer,
                           delivery_reports=own)  # fmt: skip
    sent = {"events": 0, "labels": 0}
    delivered_labels = 0
    errors: list[str] = []

    def on_label_delivery(count: int, error: Any, _message: Any) -> None:
        nonlocal delivered_labels
        if error is None:
            delivered_labels += count
        elif not errors:
            errors.append(error.str())

    started = time.monotonic()
    for message in messages(traffic, count, batch_size, labels, label_batch, clock):
        if should_stop and should_stop():
            break
        values = message.values
        if message.topic == "events":
            for event in values:
                events.send_event(event)
            events.poll()
        else:
            payload = orjson.dumps(values[0] if label_batch == 1 else values)
            while True:
                try:
                    producer.produce(settings.topic_labels, key=message.model.encode(), value=payload,
                                     on_delivery=functools.partial(on_label_delivery, len(values)))  # fmt: skip
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        sent[message.topic] += len(values)
        if progress is not None and message.topic == "events":
            progress(sent["events"])
        if rate > 0 and message.topic == "events":
            ahead = sent["events"] / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    if not own:
        events.send_buffered()
        return Sent(sent["events"], sent["labels"])
    try:
        events.flush(flush_timeout)
    except DeliveryError:
        pass  # counted below, with the labels'
    error = events.stats.last_error or (errors[0] if errors else None)
    return Sent(sent["events"], sent["labels"], events.stats.delivered, delivered_labels, error)
