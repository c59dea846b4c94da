"""Detection benchmark: false alarms, detection rate, detection delay and speed of every detector.

Run from the repository root::

    .venv/bin/python -m bench.detection                              # full run, about 10 min on 2 cores
    .venv/bin/python -m bench.detection --quick                      # smoke test, about 35 s
    .venv/bin/python -m bench.detection --out docs/detection-table.md
    .venv/bin/python -m bench.detection --sweep                      # plus parameter sweeps, about 10 min more
    .venv/bin/python -m bench.detection --segments-only              # only the segmented model, about 10 min
    .venv/bin/python -m bench.detection --no-segments                # all but the segmented model

Every run but ``--no-segments`` ends with the segmented model (below). The scenarios of broken
pipelines and hidden drift (a column that disappears, a unit change, an outlier burst, a correlation
flip, a silent model, ...) run through the model monitor in ``bench/breakage.py``.

Protocol (what the production monitor does with one feature):

* Reference: 5000 values of the stable distribution, drawn afresh (seeded) for every repetition and
  built as production builds it: ``NumericReference.build(values, bins=10)``,
  ``CategoricalReference.build(labels, max_categories=50)``.
* The stream follows the reference and is fed in batches of 500 values. The contract makes results
  independent of the batch size; every run checks it (batches of 1, 137, 500 and 4096 on one stream).
* Windowed tests: ``WindowedDetector`` with a window of 1000 values judged every 1000 (tumbling, the
  default); psi and ks also sliding, judged every 100 values.
* Change detectors (adwin, page_hinkley) get normal scores against the reference,
  ``reference.normal_scores(x)`` (``Phi^-1`` of the reference's CDF), of the non-missing values only.
* Error-stream detectors (ddm, eddm, hddm_a, hddm_w) get the 0/1 errors (1 = wrong) of a river
  ``HoeffdingTreeClassifier`` trained prequentially (predict, score, learn) on river's SEA (variant
  0 -> 3) and Agrawal (classification function 0 -> 2) generators. The tree, not GaussianNB: in
  river 0.26 it is the faster of the two (about 80 vs 270 microseconds per SEA event here).
* Parameters: the registry's defaults unless a row names others.
* Every repetition has its own seed, derived from ``--seed``, the scenario and the repetition number
  only: the numbers do not depend on the number of workers or on the order tasks finish in.

Scenarios (change at event 10,000 after the reference; each repetition a new seed):

* numeric: stable N(0,1); mean +0.25, +0.5, +1 sd; std x1.5, x2; mean moving linearly from 0 to
  1 sd over events 10,000-20,000 (40,000 events); missing values 0% -> 20% (null_rate only: the
  other tests and the change detectors see only the non-missing values, which do not change).
* categorical: a..f in [.3, .25, .2, .1, .1, .05]; the mix changing to [.2, .2, .2, .15, .15, .1];
  5% of the values becoming an unseen category "zz"; 20% None (null_rate only).
* error streams: SEA variant 0 -> 3 and Agrawal function 0 -> 2, abrupt and gradual (river's
  sigmoid of width 2000, placed so the transition starts at 10,000); 20,000 events. The stable
  baseline is SEA without drift; the first 1000 events of each stable stream are not counted (the
  tree is learning), though the detectors see them.

Measures:

* False alarms per 10^6 stable events: drift verdicts on stable streams over the events fed. A
  windowed test counts every window judged drift, so one excursion lasting several consecutive (or,
  sliding, overlapping) windows counts once per window. "Alert episodes" counts it once: a run of
  consecutive drift windows, or change points less than 5000 events apart, which is roughly what
  the monitor's alert policy sends. The upper bound is the exact one-sided 95% Poisson bound on the
  rate ("0 in 10^7 events" reads "at most 0.30 per 10^6").
* Detection rate: share of repetitions with a drift verdict at or after the change point (a
  verdict before it is a false alarm, not a detection).
* Delay: events from the change point to the first drift verdict at or after it, counting the
  event that completed the verdict (so a tumbling window of 1000 cannot do better than 1000).
  Median and 90th percentile over the repetitions that detected.
* updates/s: values per second through ``update`` on a 10^5-value stable stream in batches of 500,
  measured once per detector before the parallel part starts; a shared machine, so read ratios.

A segmented model (the real ``ModelMonitor``, not single detectors; ``run_segment_task``):

* One model of 20 features, 15 numeric N(0,1) and 5 categorical a..f in the stable mix, no
  prediction, no missing values. Every event carries one segment key, ``region``, with 20 values
  (``max_segments``, so all are tracked) of equal share, drawn independently per event; every
  segment follows the same stable distribution.
* The same batches of 5000 events go to five monitors with the default ``MonitorConfig``
  (references from each scope's own first 5000 values, tumbling windows of 1000, the default tests
  and change detectors), counting each detector's own alerts (``alert_per_detector``). With the
  false-alarm budget off (today's options as lines): the model unsegmented; sliced by ``region``
  (so the p-value tests of the segment scopes run at alpha / 20); and sliced with
  ``multiple_testing="bonferroni"`` (every p-value at alpha / (21 x the p-values closing on that
  event)). At the default budget: unsegmented, and sliced.
* 10 streams (``--quick``: 2) of 120,000 + 1,000,000 events (``--quick``: + 150,000), each with its
  own seed derived from ``--seed`` and the stream number. The first 120,000 events of a stream are
  not counted: each of the 20 segments needs about 5000 x 20 events for its references, and the run
  checks that every scope judges by then.
* Measure: alert episodes per model per 10^6 events, the exact one-sided 95% Poisson bound, split
  by scope (whole model, segments) and detector. An episode is a firing alert for a (scope,
  feature, detector) not already firing; a firing alert that escalates one from warning to critical
  is counted apart. With the budget off and ``multiple_testing="none"`` slicing must leave the whole
  model's alerts unchanged: the run checks it on every stream.

``false_alarm_rate(factory, kind)`` measures the false alarms of any detector factory with the same
streams, for documentation and for trying parameters outside the sweep.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from river import tree
from river.datasets import synth
from scipy import stats

from detectors.base import Detector, Verdict
from detectors.columns import Column
from detectors.config import MonitorConfig
from detectors.monitors import ModelBatch, ModelMonitor
from detectors.reference import CategoricalReference, NumericReference, Reference
from detectors.registry import REGISTRY
from detectors.window import WindowedDetector

REFERENCE_SIZE = 5000
BINS = 10
MAX_CATEGORIES = 50
WINDOW = 1000
SLIDING_STEP = 100
BATCH = 500
CHANGE_AT = 10_000
LENGTH = 30_000  # events of a drift stream (after the reference)
CONCEPT_LENGTH = 20_000  # events of an error stream with concept drift (the classifier is the costly part)
RAMP = 10_000  # gradual numeric drift: events over which the mean moves by 1 sd
GRADUAL_WIDTH = 2000  # gradual concept drift: width of river's sigmoid transition (centred on CHANGE_AT + width)
BURN_IN = 1000  # error streams: events while the classifier learns, not counted for false alarms
RESOLVE_AFTER = 5000  # the monitor's default: a change-point alert resolves after this many quiet events
CATEGORIES = ("a", "b", "c", "d", "e", "f")
STABLE_MIX = (0.3, 0.25, 0.2, 0.1, 0.1, 0.05)
CHANGED_MIX = (0.2, 0.2, 0.2, 0.15, 0.15, 0.1)
UNSEEN = "zz"
TARGET = 1.0  # the project's target: false alarms per feature per 10^6 stable events
KINDS = ("numeric", "categorical", "binary")


# -- streams -------------------------------------------------------------------


def numeric_stream(rng: np.random.Generator, n: int, *, shift: float = 0.0, scale: float = 1.0, ramp: int = 0,
                   nulls: float = 0.0) -> np.ndarray:  # fmt: skip
    """N(0,1); from CHANGE_AT on: std times ``scale``, mean + ``shift`` (reached over ``ramp`` events), NaNs."""
    x = rng.standard_normal(n)
    after = np.arange(n) - CHANGE_AT
    changed = after >= 0
    x[changed] *= scale
    x += shift * (np.clip(after / ramp, 0.0, 1.0) if ramp else changed)
    if nulls:
        x[changed & (rng.random(n) < nulls)] = np.nan
    return x


def categorical_stream(rng: np.random.Generator, n: int, *, mix: Sequence[float] = STABLE_MIX, unseen: float = 0.0,
                       nulls: float = 0.0) -> list[str | None]:  # fmt: skip
    """Categories a..f in STABLE_MIX; from CHANGE_AT on: ``mix``, a share ``unseen`` of "zz", a share of None."""
    changed = np.arange(n) >= CHANGE_AT
    codes = rng.choice(len(CATEGORIES), size=n, p=STABLE_MIX)
    if tuple(mix) != STABLE_MIX:
        codes[changed] = rng.choice(len(CATEGORIES), size=int(changed.sum()), p=mix)
    labels = np.array(CATEGORIES, dtype=object)[codes]
    if unseen:
        labels[changed & (rng.random(n) < unseen)] = UNSEEN
    if nulls:
        labels[changed & (rng.random(n) < nulls)] = None
    return labels.tolist()


def _concept(data: str, seed: int, after: bool) -> Any:
    if data == "sea":
        return synth.SEA(variant=3 if after else 0, seed=seed)
    return synth.Agrawal(classification_function=2 if after else 0, seed=seed)


def error_stream(rng: np.random.Generator, n: int, *, data: str = "sea", drift: bool = True,
                 width: int = 1) -> np.ndarray:  # fmt: skip
    """0/1 prequential errors of a Hoeffding tree on SEA or Agrawal, the concept changing at CHANGE_AT.

    Abrupt drift (``width`` 1) joins the two generators at CHANGE_AT: river's ConceptDriftStream
    cannot (``math.exp`` overflows in its sigmoid for width 1 far from the position). Gradual drift
    is river's ConceptDriftStream with its sigmoid ``1 / (1 + exp(-4 (t - p) / width))`` centred on
    ``p = CHANGE_AT + width``, so the transition runs from CHANGE_AT (1.8% of the new concept) to
    CHANGE_AT + 2 width (98.2%): the change starts at CHANGE_AT, as for the other scenarios. (Centred
    on CHANGE_AT, the detectors fire in the first half of the sigmoid, before the "change point".)
    The generator after the drift has its own seed, so it does not replay the inputs the tree saw.
    """
    before_seed, after_seed, mix_seed = (int(s) for s in rng.integers(0, 2**31 - 1, size=3))
    before = _concept(data, before_seed, after=False)
    if not drift:
        stream: Any = before
    elif width <= 1:
        stream = itertools.chain(before.take(CHANGE_AT), _concept(data, after_seed, after=True))
    else:
        stream = synth.ConceptDriftStream(stream=before, drift_stream=_concept(data, after_seed, after=True),
                                          position=CHANGE_AT + width, width=width, seed=mix_seed)  # fmt: skip
    model = tree.HoeffdingTreeClassifier()
    errors = np.empty(n)
    for i, (x, y) in enumerate(itertools.islice(stream, n)):
        errors[i] = model.predict_one(x) != y
        model.learn_one(x, y)
    return errors


def make_reference(kind: str, rng: np.random.Generator) -> Reference | None:
    """A fresh reference of REFERENCE_SIZE stable values (None for error streams)."""
    if kind == "numeric":
        return NumericReference.build(rng.standard_normal(REFERENCE_SIZE), bins=BINS)
    if kind == "categorical":
        return CategoricalReference.build(categorical_stream(rng, REFERENCE_SIZE), max_categories=MAX_CATEGORIES)
    return None


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # numeric | categorical | binary
    watches: str  # stable, or what changes: distribution | nulls | errors (the cases made for it run)
    make: Callable[[np.random.Generator, int], Any]  # (rng, length) -> stream
    length: int = LENGTH  # stable scenarios take theirs from the plan
    change: int = CHANGE_AT
    burn_in: int = 0  # stable: events not counted

    @property
    def key(self) -> str:
        return f"{self.kind}: {self.name}"

    @property
    def stable(self) -> bool:
        return self.watches == "stable"


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("stable N(0,1)", "numeric", "stable", numeric_stream),
    Scenario("mean +0.25 sd", "numeric", "distribution", partial(numeric_stream, shift=0.25)),
    Scenario("mean +0.5 sd", "numeric", "distribution", partial(numeric_stream, shift=0.5)),
    Scenario("mean +1 sd", "numeric", "distribution", partial(numeric_stream, shift=1.0)),
    Scenario("std x1.5", "numeric", "distribution", partial(numeric_stream, scale=1.5)),
    Scenario("std x2", "numeric", "distribution", partial(numeric_stream, scale=2.0)),
    Scenario("gradual mean 0 -> 1 sd over 10k", "numeric", "distribution",
             partial(numeric_stream, shift=1.0, ramp=RAMP), length=40_000),
    Scenario("missing 0% -> 20%", "numeric", "nulls", partial(numeric_stream, nulls=0.2)),
    Scenario("stable a..f", "categorical", "stable", categorical_stream),
    Scenario("category mix", "categorical", "distribution", partial(categorical_stream, mix=CHANGED_MIX)),
    Scenario("new category 5%", "categorical", "distribution", partial(categorical_stream, unseen=0.05)),
    Scenario("missing 0% -> 20%", "categorical", "nulls", partial(categorical_stream, nulls=0.2)),
    Scenario("SEA stable", "binary", "stable", partial(error_stream, drift=False), burn_in=BURN_IN),
    Scenario("SEA 0->3 abrupt", "binary", "errors", error_stream, CONCEPT_LENGTH),
    Scenario("SEA 0->3 gradual (width 2000)", "binary", "errors", partial(error_stream, width=GRADUAL_WIDTH),
             CONCEPT_LENGTH),
    Scenario("Agrawal 0->2 abrupt", "binary", "errors", partial(error_stream, data="agrawal"), CONCEPT_LENGTH),
    Scenario("Agrawal 0->2 gradual (width 2000)", "binary", "errors",
             partial(error_stream, data="agrawal", width=GRADUAL_WIDTH), CONCEPT_LENGTH),
)  # fmt: skip


def stable_scenario(kind: str) -> Scenario:
    return next(s for s in SCENARIOS if s.kind == kind and s.stable)


# -- detectors -----------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A detector as benchmarked: registry name, parameters over the defaults, window step."""

    detector: str
    kind: str  # numeric | categorical | binary
    params: tuple[tuple[str, Any], ...] = ()
    step: int = WINDOW  # windowed tests only
    watches: str = "distribution"  # drift scenarios it runs on (all run on the stable one)

    @property
    def name(self) -> str:
        name = self.detector + (f" sliding/{self.step}" if self.step != WINDOW else "")
        return " ".join([name, *(f"{key}={value:g}" for key, value in self.params)])

    def build(self, reference: Reference | None) -> Detector:
        spec = REGISTRY[self.detector]
        if spec.windowed:
            return spec.build(reference, size=WINDOW, step=self.step, **dict(self.params))
        return spec.build(**dict(self.params))


