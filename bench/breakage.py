"""Breakage benchmark: detection, delay and false alarms of the checks of broken pipelines and hidden drift.

Run from the repository root::

    .venv/bin/python -m bench.breakage                               # full run, about 7 min on 2 cores
    .venv/bin/python -m bench.breakage --quick                       # smoke test, about 15 s
    .venv/bin/python -m bench.breakage --out docs/breakage-table.md

Everything runs through the real ``ModelMonitor`` (docs/data-quality.md): the schema checks
(``missing_feature``, ``new_feature``, ``kind_change``, ``constraint``), ``out_of_range`` (a numeric
window test of each feature monitor), ``pca_reconstruction`` and ``outliers`` (the whole model's
numeric inputs together) and ``freshness`` (silence in processing time).

The model (every part): 20 features, no prediction, fed in batches of 500 events.

* 15 numeric: ``f00``..``f11`` N(0,1); ``amount`` Exp(1) (one of the 13 independent ones is
  exponential, so the constraint scenario has a non-negative feature to break, and the outlier and
  out-of-range checks meet a skewed one); ``x1``, ``x2`` N(0,1) with correlation 0.8.
* 5 categorical ``c0``..``c4``: a..f in ``bench.detection.STABLE_MIX``.
* Config: ``MonitorConfig(alert_per_detector=True)`` (the default false-alarm budget: 1 false alarm per
  model per week at 1000 events/s) with the constraint ``amount >= 0`` (``Constraint(min=0)``: any
  breaking event in a window fires). ``alert_per_detector`` only decides how alerts are grouped when
  sent (one per detector instead of one incident per feature); no line moves with it, and it lets each
  detector's own alerts be counted, as in ``bench.detection``'s segmented model.
* The monitor learns from the first 10,000 events: the schema reference, each feature's reference and
  the PCA fit from events 0-5000, the PCA and outlier calibration from events 5000-10,000.

Every stream has its own seed, derived from ``--seed``, the part, the scenario and the repetition
only: the numbers do not depend on the number of workers or on the order tasks finish in.

1. **Detection.** Streams of 30,000 events, the change at event 15,000 (five judged windows after
   the learning), ``--reps`` repetitions per scenario (full 20, ``--quick`` 3):

   * a column disappears: ``f03`` absent from every event from the change -> ``missing_feature``;
   * unit change: ``f01`` x 1000 -> ``out_of_range``;
   * outlier burst: for the 2000 events from the change, 5% of events get 1e6 on one numeric feature,
     drawn per event among the 15 -> ``outliers``;
   * correlation flip: ``x2 = rho x1 + sqrt(1 - rho^2) e`` with rho 0.8 -> -0.8 (both marginals stay
     N(0,1)) -> ``pca_reconstruction``; feature alerts on ``x1`` or ``x2`` are counted apart;
   * number sent as text: every value of ``f04`` arrives as a JSON string -> ``kind_change``;
   * a new feature: ``new_score`` N(0,1) in every event from the change -> ``new_feature``;
   * constraint: 2% of events carry a negative ``amount`` (its value negated) -> ``constraint``;
   * a silent model: events are fed with ``arrived_at`` on a simulated clock (one event per ms from a
     start second plus a random fraction; a batch is applied when its last event has arrived), the
     stream stops at the change, and ``check_freshness`` is called at every whole second of simulated
     time after the last batch (and after every batch while it sends: an alert then is a false alarm)
     -> ``freshness``, at the default ``stale_after`` of 600 s.

   Detection: the expected detector fires on the changed feature (the model, for the whole-model
   checks) at or after the change. Its alerts before the change, or on another subject, are false
   alarms. Delay: events from the change to the event that completed the first such verdict, counting
   it (a window of 1000 cannot do better than 1000); for freshness, seconds from the last event's
   arrival. Median and 90th percentile over the repetitions that detected. Besides: which other
   detectors fired at or after the change (on the changed feature or the model, or "elsewhere": on a
   feature that did not change), and the alerts of the other detectors before the change. Alerts count
   by episode (a firing alert of a (feature, detector) not already firing): an escalation from warning
   to critical is not counted again. The change falls on a window boundary (every check's windows are
   aligned on multiples of 1000 events here), so a detected change takes exactly one window at best.

2. **False alarms at the defaults.** ``--stable-streams`` stable streams (full 10, ``--quick`` 2) of
   10,000 learning events plus ``--stable-events`` counted events (full 10^6, ``--quick`` 10^5), the same
   model and config. An *alert episode* is a firing alert of a (feature, detector) not already firing;
   an escalation (firing again, from warning to critical) is counted apart. The bound is the exact
   one-sided 95% Poisson bound per 10^6 events. Beside it the check's share of the model's budget in
   the same unit: ``rate_per_value(config, 0)`` false alarms per judged value, times the values it
   judges per event (1 for a whole-model check, 1 per feature for a per-column one: 20 for
   ``missing_feature`` and ``kind_change``, 15 for ``out_of_range``).

3. **Calibration check.** That share (about 10^-12 per value) is far beyond what a simulation can
   reach, so, as in ``bench/budget.py`` part 2, the same model gets the lines of a share scaled up to
   ``--check-rate`` (default 10^-5 per value: a budget, at the default ``event_rate``, of that rate x
   1 week x the family size; per-window alpha 10^-2) on stable streams that give each check something
   to judge (a *dirty but stable* stream): from event 1 on (event 0 is whole: PCA takes its columns
   from it), every feature is missing at random in 10% of events, 1% of the numeric values arrive as
   JSON strings and 1% of the categorical ones as numbers; and from event 10,000 a feature the
   reference never had (``rare``) is present in each event with probability p*, the largest share a
   reference of 0 in 5000 events leaves plausible at the line's alpha / 2 (the case the
   ``new_feature`` line guards against). Each check's fixed option is lowered out of the way
   (``missing_feature_share``, ``new_feature_share``, ``kind_change_share``, ``out_of_range_warning``,
   ``outlier_warning`` to 10^-9; ``pca_alpha``, ``outlier_alpha`` to 0.5) so the budget's line alone
   decides. ``out_of_range`` runs twice on each stream: with the default margin (0.1 of the span) and
   with none (a second monitor, identical but for the margin), because the margin, not the line, is
   what keeps stable values in range. ``--check-streams`` streams (full 400, ``--quick`` 20) of 10,000
   learning plus ``--check-events`` counted events (full 40,000, ``--quick`` 20,000), each with its
   own references (a reference's own error moves a stream's false alarms together: the Poisson
   interval holds for the total only over many references).

   Counted: the windows that cross the line (every crossing, not only those that open an alert), read
   from the statistics and lines the monitor reports for each window it judged. Target: alpha per
   window x the windows judged (per column for the per-column checks). The observed count is compared
   with the target by its exact two-sided 95% Poisson interval.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing
import os
import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from bench.budget import poisson_interval
from bench.detection import CATEGORIES, STABLE_MIX, _git_revision, _Serial, poisson_upper
from detectors.budget import SECONDS_PER_WEEK, family_size, rate_per_value, window_alpha
from detectors.columns import Column
from detectors.config import MonitorConfig
from detectors.monitors import ModelBatch, ModelMonitor
from detectors.monitors.base import Alert
from detectors.monitors.multivariate import OUTLIERS, PCA
from detectors.monitors.schema import KIND_CHANGE, MISSING_FEATURE, NEW_FEATURE, Constraint
from detectors.reference import NumericReference

BATCH = 500
LEARNING = 10_000  # events the monitor learns from: references and PCA fit (5000), PCA calibration (5000)
CHANGE_AT = 15_000
LENGTH = 30_000
NORMALS = tuple(f"f{j:02d}" for j in range(12))
CONSTRAINED = "amount"  # Exp(1), constrained to >= 0
PAIR = ("x1", "x2")
RHO = 0.8
NUMERIC = (*NORMALS, CONSTRAINED, *PAIR)
CATEGORICAL = tuple(f"c{j}" for j in range(5))
DROPPED, SCALED, TEXT = "f03", "f01", "f04"
NEW = "new_score"
RARE = "rare"
UNIT = 1000.0
BURST_EVENTS, BURST_SHARE, BURST_VALUE = 2000, 0.05, 1e6
NEGATIVE_SHARE = 0.02
CLOCK_START = 1_700_000_000.0  # simulated processing time of event 0 (plus a random fraction of a second)
EVENT_SECONDS = 0.001  # one event per ms
CONSTRAINTS = {CONSTRAINED: Constraint(min=0.0)}
# The calibration check's dirt: missing at random, values of another JSON type.
MISSING, OTHER_KIND = 0.1, 0.01
TINY = 1e-9  # a fixed option lowered out of the way
NEW_CHECKS = (MISSING_FEATURE, NEW_FEATURE, KIND_CHANGE, "out_of_range", PCA, OUTLIERS)
PER_COLUMN = {MISSING_FEATURE: len(NUMERIC) + len(CATEGORICAL), KIND_CHANGE: len(NUMERIC) + len(CATEGORICAL),
              "out_of_range": len(NUMERIC)}  # fmt: skip


def detection_config() -> MonitorConfig:
    """The default config; each detector's own alerts sent (no line depends on it)."""
    return MonitorConfig(alert_per_detector=True)


