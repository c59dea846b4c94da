"""False-alarm budget benchmark: are the budget's lines right, and what do they cost?

Run from the repository root::

    .venv/bin/python -m bench.budget                      # full run, about 20 min on 2 cores
    .venv/bin/python -m bench.budget --quick              # smoke test, about a minute
    .venv/bin/python -m bench.budget --out docs/budget-table.md

Four parts (protocol as in ``bench/detection.py``: a fresh reference of 5000 stable values per
stream, numeric N(0,1) and categorical a..f, change detectors on normal scores against the reference):

1. **Lines.** Each detector's line at the default budget (1 false alarm per model per week at 1000
   events/s) for an unsegmented model and a model cut by one segment key, beside today's option.
2. **Calibration check.** Every calibrated detector with the line its budget share alone gives
   (``detectors.budget.detector_lines``, no floor from its option) at a share scaled up to
   ``--check-rate`` false alarms per value (default 10^-5, so false alarms are frequent enough to
   count), on stable streams. The target is that rate times the values judged; the observed count
   should hold it within its exact two-sided 95% Poisson interval. ``null_rate`` is checked at its
   worst case, half the values missing (its line assumes it); categorical PSI and Jensen-Shannon
   with the stream's 6 categories as bins.
3. **Long stable run at the default budget.** The default numeric set (psi, ks, null_rate, adwin,
   page_hinkley) and categorical set (psi, chi_square, unseen_rate, null_rate) with the lines of an
   unsegmented model, on ``--events`` feature-events (3/4 numeric, 1/4 categorical, as a model of 15
   numeric and 5 categorical features): false alarms observed, their one-sided 95% Poisson bound,
   and what that implies per model per week at 1000 events/s for 20 features.
4. **The price.** Detection rate and median / p90 delay on the drift scenarios of
   ``bench/detection.py`` for each detector at the default budget's line, today's (the option
   alone, the budget off) and river's defaults (ADWIN delta 0.002; Page-Hinkley delta 0.005,
   threshold 50, alpha 0.9999).
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from bench.detection import (
    CATEGORIES,
    REFERENCE_SIZE,
    SCENARIOS,
    STABLE_MIX,
    WINDOW,
    Case,
    Plan,
    Tally,
    _git_revision,
    make_tasks,
    run_tasks,
)
from detectors import nulls
from detectors.budget import (
    SECONDS_PER_WEEK,
    budget_lines,
    detector_lines,
    family_size,
    model_tests,
    rate_per_value,
)
from detectors.config import MonitorConfig
from detectors.reference import CategoricalReference, NumericReference, Reference
from detectors.registry import change_detectors, window_tests
from detectors.window import Coded, WindowedDetector

NUMERIC_SET = ("psi", "ks", "null_rate", "adwin", "page_hinkley")
CATEGORICAL_SET = ("psi", "chi_square", "unseen_rate", "null_rate")
CHANGE = ("adwin", "page_hinkley")  # judged per value; the rest per window
CHUNK = 100_000  # values per update: the monitor's batches are smaller, results do not depend on it
RIVER = {"adwin": (("delta", 0.002),), "page_hinkley": (("delta", 0.005), ("threshold", 50.0), ("alpha", 0.9999))}


def rng_for(seed: int, label: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(label.encode()), index)))


def poisson_interval(count: int) -> tuple[float, float]:
    """Exact two-sided 95% interval of a Poisson mean, given one observed count."""
    low = stats.chi2.ppf(0.025, 2 * count) / 2 if count else 0.0
    return float(low), float(stats.chi2.ppf(0.975, 2 * count + 2) / 2)


def poisson_upper(count: int) -> float:
    """Exact one-sided 95% upper bound of a Poisson mean."""
    return float(stats.chi2.ppf(0.95, 2 * count + 2) / 2)


# -- streams and detectors ---------------------------------------------------------


def numeric_reference(rng: np.random.Generator, missing: float = 0.0) -> NumericReference:
    """From REFERENCE_SIZE rows, or with values missing at random, from as many rows as hold about that many values."""
    rows = rng.standard_normal(int(round(REFERENCE_SIZE / (1 - missing))))
    absent = rng.random(rows.size) < missing
    return NumericReference.build(rows[~absent], bins=10, missing=int(absent.sum()))


def categorical_reference(rng: np.random.Generator, missing: float = 0.0) -> CategoricalReference:
    codes = rng.choice(len(CATEGORIES), size=int(round(REFERENCE_SIZE / (1 - missing))), p=STABLE_MIX)
    absent = rng.random(codes.size) < missing
    labels = [None if gone else CATEGORIES[c] for c, gone in zip(codes.tolist(), absent.tolist(), strict=True)]
    return CategoricalReference.build(labels, max_categories=50)


def numeric_values(rng: np.random.Generator, n: int, missing: float = 0.0) -> np.ndarray:
    x = rng.standard_normal(n)
    if missing:
        x[rng.random(n) < missing] = np.nan
    return x


def categorical_values(rng: np.random.Generator, n: int, missing: float = 0.0) -> Coded:
    codes = rng.choice(len(CATEGORIES), size=n, p=STABLE_MIX)
    if missing:
        codes[rng.random(n) < missing] = -1
    return Coded(codes, list(CATEGORIES))


@dataclass
class Counts:
    """False alarms of each detector over the values (or windows) it judged."""

    alarms: dict[str, int] = dataclasses.field(default_factory=dict)
    judged: dict[str, int] = dataclasses.field(default_factory=dict)

    def add(self, name: str, alarms: int, judged: int) -> None:
        self.alarms[name] = self.alarms.get(name, 0) + alarms
        self.judged[name] = self.judged.get(name, 0) + judged

    def merge(self, other: Counts) -> Counts:
        for name in other.alarms:
            self.add(name, other.alarms[name], other.judged[name])
        return self


def feed(config: MonitorConfig, kind: str, reference: Reference, values: np.ndarray | Coded, tests: Sequence[str],
         counts: Counts, suffix: str = "") -> None:  # fmt: skip
    """Feed the monitor's detectors for ``kind`` (only ``tests``) in chunks; count drift verdicts."""
    chosen = [t for t in window_tests(config, kind) if t.name in tests]
    window = WindowedDetector(reference, chosen, config.window_size, config.step) if chosen else None
    changes = {n: d for n, d in change_detectors(config).items() if n in tests} if kind == "numeric" else {}
    n = len(values)
    for start in range(0, n, CHUNK):
        chunk = values[start : start + CHUNK]
        if window is not None:
            for evaluation in window.evaluate(chunk):
                for verdict in evaluation.verdicts:
                    counts.add(verdict.test + suffix, int(verdict.drift), 1)
        if changes:
            assert isinstance(chunk, np.ndarray) and isinstance(reference, NumericReference)
            present = chunk[~np.isnan(chunk)]
            z = reference.normal_scores(present)  # as the monitor feeds them
            for name, detector in changes.items():
                counts.add(name + suffix, len(detector.update(z)), z.size)