def default_cases() -> tuple[Case, ...]:
    numeric = [Case(name, "numeric") for name in ("psi", "ks", "wasserstein", "jensen_shannon")]
    numeric += [Case("psi", "numeric", step=SLIDING_STEP), Case("ks", "numeric", step=SLIDING_STEP)]
    numeric += [Case("adwin", "numeric"), Case("page_hinkley", "numeric")]
    numeric += [Case("null_rate", "numeric", watches="nulls")]
    categorical = [Case(name, "categorical") for name in ("psi", "chi_square", "jensen_shannon", "unseen_rate")]
    categorical += [Case("null_rate", "categorical", watches="nulls")]
    binary = [Case(name, "binary", watches="errors") for name in ("ddm", "eddm", "hddm_a", "hddm_w")]
    return (*numeric, *categorical, *binary)


def sweep_cases() -> tuple[Case, ...]:
    """Parameter variants around the defaults (run with --sweep), river's own defaults among them."""

    def vary(detector: str, kind: str, param: str, values: Sequence[float]) -> list[Case]:
        watches = "errors" if kind == "binary" else "distribution"
        return [Case(detector, kind, ((param, value),), WINDOW, watches) for value in values]

    return (
        *vary("adwin", "numeric", "delta", (2e-3, 2e-4, 2e-5)),
        *vary("page_hinkley", "numeric", "threshold", (50.0, 60.0, 75.0, 100.0)),
        *vary("page_hinkley", "numeric", "delta", (0.15, 0.2)),
        *vary("ks", "numeric", "alpha", (1e-3, 1e-5)),
        *vary("psi", "numeric", "warning", (0.05,)),
        *vary("wasserstein", "numeric", "warning", (0.1,)),
        *vary("jensen_shannon", "numeric", "warning", (0.05,)),
        *vary("chi_square", "categorical", "alpha", (1e-3,)),
        *vary("psi", "categorical", "warning", (0.05,)),
        *vary("unseen_rate", "categorical", "warning", (0.02,)),
        Case("ddm", "binary", (("warm_start", 30), ("drift_threshold", 3.0)), watches="errors"),  # river's
        *vary("ddm", "binary", "warm_start", (30,)),
        *vary("ddm", "binary", "drift_threshold", (3.0, 4.0, 5.0)),
        *vary("eddm", "binary", "beta", (0.8, 0.7, 0.6)),
        *vary("hddm_a", "binary", "drift_confidence", (1e-4, 1e-5)),
        *vary("hddm_w", "binary", "lambda_val", (0.05, 0.01, 0.005)),
    )