def rng_for(seed: int, label: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(label.encode()), index)))


# -- the model's events ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str  # what breaks
    key: str  # its change, applied by ``events``
    detector: str  # the detector expected to catch it
    subject: str | None  # the feature it should name (None: the model)
    changed: tuple[str, ...]  # the features that change (other alerts on them are not "elsewhere")


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(f"column disappears ({DROPPED} absent)", "drop", MISSING_FEATURE, DROPPED, (DROPPED,)),
    Scenario(f"unit change ({SCALED} x {UNIT:g})", "unit", "out_of_range", SCALED, (SCALED,)),
    Scenario(f"outlier burst ({BURST_SHARE:.0%} of {BURST_EVENTS:,} events at {BURST_VALUE:g})", "burst", OUTLIERS,
             None, NUMERIC),
    Scenario(f"correlation flip ({PAIR[0]}, {PAIR[1]}: rho {RHO:g} -> {-RHO:g})", "flip", PCA, None, PAIR),
    Scenario(f"number sent as text ({TEXT})", "text", KIND_CHANGE, TEXT, (TEXT,)),
    Scenario(f"new feature ({NEW})", "new", NEW_FEATURE, NEW, (NEW,)),
    Scenario(f"constraint broken ({NEGATIVE_SHARE:.0%} negative {CONSTRAINED}, min 0)", "negative", "constraint",
             CONSTRAINED, (CONSTRAINED,)),
    Scenario("silent model (stops at the change)", "silent", "freshness", None, ()),
)  # fmt: skip