# -- 2. calibration check -----------------------------------------------------------


@dataclass(frozen=True)
class CheckTask:
    kind: str
    missing: float
    tests: tuple[str, ...]
    index: int
    length: int
    rate: float
    seed: int


def check_config(rate: float, kind: str) -> MonitorConfig:
    """The default config with the lines the share ``rate`` alone gives: the distance tests'
    options pushed out of the way (their null lines, per window, decide)."""
    lines = detector_lines(MonitorConfig(), rate, kind)
    out_of_the_way = {f"{test}_{line}": 1e-9 for test in ("psi", "jensen_shannon", "null_rate", "unseen_rate")
                      for line in ("warning", "critical")}  # fmt: skip
    tests = {"numeric_tests": ("psi", "ks", "jensen_shannon", "null_rate"),
             "categorical_tests": ("psi", "chi_square", "jensen_shannon", "unseen_rate", "null_rate")}  # fmt: skip
    return dataclasses.replace(MonitorConfig(), **lines, **out_of_the_way, **tests)


def run_check(task: CheckTask) -> Counts:
    rng = rng_for(task.seed, f"check {task.kind} {task.missing}", task.index)
    config = check_config(task.rate, task.kind)
    counts = Counts()
    if task.kind == "numeric":
        reference: Reference = numeric_reference(rng, task.missing)
        values: np.ndarray | Coded = numeric_values(rng, task.length, task.missing)
    else:
        reference = categorical_reference(rng, task.missing)
        values = categorical_values(rng, task.length, task.missing)
    feed(config, task.kind, reference, values, task.tests, counts, f" ({task.kind})")
    return counts