def describe(detector: Detector) -> str:
    """The parameters a built detector runs with."""
    if isinstance(detector, WindowedDetector):
        params = dict(detector.tests[0].params, size=detector.size, step=detector.step)
    else:
        params = dict(getattr(detector, "params", {}))
    return ", ".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
                     for key, value in params.items())  # fmt: skip


# -- feeding -------------------------------------------------------------------


def verdicts(detector: Detector, stream: Any, reference: Reference | None, batch: int = BATCH
             ) -> Iterator[tuple[int, Verdict]]:  # fmt: skip
    """Feed ``stream`` in batches as the monitor does; yield (stream index, verdict) in order.

    Windowed tests get the raw values (NaN or None for missing); numeric change detectors get the
    normal scores of the non-missing values against the reference; error-stream detectors the 0/1 errors.
    """
    standardize = isinstance(reference, NumericReference) and not isinstance(detector, WindowedDetector)
    for start in range(0, len(stream), batch):
        chunk = stream[start : start + batch]
        index = np.arange(start, start + len(chunk))
        if standardize:
            assert isinstance(reference, NumericReference)
            present = ~np.isnan(chunk)
            chunk, index = reference.normal_scores(chunk[present]), index[present]
        for verdict in detector.update(chunk):
            yield int(index[verdict.position]), verdict


@dataclass(frozen=True)
class Trace:
    """Where one detector's drift verdicts fell in one stream (stream indices, ascending)."""

    alarms: np.ndarray
    episodes: np.ndarray  # the alarms that open a new alert episode