@dataclass(frozen=True)
class Dirt:
    """A dirty but stable stream (the calibration check): from event 1, every feature missing in a
    share of events and a share of its values of another JSON type; from ``rare_from`` a feature the
    reference never had, present in a share ``rare`` of events."""

    missing: float = 0.0
    other_kind: float = 0.0
    rare: float = 0.0
    rare_from: int = LEARNING


def events(rng: np.random.Generator, start: int, size: int, change: str | None = None,
           dirt: Dirt | None = None) -> dict[str, Column]:  # fmt: skip
    """The features of events ``start`` to ``start + size``: stable, then ``change`` from CHANGE_AT."""
    index = np.arange(start, start + size)
    after = index >= CHANGE_AT if change else np.zeros(size, dtype=bool)
    normal = rng.standard_normal((len(NORMALS) + 2, size))
    numbers = {name: normal[j] for j, name in enumerate(NORMALS)}
    numbers[CONSTRAINED] = rng.exponential(1.0, size)
    rho = np.where(after, -RHO, RHO) if change == "flip" else np.full(size, RHO)
    x1, noise = normal[-2], normal[-1]
    numbers[PAIR[0]], numbers[PAIR[1]] = x1, rho * x1 + np.sqrt(1.0 - rho * rho) * noise
    codes = {name: rng.choice(len(CATEGORIES), size=size, p=STABLE_MIX) for name in CATEGORICAL}
    raw: dict[str, list[Any]] = {}  # features sent as raw JSON values (a type other than their kind somewhere)
    if change == "unit":
        numbers[SCALED] = np.where(after, numbers[SCALED] * UNIT, numbers[SCALED])
    elif change == "burst":
        hit = after & (index < CHANGE_AT + BURST_EVENTS) & (rng.random(size) < BURST_SHARE)
        which = rng.integers(0, len(NUMERIC), size=size)
        for j, name in enumerate(NUMERIC):
            numbers[name] = np.where(hit & (which == j), BURST_VALUE, numbers[name])
    elif change == "negative":
        flipped = after & (rng.random(size) < NEGATIVE_SHARE)
        numbers[CONSTRAINED] = np.where(flipped, -numbers[CONSTRAINED], numbers[CONSTRAINED])
    elif change == "drop":
        if after.all():
            del numbers[DROPPED]
        else:
            numbers[DROPPED] = np.where(after, np.nan, numbers[DROPPED])
    elif change == "text" and after.any():
        values = numbers.pop(TEXT).tolist()
        raw[TEXT] = [str(v) if late else v for v, late in zip(values, after.tolist(), strict=True)]
    elif change == "new" and after.any():
        numbers[NEW] = np.where(after, rng.standard_normal(size), np.nan)
    if dirt is not None:
        _dirty(rng, index, numbers, codes, raw, dirt)
    features = {name: Column.from_numbers(values) for name, values in numbers.items()}
    features.update({name: Column.from_values(values) for name, values in raw.items()})
    features.update({name: Column.from_codes(c, list(CATEGORIES)) for name, c in codes.items() if name not in raw})
    return features


def _dirty(rng: np.random.Generator, index: np.ndarray, numbers: dict[str, np.ndarray],
           codes: dict[str, np.ndarray], raw: dict[str, list[Any]], dirt: Dirt) -> None:  # fmt: skip
    """Missing values and values of another JSON type (event 0 whole), and the rare new feature."""
    size = index.size
    late = index >= 1
    for name in NUMERIC:
        missing = late & (rng.random(size) < dirt.missing)
        other = late & ~missing & (rng.random(size) < dirt.other_kind)
        values = np.where(missing, np.nan, numbers[name])
        if other.any():
            listed = values.tolist()
            raw[name] = [str(v) if o else (None if m else v)
                         for v, o, m in zip(listed, other.tolist(), missing.tolist(), strict=True)]  # fmt: skip
            del numbers[name]
        else:
            numbers[name] = values
    for name in CATEGORICAL:
        missing = late & (rng.random(size) < dirt.missing)
        other = late & ~missing & (rng.random(size) < dirt.other_kind)
        c = np.where(missing, -1, codes[name])
        if other.any():
            raw[name] = [7 if o else (None if code < 0 else CATEGORIES[code])
                         for code, o in zip(c.tolist(), other.tolist(), strict=True)]  # fmt: skip
        else:
            codes[name] = c
    if dirt.rare:
        present = (index >= dirt.rare_from) & (rng.random(size) < dirt.rare)
        if present.any():
            numbers[RARE] = np.where(present, rng.standard_normal(size), np.nan)