def calibration_check(rate: float, streams: int, length: int, seed: int, pool: Any) -> list[str]:
    groups = [("numeric", 0.0, ("psi", "ks", "jensen_shannon", "adwin", "page_hinkley")),
              ("numeric", 0.5, ("null_rate",)),
              ("categorical", 0.0, ("psi", "chi_square", "jensen_shannon", "unseen_rate")),
              ("categorical", 0.5, ("null_rate",))]  # fmt: skip
    tasks = [CheckTask(kind, missing, tests, i, length, rate, seed)
             for kind, missing, tests in groups for i in range(streams)]  # fmt: skip
    counts = Counts()
    for result in pool.imap_unordered(run_check, tasks):
        counts.merge(result)
    lines = [
        f"Share: {rate:g} false alarms per value per detector. {streams} stable streams of {length:,} values per "
        "row, each with a fresh reference of 5000. A windowed test's target is rate x window step (1000) per judged "
        "window.",
        "",
        "| detector | line at this share | judged | target false alarms | observed | 95% interval of the mean "
        "| observed / target | target inside |",
        "|---|---|--:|--:|--:|--:|--:|---|",
    ]
    for name in sorted(counts.alarms, key=lambda n: (n.endswith("(categorical)"), n)):
        kind = "categorical" if name.endswith("(categorical)") else "numeric"
        detector = name.split(" ")[0]
        per = rate if detector in CHANGE else rate * WINDOW
        target = per * counts.judged[name]
        observed = counts.alarms[name]
        low, high = poisson_interval(observed)
        inside = "yes" if low <= target <= high else ("**no, over**" if low > target else "no, conservative")
        lines.append(
            f"| {name} | {_line_text(check_config(rate, kind), detector, kind)} | {counts.judged[name]:,} | "
            f"{target:.1f} | {observed} | {low:.1f}-{high:.1f} | {observed / target:.2f} | {inside} |"
        )
    return lines


def _line_text(config: MonitorConfig, detector: str, kind: str) -> str:
    """The line a full window (1000 values against 5000) of a stable stream is judged against."""
    window, reference = config.window_size, config.reference_size
    if detector in ("psi", "jensen_shannon"):
        line = (nulls.psi_line if detector == "psi" else nulls.jensen_shannon_line)(
            getattr(config, f"{detector}_alpha"), len(CATEGORIES) if kind == "categorical" else 10, window,
            reference)  # fmt: skip
        return f"{detector}_alpha = {getattr(config, f'{detector}_alpha'):.3g}: {line:.4g}"
    option = {"ks": "ks_alpha", "chi_square": "chi_square_alpha", "adwin": "adwin_delta",
              "page_hinkley": "ph_threshold", "null_rate": "null_rate_alpha",
              "unseen_rate": "unseen_rate_alpha"}[detector]  # fmt: skip
    return f"{option} = {getattr(config, option):.4g}"


# -- 3. the long stable run ----------------------------------------------------------


@dataclass(frozen=True)
class LongTask:
    kind: str
    index: int
    length: int
    seed: int