def trace(detector: Detector, stream: Any, reference: Reference | None, batch: int = BATCH) -> Trace:
    windowed = isinstance(detector, WindowedDetector)
    alarms: list[int] = []
    episodes: list[int] = []
    previous = False  # windowed: was the last judged window drift
    for at, verdict in verdicts(detector, stream, reference, batch):
        if not verdict.drift:
            previous = False
            continue
        opens = not previous if windowed else not alarms or at - alarms[-1] >= RESOLVE_AFTER
        if opens:
            episodes.append(at)
        alarms.append(at)
        previous = True
    return Trace(np.asarray(alarms, dtype=np.int64), np.asarray(episodes, dtype=np.int64))


# -- tasks (one stream, every case that runs on it) ----------------------------


@dataclass(frozen=True)
class Task:
    scenario: Scenario
    rep: int
    length: int
    seed: int
    cases: tuple[Case, ...]

    def rng(self) -> np.random.Generator:
        code = zlib.crc32(self.scenario.key.encode())
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(code, self.rep)))


def run_task(task: Task) -> tuple[str, int, dict[str, Trace]]:
    rng = task.rng()
    reference = make_reference(task.scenario.kind, rng)
    stream = task.scenario.make(rng, task.length)
    return task.scenario.key, task.rep, {case.name: trace(case.build(reference), stream, reference)
                                         for case in task.cases}  # fmt: skip


def poisson_upper(count: int, events: int) -> float:
    """Exact one-sided 95% Poisson upper bound on a rate per 10^6 events."""
    return float(stats.chi2.ppf(0.95, 2 * count + 2) / 2 / events * 1e6) if events else float("nan")


@dataclass
class Tally:
    """One case on one scenario, over its repetitions."""

    runs: int = 0
    delays: list[int] = field(default_factory=list)
    events: int = 0  # stable: events counted
    alarms: int = 0
    episodes: int = 0

    def add(self, scenario: Scenario, length: int, result: Trace) -> None:
        self.runs += 1
        if scenario.stable:
            self.events += length - scenario.burn_in
            self.alarms += int((result.alarms >= scenario.burn_in).sum())
            self.episodes += int((result.episodes >= scenario.burn_in).sum())
            return
        after = result.alarms[result.alarms >= scenario.change]
        if after.size:
            self.delays.append(int(after[0]) - scenario.change + 1)

    def per_million(self, count: int | None = None) -> float:
        return (self.alarms if count is None else count) / self.events * 1e6 if self.events else float("nan")

    @property
    def upper(self) -> float:
        """One-sided 95% Poisson upper bound on the false alarms per 10^6."""
        return poisson_upper(self.alarms, self.events)


@dataclass(frozen=True)
class Plan:
    reps: int  # repetitions of each numeric and categorical drift scenario
    concept_reps: int  # repetitions of each error-stream drift scenario
    stable: dict[str, tuple[int, int]]  # kind -> (streams, events per stream)
    speed_length: int


# Full: 10^7 stable events per numeric and categorical detector and 4 x 10^6 per error-stream detector,
# enough for 0 false alarms to bound the rate under 1 per 10^6 (95%); about 10 minutes on 2 cores.
FULL = Plan(reps=50, concept_reps=20, stable={"numeric": (20, 500_000), "categorical": (20, 500_000),
                                              "binary": (40, 100_000)}, speed_length=100_000)  # fmt: skip
QUICK = Plan(reps=3, concept_reps=1, stable={"numeric": (2, 50_000), "categorical": (2, 50_000),
                                             "binary": (1, 20_000)}, speed_length=20_000)  # fmt: skip


def make_tasks(plan: Plan, cases: Sequence[Case], seed: int) -> list[Task]:
    tasks = []
    for scenario in SCENARIOS:
        runs_on = (c for c in cases if c.kind == scenario.kind)
        chosen = tuple(c for c in runs_on if scenario.stable or c.watches == scenario.watches)
        if not chosen:
            continue
        if scenario.stable:
            reps, length = plan.stable[scenario.kind]
        else:
            reps, length = (plan.concept_reps if scenario.kind == "binary" else plan.reps), scenario.length
        tasks += [Task(scenario, rep, length, seed, chosen) for rep in range(reps)]
    return tasks