def model_batches(rng: np.random.Generator, n: int, change: str | None = None, dirt: Dirt | None = None,
                  clock: float = CLOCK_START) -> Iterator[ModelBatch]:  # fmt: skip
    """``n`` events in batches of BATCH; event time (and arrival) ``clock`` + one ms per event."""
    for start in range(0, n, BATCH):
        size = min(BATCH, n - start)
        times = clock + np.arange(start, start + size) * EVENT_SECONDS
        yield ModelBatch(events(rng, start, size, change, dirt), times)


# -- 1. detection -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectionTask:
    scenario: Scenario
    rep: int
    seed: int

    @property
    def weight(self) -> int:
        return CHANGE_AT if self.scenario.key == "silent" else LENGTH


@dataclass
class Run:
    """One repetition of one scenario."""

    scenario: str
    rep: int
    delay: float | None = None  # events (freshness: seconds) from the change to the first expected alert
    severity: str | None = None  # of that alert
    false_alarms: int = 0  # of the expected detector: before the change, or on another subject after it
    others: set[str] = field(default_factory=set)  # other detectors firing at or after the change
    before: Counter[str] = field(default_factory=Counter)  # alert episodes of other detectors before the change
    pair: Counter[str] = field(default_factory=Counter)  # feature alert episodes on x1 / x2 at or after the change


def run_detection(task: DetectionTask) -> Run:
    scenario = task.scenario
    rng = rng_for(task.seed, f"detection {scenario.key}", task.rep)
    clock = CLOCK_START + float(rng.random())  # the fraction: where the last event falls between two checks
    monitor = ModelMonitor("m", detection_config(), constraints=CONSTRAINTS)
    run = Run(scenario.name, task.rep)
    silent = scenario.key == "silent"
    alerts: list[tuple[Alert, float]] = []  # (alert, seconds of silence for freshness)
    arrived = clock
    for batch in model_batches(rng, CHANGE_AT if silent else LENGTH, scenario.key, clock=clock):
        arrived = float(batch.timestamps[-1])  # applied once its last event has arrived
        alerts += [(a, math.nan) for a in monitor.observe(batch, arrived_at=arrived).alerts]
        alerts += [(a, math.nan) for a in monitor.check_freshness(arrived)]  # while it sends: a false alarm
    if silent:
        limit = 2 * monitor.config.stale_after
        second = math.floor(arrived) + 1
        while second - arrived <= limit:
            found = monitor.check_freshness(float(second))
            if found:
                alerts += [(a, second - arrived) for a in found]
                break
            second += 1
    firing: set[tuple[str | None, str]] = set()
    for alert, silence in alerts:  # in stream order
        key = (alert.feature, alert.detector)
        if alert.status == "resolved":
            firing.discard(key)
            continue
        if key in firing:  # an escalation of an alert already counted
            continue
        firing.add(key)
        at_or_after = alert.event_index >= CHANGE_AT or not math.isnan(silence)
        if alert.detector == scenario.detector:
            if at_or_after and alert.feature == scenario.subject:
                if run.delay is None:
                    run.delay = silence if silent else float(alert.event_index - CHANGE_AT + 1)
                    run.severity = alert.severity
                continue
            run.false_alarms += 1
            continue
        if not at_or_after:
            run.before[alert.detector] += 1
            continue
        here = alert.feature is None or alert.feature in scenario.changed
        run.others.add(alert.detector if here else f"{alert.detector} elsewhere")
        if alert.feature in PAIR:
            run.pair[alert.detector] += 1
    return run


# -- 2. false alarms at the defaults -------------------------------------------------------------------------


@dataclass(frozen=True)
class StableTask:
    rep: int
    counted: int
    seed: int

    @property
    def weight(self) -> int:
        return LEARNING + self.counted


@dataclass
class StableResult:
    events: int = 0  # counted
    episodes: Counter[str] = field(default_factory=Counter)  # by detector
    escalations: Counter[str] = field(default_factory=Counter)

    def add(self, other: StableResult) -> None:
        self.events += other.events
        self.episodes.update(other.episodes)
        self.escalations.update(other.escalations)


def run_stable(task: StableTask) -> StableResult:
    rng = rng_for(task.seed, "stable", task.rep)
    monitor = ModelMonitor("m", detection_config(), constraints=CONSTRAINTS)
    result = StableResult(events=task.counted)
    firing: set[tuple[str | None, str]] = set()
    for batch in model_batches(rng, LEARNING + task.counted):
        for alert in monitor.observe(batch).alerts:
            key = (alert.feature, alert.detector)
            if alert.status == "resolved":
                firing.discard(key)
                continue
            tally = result.escalations if key in firing else result.episodes
            firing.add(key)
            if alert.event_index >= LEARNING:
                tally[alert.detector] += 1
    return result