def default_budget_config(kind: str) -> MonitorConfig:
    config = MonitorConfig()
    return budget_lines(config, rate_per_value(config, 0) or 0.0, kind)


def run_long(task: LongTask) -> Counts:
    rng = rng_for(task.seed, f"long {task.kind}", task.index)
    config = default_budget_config(task.kind)
    counts = Counts()
    if task.kind == "numeric":
        feed(config, "numeric", numeric_reference(rng), numeric_values(rng, task.length), NUMERIC_SET, counts,
             " (numeric)")  # fmt: skip
    else:
        feed(config, "categorical", categorical_reference(rng), categorical_values(rng, task.length),
             CATEGORICAL_SET, counts, " (categorical)")  # fmt: skip
    counts.add("feature-events", 0, task.length)
    return counts


def long_run(events: int, length: int, seed: int, pool: Any) -> list[str]:
    streams = max(1, events // length)
    numeric = (3 * streams) // 4
    tasks = [LongTask("numeric", i, length, seed) for i in range(numeric)]
    tasks += [LongTask("categorical", i, length, seed) for i in range(streams - numeric)]
    started = time.perf_counter()
    counts = Counts()
    for done, result in enumerate(pool.imap_unordered(run_long, tasks), 1):
        counts.merge(result)
        if done % 10 == 0:
            print(f"  long run: {done}/{len(tasks)} streams, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    feature_events = counts.judged.pop("feature-events")
    counts.alarms.pop("feature-events")
    total = sum(counts.alarms.values())
    bound = poisson_upper(total)
    config = MonitorConfig()
    week = config.event_rate * SECONDS_PER_WEEK * 20  # feature-events of a 20-feature model in a week
    share = rate_per_value(config, 0) or 0.0
    # By construction each detector expects at most ``share`` false alarms per value it judges.
    expected = share * sum(judged * (1 if name.split(" ")[0] in CHANGE else WINDOW)
                           for name, judged in counts.judged.items())  # fmt: skip
    lines = [
        f"{feature_events:,} stable feature-events ({numeric} numeric and {streams - numeric} categorical streams of "
        f"{length:,} values, each with a fresh reference), every value judged by the default set of its kind at the "
        f"lines of the default budget for an unsegmented model; {time.perf_counter() - started:.0f} s.",
        "",
        "| detector | values or windows judged | false alarms |",
        "|---|--:|--:|",
        *(f"| {name} | {counts.judged[name]:,} | {counts.alarms[name]} |" for name in sorted(counts.alarms)),
        "",
        f"* False alarms: **{total}** in {feature_events:,} feature-events; one-sided 95% bound {bound:.2f}, "
        f"{bound / feature_events * 1e9:.2f} per 10^9 feature-events (by construction at most {expected:.2g} "
        "expected in this run).",
        f"* A model of 20 features at 1000 events/s judges {week:.3g} feature-events a week: observed "
        f"{total / feature_events * week:.2f} false alarms per model per week, 95% bound "
        f"{bound / feature_events * week:.1f}. By construction at most "
        f"{config.false_alarm_budget * 21 / (config.max_features + 1):.2f} (the budget's share of 20 features and "
        f"the prediction of the {config.max_features + 1} columns the family is sized for).",
    ]
    return lines


# -- 1. the lines, 4. the price --------------------------------------------------------


def _effective_lines(config: MonitorConfig, kind: str) -> list[tuple[str, float]]:
    """The lines a full stable window (or a change detector) is judged against under ``config``."""
    window, reference = config.window_size, config.reference_size

    def at_least(option: float, alpha: float, line: float) -> float:
        return max(option, line) if alpha else option

    if kind == "numeric":
        return [
            ("psi (10 bins)", at_least(config.psi_warning, config.psi_alpha,
                                       nulls.psi_line(config.psi_alpha, 10, window, reference))),
            ("ks alpha", config.ks_alpha),
            ("null_rate (reference without missing values)", at_least(config.null_rate_warning,
             config.null_rate_alpha, nulls.share_rise_line(config.null_rate_alpha, 0, reference, window))),
            ("null_rate (reference half missing)", at_least(config.null_rate_warning, config.null_rate_alpha,
             nulls.share_rise_line(config.null_rate_alpha, reference, 2 * reference, window))),
            ("adwin delta", config.adwin_delta),
            ("page_hinkley threshold", config.ph_threshold),
        ]  # fmt: skip
    return [
        ("psi (6 categories)", at_least(config.psi_warning, config.psi_alpha,
                                        nulls.psi_line(config.psi_alpha, 6, window, reference))),
        ("psi (51 categories)", at_least(config.psi_warning, config.psi_alpha,
                                         nulls.psi_line(config.psi_alpha, 51, window, reference))),
        ("chi_square alpha", config.chi_square_alpha),
        ("unseen_rate (reference knows every category)", at_least(config.unseen_rate_warning,
         config.unseen_rate_alpha, nulls.share_rise_line(config.unseen_rate_alpha, 0, reference, window))),
    ]  # fmt: skip


def budget_tests(config: MonitorConfig) -> int:
    """The most detectors one column runs (the family's ``tests``)."""
    numeric = len(config.numeric_tests) + len(config.change_detectors)
    return max(numeric, len(config.categorical_tests), 1)


def lines_table() -> list[str]:
    config = MonitorConfig()
    lines = [
        f"Default budget: {config.false_alarm_budget:g} false alarm per model per week at {config.event_rate:g} "
        f"events/s; family {family_size(config, 0):,} detectors unsegmented "
        f"(({config.max_features} features + the prediction) x {budget_tests(config)} tests, the 2 quality tests "
        f"and the whole model's own {model_tests(config)}), {family_size(config, 1):,} with one segment "
        f"key: {rate_per_value(config, 0):.3g} and {rate_per_value(config, 1):.3g} false alarms per value per "
        "detector.",
        "",
        "| kind | line (a full window of 1000 against 5000) | today | budget, unsegmented | budget, one segment key |",
        "|---|---|--:|--:|--:|",
    ]
    today = MonitorConfig(false_alarm_budget=0)
    for kind in ("numeric", "categorical"):
        whole = budget_lines(config, rate_per_value(config, 0) or 0.0, kind)
        sliced = budget_lines(config, rate_per_value(config, 1) or 0.0, kind)
        rows = zip(_effective_lines(today, kind), _effective_lines(whole, kind), _effective_lines(sliced, kind),
                   strict=True)  # fmt: skip
        for (name, before), (_, after), (_, cut) in rows:
            lines.append(f"| {kind} | {name} | {before:.4g} | {after:.4g} | {cut:.4g} |")
    return lines


def _case(name: str, kind: str, config: MonitorConfig, label: str) -> Case:
    params: dict[str, tuple[tuple[str, Any], ...]] = {
        "psi": (("warning", config.psi_warning), ("critical", config.psi_critical)),
        "ks": (("alpha", config.ks_alpha),),
        "chi_square": (("alpha", config.chi_square_alpha),),
        "unseen_rate": (("warning", config.unseen_rate_warning), ("critical", config.unseen_rate_critical)),
        "null_rate": (("warning", config.null_rate_warning), ("critical", config.null_rate_critical)),
        "adwin": (("delta", config.adwin_delta),),
        "page_hinkley": (("delta", config.ph_delta), ("threshold", config.ph_threshold)),
    }
    if label == "river":
        return Case(name, kind, RIVER[name])
    return Case(name, kind, params[name], watches="nulls" if name == "null_rate" else "distribution")


def price(reps: int, seed: int, workers: int) -> list[str]:
    today = MonitorConfig(false_alarm_budget=0)
    sets: dict[str, dict[tuple[str, str], Case]] = {"budget": {}, "today": {}, "river": {}}
    for kind, names in (("numeric", NUMERIC_SET), ("categorical", CATEGORICAL_SET)):
        for name in names:
            sets["budget"][kind, name] = _case(name, kind, default_budget_config(kind), "budget")
            sets["today"][kind, name] = _case(name, kind, today, "today")
            if name in RIVER:
                sets["river"][kind, name] = _case(name, kind, today, "river")
    cases = list({case.name + case.kind: case for chosen in sets.values() for case in chosen.values()}.values())
    plan = Plan(reps=reps, concept_reps=0, stable={kind: (0, 0) for kind in ("numeric", "categorical", "binary")},
                speed_length=0)
    tasks = [task for task in make_tasks(plan, cases, seed) if not task.scenario.stable]
    tallies = run_tasks(tasks, workers)
    lines = [
        f"{reps} repetitions per scenario, change at event 10,000 (bench/detection.py). Cells: detection rate, "
        "median / p90 delay in events.",
        "",
        "| detector | scenario | default budget | today's lines | river's defaults |",
        "|---|---|---|---|---|",
    ]
    for scenario in SCENARIOS:
        if scenario.stable or scenario.kind == "binary":
            continue
        for (kind, name), case in sets["budget"].items():
            if kind != scenario.kind or case.watches != scenario.watches:
                continue
            cells = [_cell(tallies.get((scenario.key, chosen[kind, name].name)))
                     if (kind, name) in chosen else "-" for chosen in sets.values()]  # fmt: skip
            lines.append(f"| {name} ({kind}) | {scenario.name} | " + " | ".join(cells) + " |")
    return lines


def _cell(tally: Tally | None) -> str:
    if tally is None or not tally.runs:
        return "-"
    share = f"{100 * len(tally.delays) / tally.runs:.0f}%"
    if not tally.delays:
        return share
    delays = np.asarray(tally.delays)
    return f"{share}, {np.median(delays):,.0f} / {np.percentile(delays, 90):,.0f}"


# -- main ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.budget", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run for a smoke test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, help="also write the markdown report to this file")
    parser.add_argument("--check-rate", type=float, default=1e-5, help="false alarms per value in the check")
    parser.add_argument("--events", type=float, default=1e9, help="feature-events of the long stable run")
    parser.add_argument("--skip", nargs="*", default=(), choices=("check", "long", "price"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report = [f"# False-alarm budget benchmark{' (quick)' if args.quick else ''}", "",
              f"`python -m bench.budget{' --quick' if args.quick else ''}`: git {_git_revision()}, "
              f"{args.workers} worker(s). Protocol: the docstring of `bench/budget.py`.", "",
              "## Lines", "", *lines_table(), ""]  # fmt: skip
    sections: list[tuple[str, Callable[[Any], list[str]]]] = []
    if "check" not in args.skip:
        # Many short streams: each has its own reference, whose error moves a stream's false alarms
        # together; the Poisson interval holds for the total only over many references.
        streams, length = (40, 50_000) if args.quick else (400, 100_000)
        sections.append(("Calibration check", lambda pool: calibration_check(args.check_rate, streams, length,
                                                                               args.seed, pool)))  # fmt: skip
    if "long" not in args.skip:
        events, length = (2e7, 5_000_000) if args.quick else (args.events, 10_000_000)
        sections.append(("Long stable run at the default budget",
                         lambda pool: long_run(int(events), length, args.seed, pool)))  # fmt: skip
    with multiprocessing.Pool(args.workers) as pool:
        for title, run in sections:
            print(f"{title}...", file=sys.stderr)
            report += [f"## {title}", "", *run(pool), ""]
    if "price" not in args.skip:
        print("Price...", file=sys.stderr)
        report += ["## The price: detection at the default budget", "",
                   *price(5 if args.quick else 50, args.seed, args.workers), ""]  # fmt: skip
    report.append(f"Run time: {time.perf_counter() - started:.0f} s.")
    text = "\n".join(report)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