def run_tasks(tasks: list[Task], workers: int, progress: bool = True) -> dict[tuple[str, str], Tally]:
    """Run every task (in parallel when workers > 1); tally per (scenario key, case name)."""
    # Longest first, so no worker is left with a long task at the end; tallies do not depend on the order.
    order = sorted(range(len(tasks)), key=lambda i: -tasks[i].length * (8 if tasks[i].scenario.kind == "binary" else 1))
    outputs: dict[tuple[str, int], dict[str, Trace]] = {}
    started = time.perf_counter()
    with multiprocessing.Pool(workers) if workers > 1 else _Serial() as pool:
        for done, (key, rep, traces) in enumerate(pool.imap_unordered(run_task, [tasks[i] for i in order]), 1):
            outputs[key, rep] = traces
            if progress and (done % 20 == 0 or done == len(tasks)):
                print(f"  {done}/{len(tasks)} streams, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    tallies: dict[tuple[str, str], Tally] = {}
    for task in tasks:  # in task order: deterministic
        for name, result in outputs[task.scenario.key, task.rep].items():
            tallies.setdefault((task.scenario.key, name), Tally()).add(task.scenario, task.length, result)
    return tallies


class _Serial:
    """Stand-in for a pool with one worker."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def imap_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
        return map(fn, items)


# -- the helper for docs and ad-hoc checks -------------------------------------


@dataclass(frozen=True)
class FalseAlarms:
    alarms: int
    events: int
    per_million: float
    upper_per_million: float  # one-sided 95% Poisson bound
    episodes_per_million: float


def false_alarm_rate(factory: Callable[[Reference | None], Detector], kind: str = "numeric", *, streams: int = 10,
                     length: int = 100_000, seed: int = 0) -> FalseAlarms:  # fmt: skip
    """False alarms per 10^6 stable events of the detectors ``factory(reference)`` builds.

    Same protocol as the benchmark: per stream a fresh reference of 5000 stable values (None for
    ``kind="binary"``), a fresh detector, then ``length`` stable events in batches of 500: N(0,1)
    for "numeric" (normal scores for change detectors), categories a..f for "categorical", the errors of
    a Hoeffding tree on SEA for "binary" (the first 1000 not counted). For example::

        from detectors.registry import REGISTRY
        false_alarm_rate(lambda ref: REGISTRY["ks"].build(ref, alpha=1e-5), streams=4, length=250_000)
    """
    scenario = stable_scenario(kind)
    tally = Tally()
    for rep in range(streams):
        rng = Task(scenario, rep, length, seed, ()).rng()
        reference = make_reference(kind, rng)
        tally.add(scenario, length, trace(factory(reference), scenario.make(rng, length), reference))
    return FalseAlarms(tally.alarms, tally.events, tally.per_million(), tally.upper, tally.per_million(tally.episodes))


# -- speed and batch-size invariance -------------------------------------------


def _speed_stream(kind: str, rng: np.random.Generator, n: int, reference: Reference | None, windowed: bool) -> Any:
    if kind == "numeric":
        values = rng.standard_normal(n)
        if windowed:
            return values
        assert isinstance(reference, NumericReference)
        return (values - reference.mean) / reference.std
    if kind == "categorical":
        return categorical_stream(rng, n)
    return (rng.random(n) < 0.05).astype(np.float64)  # i.i.d. 5% errors: no classifier in the timing


def updates_per_second(case: Case, length: int, seed: int) -> float:
    """Values per second through ``update`` on a stable stream in batches of 500."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    reference = make_reference(case.kind, rng)
    detector = case.build(reference)
    stream = _speed_stream(case.kind, rng, length, reference, isinstance(detector, WindowedDetector))
    started = time.perf_counter()
    for start in range(0, length, BATCH):
        detector.update(stream[start : start + BATCH])
    return length / (time.perf_counter() - started)


def batch_size_mismatches(cases: Sequence[Case], seed: int, sizes: Sequence[int] = (1, 137, 500, 4096)) -> list[str]:
    """Cases whose verdicts (event, severity, statistic) change with the batch size, on one drifting stream."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
    references = {kind: make_reference(kind, rng) for kind in KINDS}
    n = CHANGE_AT + 5000
    streams = {
        "numeric": numeric_stream(rng, n, shift=0.5, nulls=0.05),
        "categorical": categorical_stream(rng, n, mix=CHANGED_MIX, unseen=0.02, nulls=0.05),
        "binary": (rng.random(n) < np.where(np.arange(n) < CHANGE_AT, 0.05, 0.15)).astype(np.float64),
    }
    bad = []
    for case in cases:
        reference, stream = references[case.kind], streams[case.kind]
        runs = [[(at, v.severity, v.statistic) for at, v in verdicts(case.build(reference), stream, reference, size)]
                for size in sizes]  # fmt: skip
        first = runs[0]
        for size, run in zip(sizes[1:], runs[1:], strict=True):
            same = len(run) == len(first) and all(
                a[:2] == b[:2] and np.isclose(a[2], b[2], rtol=1e-9, atol=1e-12)
                for a, b in zip(run, first, strict=True)
            )
            if not same:
                bad.append(f"{case.kind} {case.name}: batches of {size} give {len(run)} verdicts "
                           f"({sum(s is not None for _, s, _ in run)} drift), batches of {sizes[0]} "
                           f"{len(first)} ({sum(s is not None for _, s, _ in first)} drift)")  # fmt: skip
                break
    return bad


# -- a segmented model through the real monitor --------------------------------

# A model of 20 features, stable, sliced by one segment key whose SEGMENTS values take equal shares,
# run through ModelMonitor with the default MonitorConfig beside the same model unsegmented.
SEGMENTS = MonitorConfig().max_segments  # 20: every value is tracked
SEGMENT_NUMERIC = 15
SEGMENT_CATEGORICAL = 5
SEGMENT_BATCH = 5000  # events per observe(); the monitor's verdicts do not depend on it (tested)
# Events of each stream not counted: a segment scope builds its references from its own first 5000
# values, about SEGMENTS x 5000 events in; after 120,000 every scope is judging (checked).
SEGMENT_BURN_IN = 120_000
# name -> (sliced by the segment key, multiple_testing, false_alarm_budget): today's options (budget
# off) beside the default budget of 1 false alarm per model per week.
SEGMENT_CONFIGS: dict[str, tuple[bool, str, float]] = {
    "unsegmented": (False, "none", 0.0),
    "segmented": (True, "none", 0.0),
    "segmented, bonferroni": (True, "bonferroni", 0.0),
    "unsegmented, budget": (False, "none", 1.0),
    "segmented, budget": (True, "none", 1.0),
}
P_VALUE_TESTS = ("ks", "chi_square")


@dataclass(frozen=True)
class SegmentPlan:
    streams: int
    counted: int  # events per stream counted, after SEGMENT_BURN_IN


# Full: 10^7 counted events per config; about 6 minutes on 2 cores.
SEGMENT_FULL = SegmentPlan(streams=10, counted=1_000_000)
SEGMENT_QUICK = SegmentPlan(streams=2, counted=150_000)


@dataclass(frozen=True)
class SegmentTask:
    rep: int
    counted: int
    seed: int

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(zlib.crc32(b"segments"), self.rep)))


@dataclass
class SegmentResult:
    """Counted alerts of one stream (or several, added up) per config, by (scope, detector); scope: whole | segment."""

    events: int = 0  # counted, per config
    fed: int = 0  # every event, per config
    episodes: dict[str, Counter[tuple[str, str]]] = field(default_factory=dict)  # firing alerts that open one
    escalations: dict[str, Counter[tuple[str, str]]] = field(default_factory=dict)  # firing again, at critical
    whole_differs: int = 0  # streams where the segmented model's whole scope alerted unlike the unsegmented model
    seconds: dict[str, float] = field(default_factory=dict)  # in observe(), per config

    def add(self, other: SegmentResult) -> None:
        self.events += other.events
        self.fed += other.fed
        self.whole_differs += other.whole_differs
        for name in other.episodes:
            self.episodes.setdefault(name, Counter()).update(other.episodes[name])
            self.escalations.setdefault(name, Counter()).update(other.escalations[name])
            self.seconds[name] = self.seconds.get(name, 0.0) + other.seconds[name]


def segment_batches(rng: np.random.Generator, n: int) -> Iterator[ModelBatch]:
    """Stable events: 15 N(0,1) features, 5 of a..f in STABLE_MIX, a segment value drawn uniformly."""
    values = [{"region": f"r{i:02d}"} for i in range(SEGMENTS)]
    for start in range(0, n, SEGMENT_BATCH):
        size = min(SEGMENT_BATCH, n - start)
        features = {f"f{j}": Column.from_numbers(rng.standard_normal(size)) for j in range(SEGMENT_NUMERIC)}
        features.update({f"c{j}": Column.from_codes(rng.choice(len(CATEGORIES), size=size, p=STABLE_MIX),
                                                    list(CATEGORIES)) for j in range(SEGMENT_CATEGORICAL)})  # fmt: skip
        segments = [values[code] for code in rng.integers(0, SEGMENTS, size=size).tolist()]
        yield ModelBatch(features, np.arange(start, start + size, dtype=np.float64), segments=segments)


def run_segment_task(task: SegmentTask) -> SegmentResult:
    """One stream through a ModelMonitor per config, each fed the same batches."""
    # Counted per detector: each detector's own alerts, not the incidents they make up.
    monitors = {name: ModelMonitor("m", MonitorConfig(multiple_testing=testing, alert_per_detector=True,
                                                      false_alarm_budget=budget),
                                   segments=[("region",)] if sliced else ())
                for name, (sliced, testing, budget) in SEGMENT_CONFIGS.items()}  # fmt: skip
    result = SegmentResult(events=task.counted, fed=SEGMENT_BURN_IN + task.counted)
    firing: dict[str, set[tuple[Any, ...]]] = {name: set() for name in monitors}
    whole: dict[str, list[tuple[Any, ...]]] = {name: [] for name in monitors}
    for name in monitors:
        result.episodes[name], result.escalations[name], result.seconds[name] = Counter(), Counter(), 0.0
    checked = False
    for batch in segment_batches(task.rng(), SEGMENT_BURN_IN + task.counted):
        for name, monitor in monitors.items():
            started = time.perf_counter()
            alerts = monitor.observe(batch).alerts  # in stream order
            result.seconds[name] += time.perf_counter() - started
            for alert in alerts:
                scope = None if alert.segment is None else alert.segment["region"]
                key = (scope, alert.feature, alert.detector)
                if scope is None:
                    whole[name].append((alert.event_index, *key, alert.status, alert.severity))
                if alert.status == "resolved":
                    firing[name].discard(key)
                    continue
                tally = result.escalations[name] if key in firing[name] else result.episodes[name]
                firing[name].add(key)
                if alert.event_index >= SEGMENT_BURN_IN:
                    tally["whole" if scope is None else "segment", alert.detector] += 1
        if not checked and monitors["segmented"].events_seen >= SEGMENT_BURN_IN:
            for name, monitor in monitors.items():
                expected = 1 + SEGMENTS if SEGMENT_CONFIGS[name][0] else 1
                scopes = monitor.scopes
                if len(scopes) != expected or any(len(scope.features) != SEGMENT_NUMERIC + SEGMENT_CATEGORICAL
                                                  or any(f.window is None for f in scope.features.values())
                                                  for scope in scopes):  # fmt: skip
                    raise RuntimeError(f"{name}: not every scope judges after {SEGMENT_BURN_IN:,} events")
            checked = True
    # With multiple_testing="none" the whole model's tests keep their lines: slicing must not change its alerts.
    result.whole_differs = int(whole["segmented"] != whole["unsegmented"])
    return result


def run_segment_tasks(plan: SegmentPlan, seed: int, workers: int) -> SegmentResult:
    tasks = [SegmentTask(rep, plan.counted, seed) for rep in range(plan.streams)]
    total = SegmentResult()
    started = time.perf_counter()
    with multiprocessing.Pool(workers) if workers > 1 else _Serial() as pool:
        for done, result in enumerate(pool.imap_unordered(run_segment_task, tasks), 1):
            total.add(result)  # sums: the order the streams finish in does not matter
            print(f"  segmented model: {done}/{len(tasks)} streams, {time.perf_counter() - started:.0f} s",
                  file=sys.stderr)  # fmt: skip
    return total


def segment_tables(result: SegmentResult) -> list[str]:
    def rate(count: int) -> str:
        return f"{count / result.events * 1e6:.2f}"

    lines = [
        "| model | scopes | p-value tests | counted events | alert episodes | per 10^6 events | 95% upper bound "
        "| of which whole model / segments | escalations | observe() events/s |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, (sliced, testing, budget) in SEGMENT_CONFIGS.items():
        episodes = result.episodes[name]
        total = sum(episodes.values())
        whole = sum(n for (scope, _), n in episodes.items() if scope == "whole")
        scopes = f"whole + {SEGMENTS} segments" if sliced else "whole"
        corrected = {"none": f"segments at alpha / {SEGMENTS}" if sliced else "alpha",
                     "bonferroni": f"bonferroni over (1 + {SEGMENTS}) x the model's tests"}[testing]  # fmt: skip
        if budget:
            corrected = "the budget's lines, every scope"
        speed = result.fed / result.seconds[name]
        lines.append(f"| {name} | {scopes} | {corrected} | {result.events:,} | {total} | {rate(total)} "
                     f"| {poisson_upper(total, result.events):.2f} | {rate(whole)} / {rate(total - whole)} "
                     f"| {sum(result.escalations[name].values())} | {speed:,.0f} |")  # fmt: skip
    config = MonitorConfig()
    detectors = list(dict.fromkeys((*config.numeric_tests, *config.categorical_tests, *config.change_detectors)))
    head = " | ".join(f"{name}: {scope}" for name, (sliced, *_) in SEGMENT_CONFIGS.items()
                      for scope in (("whole", "segments") if sliced else ("whole",)))  # fmt: skip
    columns = [(name, scope) for name, (sliced, *_) in SEGMENT_CONFIGS.items()
               for scope in (("whole", "segment") if sliced else ("whole",))]  # fmt: skip
    lines += ["", "Alert episodes per 10^6 events by detector (count in brackets):", "",
              f"| detector | {head} |", "|---|" + "--:|" * len(columns)]  # fmt: skip
    for detector in detectors:
        cells = [f"{rate(n)} ({n})" for n in (result.episodes[name][scope, detector] for name, scope in columns)]
        lines.append(f"| {detector} | " + " | ".join(cells) + " |")
    return lines


# -- the report ----------------------------------------------------------------


def _rate(x: float) -> str:
    return "n/a" if x != x else f"{x:.2f}"


def _verdict_on_target(tally: Tally) -> str:
    if tally.per_million() > TARGET:
        return "**no**"
    return "yes" if tally.upper <= TARGET else "not shown (too few events)"


def _delay(tally: Tally, q: float) -> str:
    return f"{np.percentile(tally.delays, q):,.0f}" if tally.delays else "-"


def summary_table(cases: Sequence[Case], tallies: dict[tuple[str, str], Tally], speeds: dict[str, float],
                  params: dict[str, str]) -> list[str]:  # fmt: skip
    lines = [
        "| detector | input | parameters | stable events | false alarms | per 10^6 | 95% upper bound per 10^6 "
        "| alert episodes per 10^6 | <= 1 per 10^6 | updates/s |",
        "|---|---|---|--:|--:|--:|--:|--:|---|--:|",
    ]
    for case in cases:
        t = tallies[stable_scenario(case.kind).key, case.name]
        speed = speeds.get(case.kind + case.name, float("nan"))
        lines.append(f"| {case.name} | {case.kind} | {params[case.kind + case.name]} | {t.events:,} | {t.alarms:,} "
                     f"| {_rate(t.per_million())} | {_rate(t.upper)} | {_rate(t.per_million(t.episodes))} "
                     f"| {_verdict_on_target(t)} | {speed:,.0f} |")  # fmt: skip
    return lines


def detection_table(kind: str, cases: Sequence[Case], tallies: dict[tuple[str, str], Tally]) -> list[str]:
    lines = ["| detector | scenario | detection rate | median delay | p90 delay |", "|---|---|--:|--:|--:|"]
    for case in (c for c in cases if c.kind == kind):
        for scenario in SCENARIOS:
            tally = tallies.get((scenario.key, case.name))
            if scenario.kind != kind or scenario.stable or tally is None:
                continue
            rate = f"{len(tally.delays) / tally.runs:.0%} ({len(tally.delays)}/{tally.runs})"
            lines.append(f"| {case.name} | {scenario.name} | {rate} | {_delay(tally, 50)} | {_delay(tally, 90)} |")
    return lines


def sweep_table(cases: Sequence[Case], tallies: dict[tuple[str, str], Tally]) -> list[str]:
    """One row per variant: false alarms, then "rate / median delay" per drift scenario of its kind."""
    lines: list[str] = []
    for kind in KINDS:
        chosen = [c for c in cases if c.kind == kind]
        if not chosen:
            continue
        drifts = [s for s in SCENARIOS if s.kind == kind and not s.stable and s.watches == chosen[0].watches]
        lines += ["", f"{kind}:", "",
                  "| variant | false alarms per 10^6 | 95% upper bound | " + " | ".join(s.name for s in drifts) + " |",
                  "|---|--:|--:|" + "--:|" * len(drifts)]  # fmt: skip
        for case in sorted(chosen, key=lambda c: c.name):
            t = tallies[stable_scenario(kind).key, case.name]
            cells = []
            for s in drifts:
                d = tallies[s.key, case.name]
                cells.append(f"{len(d.delays) / d.runs:.0%} / {_delay(d, 50)}")
            lines.append(f"| {case.name} | {_rate(t.per_million())} | {_rate(t.upper)} | " + " | ".join(cells) + " |")
    return lines


def _parameters(case: Case) -> tuple[str, str, str]:
    """(kind, detector, every parameter it runs with): equal for a variant and the default it repeats."""
    return case.kind, case.detector, describe(case.build(make_reference(case.kind, np.random.default_rng(0))))


def _git_revision() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent.parent, check=True)  # fmt: skip
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def segmented_model(quick: bool, seed: int, workers: int) -> list[str]:
    """Run the segmented model; its section of the report."""
    plan = SEGMENT_QUICK if quick else SEGMENT_FULL
    print(f"running the segmented model: {plan.streams} streams on {workers} worker(s)...", file=sys.stderr)
    result = run_segment_tasks(plan, seed, workers)
    config = MonitorConfig()
    return [
        "",
        "## False alarms of a segmented model",
        "",
        f"One model of {SEGMENT_NUMERIC + SEGMENT_CATEGORICAL} features ({SEGMENT_NUMERIC} numeric N(0,1), "
        f"{SEGMENT_CATEGORICAL} categorical a..f in {list(STABLE_MIX)}; no prediction, no missing values), every "
        f"event carrying one segment key with {SEGMENTS} values of equal share (1/{SEGMENTS} each, drawn "
        "independently per event), every segment following the same stable distribution. The same events go "
        "through five `ModelMonitor`s with the default `MonitorConfig` (references from each scope's own first "
        f"{config.reference_size} values, tumbling windows of {config.window_size}, tests "
        f"{', '.join(config.numeric_tests)} + {', '.join(config.change_detectors)} on numbers, "
        f"{', '.join(config.categorical_tests)} on categories): "
        f"unsegmented; sliced by the key (max_segments {config.max_segments}, so every value is tracked, each "
        'with its own monitors beside the whole model\'s); and sliced with `multiple_testing="bonferroni"`, these '
        "three with the false-alarm budget off (today's options as lines); and unsegmented and sliced at the "
        "default budget (1 false alarm per model per week at 1000 events/s). "
        f"{plan.streams} streams of {SEGMENT_BURN_IN + plan.counted:,} events in batches of {SEGMENT_BATCH:,}, each "
        f"with its own seed; the first {SEGMENT_BURN_IN:,} events of each are not counted (every segment scope is "
        f"judging by then, checked), which leaves {plan.streams * plan.counted:,} counted events per model.",
        "",
        "An *alert episode* is a firing alert the monitor sends for a (scope, feature, detector) not already "
        "firing; *escalations* are the firing alerts that raise one already firing from warning to critical (not "
        "in the episodes). Rates are per model per 10^6 events the model receives; the bound is the exact "
        "one-sided 95% Poisson bound. observe() events/s: events over the time in `ModelMonitor.observe` "
        f'({workers} processes sharing the machine: read the ratio). With the budget off and '
        '`multiple_testing="none"` the whole model\'s tests keep their lines, so slicing must leave its alerts '
        "unchanged: "
        + (
            "checked, identical on every stream."
            if not result.whole_differs
            else f"**differs on {result.whole_differs} stream(s)**."
        ),
        "",
        *segment_tables(result),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.detection", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run for a smoke test (under a minute)")
    parser.add_argument("--seed", type=int, default=0, help="root seed of every stream and reference (default 0)")
    parser.add_argument("--out", type=Path, help="also write the markdown report to this file")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes (default 2)")
    parser.add_argument("--sweep", action="store_true", help="also run the parameter variants of sweep_cases()")
    parser.add_argument("--no-segments", action="store_true", help="skip the segmented model")
    parser.add_argument("--segments-only", action="store_true", help="run only the segmented model")
    args = parser.parse_args(argv)
    if args.no_segments and args.segments_only:
        parser.error("--no-segments and --segments-only exclude each other")
    plan = QUICK if args.quick else FULL
    started = time.perf_counter()
    revision = _git_revision()  # now: the code this process has imported, not whatever is checked out later
    if args.segments_only:
        segment_lines = segmented_model(args.quick, args.seed, args.workers)
        command = f"python -m bench.detection --segments-only{' --quick' if args.quick else ''} --seed {args.seed}"
        report = "\n".join([f"# Detection benchmark: a segmented model ({'quick' if args.quick else 'full'} run)", "",
                            f"`{command}`: git {revision}, {args.workers} worker(s), "
                            f"{time.perf_counter() - started:.0f} s on {os.cpu_count()} cores.",
                            *segment_lines]) + "\n"  # fmt: skip
        print(report)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(report)
        return 0

    cases = default_cases()
    params = {c.kind + c.name: _parameters(c)[-1] for c in cases}
    extra: tuple[Case, ...] = ()
    if args.sweep:  # the variants that are not the current defaults
        defaults = {_parameters(c) for c in cases}
        extra = tuple(c for c in sweep_cases() if _parameters(c) not in defaults)
    print("checking batch-size invariance...", file=sys.stderr)
    mismatches = batch_size_mismatches(cases, args.seed)
    print("measuring updates/s...", file=sys.stderr)
    speeds = {c.kind + c.name: updates_per_second(c, plan.speed_length, args.seed) for c in cases}
    tasks = make_tasks(plan, (*cases, *extra), args.seed)
    print(f"running {len(tasks)} streams on {args.workers} worker(s)...", file=sys.stderr)
    tallies = run_tasks(tasks, args.workers)
    segment_lines = [] if args.no_segments else segmented_model(args.quick, args.seed, args.workers)
    elapsed = time.perf_counter() - started

    numeric_reps, concept_reps = plan.reps, plan.concept_reps
    stable = {kind: f"{n} x {length:,}" for kind, (n, length) in plan.stable.items()}
    lines = [
        f"# Detection benchmark ({'quick' if args.quick else 'full'} run)",
        "",
        f"`python -m bench.detection{' --quick' if args.quick else ''}{' --sweep' if args.sweep else ''}"
        f"{' --no-segments' if args.no_segments else ''}"
        f" --seed {args.seed}`: git {revision}, {args.workers} worker(s), {elapsed:.0f} s "
        f"on {os.cpu_count()} cores. Protocol and measures: the docstring of `bench/detection.py`.",
        "",
        f"* Reference: {REFERENCE_SIZE} stable values per repetition ({BINS} quantile bins; categorical: "
        f"top {MAX_CATEGORIES} categories). Stream in batches of {BATCH}.",
        f"* Windowed tests: window {WINDOW}, tumbling (judged every {WINDOW}); `sliding/{SLIDING_STEP}`: judged "
        f"every {SLIDING_STEP} values. adwin and page_hinkley: normal scores against the reference.",
        f"* Stable streams (false alarms): numeric {stable['numeric']} N(0,1) events; categorical "
        f"{stable['categorical']} events of a..f in {list(STABLE_MIX)}; error streams {stable['binary']} events "
        f"of a Hoeffding tree on SEA (variant 0, no drift), the first {BURN_IN} of each not counted (the tree "
        f"is learning).",
        f"* Drift scenarios: {numeric_reps} repetitions each (error streams: {concept_reps}), change at event "
        f"{CHANGE_AT:,} of {LENGTH:,} (gradual numeric: of 40,000; error streams: of {CONCEPT_LENGTH:,}).",
        "* Batch-size invariance (batches of 1, 137, 500, 4096 on one drifting stream): "
        + ("identical verdicts for every detector." if not mismatches else "**differs**: " + "; ".join(mismatches)),
        "",
        "## False alarms on stable streams, parameters, speed",
        "",
        *summary_table(cases, tallies, speeds, params),
        "",
        "A windowed test counts every window judged drift: an excursion lasting several consecutive windows "
        "(or overlapping ones, sliding) counts once per window. *Alert episodes* count it once (consecutive "
        "drift windows, or change points less than 5,000 events apart): about the alerts the monitor sends. "
        "The 95% bound is the exact one-sided Poisson bound; the target column reads **no** when the observed "
        "rate exceeds 1 per 10^6, *not shown* when the run is too short to bound it below 1. updates/s: one "
        f"measurement on {plan.speed_length:,} stable values in batches of {BATCH} (error-stream detectors: "
        "i.i.d. 5% errors), a shared machine.",
        "",
        "## Detection",
        "",
        "Detection rate: repetitions with a drift verdict at or after the change point. Delay: events from "
        "the change point to the first such verdict, counting the event that completed it (tumbling windows "
        f"of {WINDOW} cannot do better than {WINDOW}); median and 90th percentile over the repetitions that "
        "detected.",
        "",
        "### Numeric (N(0,1) reference)",
        "",
        "The missing-value scenario runs null_rate only: the other tests judge the non-missing values and the "
        "change detectors are fed non-missing values only (as in production), so missing values do not change "
        "what they see. null_rate, conversely, runs only on the missing-value scenario.",
        "",
        *detection_table("numeric", cases, tallies),
        "",
        "### Categorical",
        "",
        f"Reference a..f in {list(STABLE_MIX)}. Category mix: {list(CHANGED_MIX)} from the change. New category: "
        f"5% of values become {UNSEEN!r}. Missing: 20% None (null_rate only, as above).",
        "",
        *detection_table("categorical", cases, tallies),
        "",
        "### Error streams (concept drift, prequential Hoeffding tree)",
        "",
        f"SEA variant 0 -> 3 and Agrawal classification function 0 -> 2 from event {CHANGE_AT:,} of "
        f"{CONCEPT_LENGTH:,}. Abrupt: the generators joined at {CHANGE_AT:,}. Gradual: river's ConceptDriftStream, "
        f"width {GRADUAL_WIDTH:,}, its sigmoid centred on {CHANGE_AT + GRADUAL_WIDTH:,} so that the transition "
        f"starts at {CHANGE_AT:,} (1.8% of the new concept; 50% at {CHANGE_AT + GRADUAL_WIDTH:,}, 98% at "
        f"{CHANGE_AT + 2 * GRADUAL_WIDTH:,}); the delay runs from {CHANGE_AT:,}. river's DDM, EDDM and HDDM reset "
        "after a detection. The tree learns Agrawal function 0 perfectly (no errors before the drift), which "
        "makes any error evidence of drift for DDM.",
        "",
        *detection_table("binary", cases, tallies),
        *segment_lines,
    ]
    if extra:
        swept = [c for c in cases if any((e.detector, e.kind, e.step) == (c.detector, c.kind, c.step) for e in extra)]
        lines += ["", "## Parameter sweeps", "",
                  "Same streams as above (common random numbers); the defaults repeated for comparison. Cells: "
                  "detection rate / median delay.",
                  *sweep_table([*swept, *extra], tallies)]  # fmt: skip
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
        print(f"wrote {args.out}", file=sys.stderr)
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