# -- 3. calibration check -------------------------------------------------------------------------------------


def check_config(rate: float, margin: float) -> MonitorConfig:
    """The detection config with the lines a share of ``rate`` false alarms per value gives, the new
    checks' fixed options lowered out of the way."""
    base = dataclasses.replace(
        detection_config(), missing_feature_share=TINY, new_feature_share=TINY, kind_change_share=TINY,
        out_of_range_warning=TINY, outlier_warning=TINY, pca_alpha=0.5, outlier_alpha=0.5,
        out_of_range_margin=margin,
    )  # fmt: skip
    budget = rate * base.event_rate * SECONDS_PER_WEEK * family_size(base, 0)
    return dataclasses.replace(base, false_alarm_budget=budget)


def rare_share(alpha: float, reference: int) -> float:
    """p*: the largest share of a feature that a reference of ``reference`` events without it leaves
    plausible at ``alpha / 2`` (the one-sided Clopper-Pearson bound the ``new_feature`` line rests on)."""
    return float(stats.beta.isf(alpha / 2.0, 1, reference))


@dataclass(frozen=True)
class CheckTask:
    rep: int
    counted: int
    rate: float
    seed: int

    @property
    def weight(self) -> int:
        return 2 * (LEARNING + self.counted)


@dataclass
class Counts:
    """Per check: windows crossing the line, units judged (window x column), the target, alert episodes."""

    alarms: Counter[str] = field(default_factory=Counter)
    judged: Counter[str] = field(default_factory=Counter)
    target: dict[str, float] = field(default_factory=dict)
    episodes: Counter[str] = field(default_factory=Counter)
    alphas: dict[str, float] = field(default_factory=dict)
    # out_of_range of each N(0,1) feature: (margin, the reference's share beyond its quantiles, as the line
    # takes it, the true N(0,1) share outside the range)
    ranges: list[tuple[float, float, float]] = field(default_factory=list)

    def count(self, check: str, crossed: int, judged: int, alpha: float) -> None:
        self.alarms[check] += crossed
        self.judged[check] += judged
        self.target[check] = self.target.get(check, 0.0) + alpha * judged
        self.alphas[check] = alpha

    def add(self, other: Counts) -> None:
        self.alarms.update(other.alarms)
        self.judged.update(other.judged)
        self.episodes.update(other.episodes)
        for check, target in other.target.items():
            self.target[check] = self.target.get(check, 0.0) + target
        self.alphas.update(other.alphas)
        self.ranges += other.ranges


OUT_OF_RANGE_ROWS = {0.1: "out_of_range (margin 0.1, the default)", 0.0: "out_of_range (margin 0)"}


def run_check(task: CheckTask) -> Counts:
    rng = rng_for(task.seed, "check", task.rep)
    monitors = {margin: ModelMonitor("m", check_config(task.rate, margin)) for margin in OUT_OF_RANGE_ROWS}
    assert MonitorConfig().out_of_range_margin in monitors
    main = monitors[MonitorConfig().out_of_range_margin]
    alpha = window_alpha(main.config, 0)
    assert alpha is not None
    dirt = Dirt(MISSING, OTHER_KIND, rare_share(alpha, main.config.reference_size))
    counts = Counts()
    width = main.config.window_size
    for batch in model_batches(rng, LEARNING + task.counted, dirt=dirt):
        first = main.events_seen
        end = first + len(batch)
        for margin, monitor in monitors.items():
            out = monitor.observe(batch)
            row = OUT_OF_RANGE_ROWS[margin]
            if first < LEARNING:
                continue
            for alert in out.alerts:
                if alert.status == "firing" and alert.event_index >= LEARNING:
                    name = row if alert.detector == "out_of_range" else alert.detector
                    if monitor is main or alert.detector == "out_of_range":
                        counts.episodes[name] += 1
            # out_of_range: every window a feature monitor judged in this batch reports its statistic.
            line_alpha = monitor.lines("numeric").out_of_range_alpha
            judged = crossed = 0
            for (version, scope, feature, detector), value in out.statistics.items():
                if detector == "out_of_range" and feature != RARE and version is None and scope == "":
                    judged += 1
                    crossed += value >= out.lines[version, scope, feature, detector]
            counts.count(row, crossed, judged, line_alpha)
        if first < LEARNING or end % width:
            continue
        # A window of the schema checks and of the multivariate tests closed with this batch.
        schema = main.schema
        assert schema.reference is not None and schema.alpha is not None
        columns = len(schema.reference)
        crossing = Counter(check for (_, check), (value, line) in schema.statistics().items() if value >= line)
        for check in (MISSING_FEATURE, KIND_CHANGE):
            counts.count(check, crossing[check], columns, schema.alpha)
        counts.count(NEW_FEATURE, crossing[NEW_FEATURE], 1, schema.alpha)
        multivariate = main.multivariate
        mean, line = multivariate.latest[PCA]
        upper = line >= multivariate.error_mean
        counts.count(PCA, int(mean > line if upper else mean < line), 1, multivariate.pca_alpha)
        share, line = multivariate.latest[OUTLIERS]
        counts.count(OUTLIERS, int(share >= line), 1, multivariate.outlier_alpha)
    # What the out_of_range line rests on, against the truth, for the N(0,1) features.
    for margin, monitor in monitors.items():
        for name in (*NORMALS, *PAIR):
            reference = monitor.whole.features[name].reference
            assert isinstance(reference, NumericReference)
            low, high, beyond = reference.value_range(monitor.config.out_of_range_quantile, margin)
            counts.ranges.append((margin, beyond / reference.count, float(stats.norm.cdf(low) + stats.norm.sf(high))))
    return counts


# -- running ---------------------------------------------------------------------------------------------------


Task = DetectionTask | StableTask | CheckTask


def run_any(task: Task) -> tuple[Task, Any]:
    if isinstance(task, DetectionTask):
        return task, run_detection(task)
    if isinstance(task, StableTask):
        return task, run_stable(task)
    return task, run_check(task)


@dataclass(frozen=True)
class Plan:
    reps: int  # repetitions of each detection scenario
    stable_streams: int
    stable_events: int  # counted events per stable stream, after LEARNING
    check_streams: int
    check_events: int  # counted events per calibration stream, after LEARNING
    check_rate: float = 1e-5  # false alarms per value the calibration check's lines are set for


FULL = Plan(reps=20, stable_streams=10, stable_events=1_000_000, check_streams=400, check_events=40_000)
QUICK = Plan(reps=3, stable_streams=2, stable_events=100_000, check_streams=20, check_events=20_000)


@dataclass
class Results:
    runs: dict[str, list[Run]] = field(default_factory=dict)  # scenario name -> runs in repetition order
    stable: StableResult = field(default_factory=StableResult)
    check: Counts = field(default_factory=Counts)


def run_plan(plan: Plan, seed: int, workers: int, progress: bool = True) -> Results:
    tasks: list[Task] = [DetectionTask(s, rep, seed) for s in SCENARIOS for rep in range(plan.reps)]
    tasks += [StableTask(rep, plan.stable_events, seed) for rep in range(plan.stable_streams)]
    tasks += [CheckTask(rep, plan.check_events, plan.check_rate, seed) for rep in range(plan.check_streams)]
    # Longest first, so no worker is left with a long task at the end; the results do not depend on the order.
    order = sorted(tasks, key=lambda t: -t.weight)
    done: dict[Task, Any] = {}
    started = time.perf_counter()
    with multiprocessing.Pool(workers) if workers > 1 else _Serial() as pool:
        for count, (task, result) in enumerate(pool.imap_unordered(run_any, order), 1):
            done[task] = result
            if progress and (count % 50 == 0 or count == len(tasks)):
                print(f"  {count}/{len(tasks)} streams, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    results = Results()
    for task in tasks:  # in task order: deterministic
        result = done[task]
        if isinstance(task, DetectionTask):
            results.runs.setdefault(task.scenario.name, []).append(result)
        elif isinstance(task, StableTask):
            results.stable.add(result)
        else:
            results.check.add(result)
    return results


# -- the report ------------------------------------------------------------------------------------------------


def _count(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counter.items(), key=lambda item: (-item[1], item[0])))


def detection_table(results: Results) -> list[str]:
    lines = [
        "| scenario | expected detector | detection rate | median delay | p90 delay | critical | false alarms of "
        "it | other detectors firing at or after the change (repetitions) | alerts before the change, any detector |",
        "|---|---|--:|--:|--:|--:|--:|---|---|",
    ]
    for scenario in SCENARIOS:
        runs = results.runs[scenario.name]
        delays = [r.delay for r in runs if r.delay is not None]
        unit = " s" if scenario.key == "silent" else ""
        digits = 1 if scenario.key == "silent" else 0

        def cell(q: float, delays: list[float] = delays, unit: str = unit, digits: int = digits) -> str:
            return f"{np.percentile(delays, q):,.{digits}f}{unit}" if delays else "-"

        others = Counter(name for run in runs for name in run.others)
        before = sum((run.before for run in runs), Counter())
        critical = sum(run.severity == "critical" for run in runs)
        lines.append(
            f"| {scenario.name} | {scenario.detector} | {len(delays) / len(runs):.0%} ({len(delays)}/{len(runs)}) "
            f"| {cell(50)} | {cell(90)} | {critical}/{len(delays)} | {sum(r.false_alarms for r in runs)} "
            f"| {_count(others) or 'none'} | {_count(before) or 'none'} |"
        )  # fmt: skip
    return lines


def pair_lines(results: Results) -> list[str]:
    flip = next(s for s in SCENARIOS if s.key == "flip")
    runs = results.runs[flip.name]
    pair = sum((run.pair for run in runs), Counter())
    hit = sum(bool(run.pair) for run in runs)
    what = f"{sum(pair.values())} alerts in {hit} of {len(runs)} repetitions ({_count(pair)})" if pair else "none"
    return [f"Correlation flip: feature alerts on {PAIR[0]} or {PAIR[1]} (any detector) at or after the change: "
            f"{what}."]  # fmt: skip


def stable_table(results: Results, plan: Plan) -> list[str]:
    config = detection_config()
    rate = rate_per_value(config, 0)
    assert rate is not None
    stable = results.stable
    lines = [
        "| check | judges | counted events | alert episodes | per 10^6 events | 95% upper bound per 10^6 "
        "| escalations | its budget share per 10^6 events |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for check in (*NEW_CHECKS, "constraint"):
        episodes = stable.episodes[check]
        columns = PER_COLUMN.get(check, 1)
        judges = f"{columns} features" if check in PER_COLUMN else "the model"
        share = f"{rate * columns * 1e6:.2g}" if check != "constraint" else "none (an assertion)"
        lines.append(f"| {check} | {judges} | {stable.events:,} | {episodes} | {episodes / stable.events * 1e6:.2f} "
                     f"| {poisson_upper(episodes, stable.events):.2f} | {stable.escalations[check]} | {share} |")
    others = Counter({d: n for d, n in stable.episodes.items() if d not in (*NEW_CHECKS, "constraint")})
    total = sum(others.values())
    lines += ["", f"The other detectors of the same monitors on the same streams (the per-feature drift tests and "
              f"change detectors): {total} alert episodes ({total / stable.events * 1e6:.2f} per 10^6 events, "
              f"bound {poisson_upper(total, stable.events):.2f}){': ' + _count(others) if others else ''}."]
    return lines


def check_table(results: Results, plan: Plan) -> list[str]:
    counts = results.check
    lines = [
        "| check | alpha per window | units judged (windows x columns) | target false alarms | crossing windows "
        "| 95% interval of the mean | observed / target | target inside | alert episodes |",
        "|---|--:|--:|--:|--:|--:|--:|---|--:|",
    ]
    rows = [MISSING_FEATURE, NEW_FEATURE, KIND_CHANGE, *OUT_OF_RANGE_ROWS.values(), PCA, OUTLIERS]
    for check in rows:
        observed, target = counts.alarms[check], counts.target.get(check, 0.0)
        low, high = poisson_interval(observed)
        if not counts.judged[check]:
            lines.append(f"| {check} | - | 0 | - | - | - | - | nothing judged | - |")
            continue
        inside = "yes" if low <= target <= high else ("**no, over**" if low > target else "no, conservative")
        lines.append(f"| {check} | {counts.alphas[check]:.3g} | {counts.judged[check]:,} | {target:.1f} | {observed} "
                     f"| {low:.1f}-{high:.1f} | {observed / target:.2f} | {inside} | {counts.episodes[check]} |")
    config = MonitorConfig()
    per_stream = len(NORMALS) + len(PAIR)
    lines += [
        "",
        f"What the out_of_range line rests on, over the N(0,1) features' references ({per_stream} per stream): the "
        f"share of the reference beyond its quantiles at {config.out_of_range_quantile:g} and "
        f"{1 - config.out_of_range_quantile:g} as `NumericReference.value_range` counts it (the reference rate the "
        "line starts from), against the true share of N(0,1) values outside the range the check judges by (mean "
        "and largest over the references):",
        "",
        "| margin | references | reference share beyond, as counted: mean | true share outside: mean "
        "| true share outside: largest |",
        "|--:|--:|--:|--:|--:|",
    ]
    for margin in OUT_OF_RANGE_ROWS:
        declared = np.array([d for m, d, _ in counts.ranges if m == margin])
        true = np.array([t for m, _, t in counts.ranges if m == margin])
        if declared.size:
            lines.append(f"| {margin:g} | {declared.size:,} | {declared.mean():.2e} | {true.mean():.2e} "
                         f"| {true.max():.2e} |")
    return lines


def report(plan: Plan, results: Results, *, command: str, revision: str, workers: int, elapsed: float) -> str:
    config = detection_config()
    rate = rate_per_value(config, 0)
    check = check_config(plan.check_rate, config.out_of_range_margin)
    check_alpha = window_alpha(check, 0)
    assert rate is not None and check_alpha is not None
    lines = [
        f"# Breakage benchmark ({'quick' if plan == QUICK else 'full' if plan == FULL else 'custom'} run)",
        "",
        f"`{command}`: git {revision}, {workers} worker(s), {elapsed:.0f} s on {os.cpu_count()} cores. Protocol and "
        "measures: the docstring of `bench/breakage.py`; the checks: docs/data-quality.md.",
        "",
        f"* Model: 20 features, {len(NORMALS)} N(0,1) ({NORMALS[0]}..{NORMALS[-1]}), {CONSTRAINED} Exp(1), "
        f"{PAIR[0]} and {PAIR[1]} N(0,1) with correlation {RHO:g}, {len(CATEGORICAL)} categorical a..f in "
        f"{list(STABLE_MIX)}; batches of {BATCH}; constraint {CONSTRAINED} >= 0. `ModelMonitor` with the default "
        f"`MonitorConfig` (budget {config.false_alarm_budget:g} false alarm per model per week at "
        f"{config.event_rate:g} events/s: {rate:.3g} per judged value, family of {family_size(config, 0):,}), "
        "`alert_per_detector` on to count each detector's own alerts (it moves no line).",
        f"* It learns from the first {LEARNING:,} events (references and PCA fit 0-5000, PCA and outlier "
        f"calibration 5000-10,000).",
        "",
        "## Detection",
        "",
        f"{plan.reps} repetitions per scenario, each with its own seed; streams of {LENGTH:,} events, the change at "
        f"event {CHANGE_AT:,}. Delay: events from the change to the event that completed the first alert of the "
        f"expected detector on the changed feature (the model for whole-model checks), counting it (a window of "
        f"{config.window_size} cannot do better than {config.window_size}); median and 90th percentile over the "
        "repetitions that detected. Silent model: one event per ms on a simulated clock, stopped at the change, "
        f"`check_freshness` every whole second; delay in seconds after the last event's arrival (`stale_after` "
        f"{config.stale_after:g} s). *critical*: first alert at critical severity, of those detected. *False alarms "
        "of it*: its alerts before the change or on a subject that did not change. Other detectors: *elsewhere* "
        "means on a feature that did not change. Alerts before the change: alerts of the other detectors on events "
        f"before {CHANGE_AT:,} (the checks judge from the end of their references: event {LEARNING // 2:,}, "
        f"{LEARNING:,} for pca_reconstruction and outliers). Alerts are counted by episode: an escalation of one "
        "already firing is not counted again.",
        "",
        *detection_table(results),
        "",
        *pair_lines(results),
        "",
        "## False alarms on stable streams at the default budget",
        "",
        f"{plan.stable_streams} stable streams of {LEARNING:,} + {plan.stable_events:,} events, each with its own "
        f"seed; alerts on events from {LEARNING:,} on counted ({results.stable.events:,} events). An alert episode "
        "is a firing alert of a (feature, detector) not already firing; escalations apart. The share: "
        f"`rate_per_value` ({rate:.3g}) x the values the check judges per event x 10^6: what the budget allows it, "
        "far below what this run can resolve (0 episodes in 10^7 events bound the rate at 0.30 per 10^6), hence "
        "the calibration check below.",
        "",
        *stable_table(results, plan),
        "",
        "## Calibration check",
        "",
        f"The same model with the lines of a share of {plan.check_rate:g} false alarms per value (budget "
        f"{check.false_alarm_budget:.4g} per week at {check.event_rate:g} events/s; per-window alpha "
        f"{check_alpha:.3g}), the new checks' fixed options lowered out of the way (`missing_feature_share`, "
        "`new_feature_share`, `kind_change_share`, `out_of_range_warning`, `outlier_warning` = 1e-9; `pca_alpha`, "
        "`outlier_alpha` = 0.5), so each line is the budget's alone. Streams dirty but stable: every feature "
        f"missing at random in {MISSING:.0%} of events, {OTHER_KIND:.0%} of numeric values as strings and of "
        f"categorical values as numbers (event 0 whole), and from event {LEARNING:,} a feature the reference "
        f"never had, `{RARE}`, in a share {rare_share(check_alpha, check.reference_size):.3g} of events (the largest "
        f"a reference of 0 in {check.reference_size} leaves plausible at alpha / 2: what the `new_feature` line "
        f"guards against). {plan.check_streams} streams of {LEARNING:,} + {plan.check_events:,} events, each with "
        "its own references. Counted: every judged window across its line (not only those that open an alert), "
        "from the statistic and line the monitor reports; target: alpha x units judged. out_of_range with its "
        "default margin and with none (a second monitor on the same streams, identical but for the margin).",
        "",
        *check_table(results, plan),
        "",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.breakage", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run for a smoke test (under a minute)")
    parser.add_argument("--seed", type=int, default=0, help="root seed of every stream (default 0)")
    parser.add_argument("--out", type=Path, help="also write the markdown report to this file")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: every core)")
    for name, help_text in (("reps", "repetitions per detection scenario"), ("stable-streams", "stable streams"),
                            ("stable-events", "counted events per stable stream"),
                            ("check-streams", "calibration streams"),
                            ("check-events", "counted events per calibration stream")):  # fmt: skip
        parser.add_argument(f"--{name}", type=int, help=f"{help_text} (default: the plan's)")
    parser.add_argument("--check-rate", type=float, help="false alarms per value in the calibration check (1e-5)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    overrides = {name: getattr(args, name) for name in ("reps", "stable_streams", "stable_events", "check_streams",
                                                       "check_events", "check_rate") if getattr(args, name) is not None}
    plan = dataclasses.replace(plan, **overrides)
    started = time.perf_counter()
    revision = _git_revision()  # now: the code this process has imported, not whatever is checked out later
    results = run_plan(plan, args.seed, args.workers)
    given = "".join(f" --{name.replace('_', '-')} {value:g}" for name, value in overrides.items())
    command = f"python -m bench.breakage{' --quick' if args.quick else ''}{given} --seed {args.seed}"
    text = report(plan, results, command=command, revision=revision, workers=args.workers,
                  elapsed=time.perf_counter() - started)  # fmt: skip
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
