"""Profile ``ModelMonitor.observe`` on typed (columnar) batches: events/s and where the time goes.

The detectors alone, as a columnar decoder hands them batches: numbers from ``Column.from_numbers``,
categories from ``Column.from_codes``. The workload is the throughput benchmark's (``--features``
features, 3/4 numeric and 1/4 categorical, like ``streams.simulate.Traffic``; a number as the
prediction; one model version) with the default ``MonitorConfig``: every default check runs. The
first ``--warmup`` events of each model (past the 5000-event reference) are fed before timing, so
the steady state is measured::

    .venv/bin/python -m bench.profile_detectors                     # 1 and 4 models, batches of 1000 and 10,000
    .venv/bin/python -m bench.profile_detectors --profile 1000      # also a cProfile of 1 model, 1000-event batches
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np

from detectors.columns import Column
from detectors.config import MonitorConfig
from detectors.monitors import ModelBatch, ModelMonitor
from streams.simulate import CATEGORIES

CATEGORY_P = np.array([0.4, 0.25, 0.15, 0.12, 0.08])  # streams.simulate's stable category mix


def model_batches(model_index: int, features: int, events: int, batch: int, seed: int = 7) -> list[ModelBatch]:
    """``events`` events of one model as typed batches of ``batch`` rows (the last may be shorter)."""
    rng = np.random.default_rng([seed, model_index])
    numeric = features * 3 // 4
    categorical = features - numeric
    means = np.arange(numeric, dtype=float)
    stds = 1.0 + 0.1 * np.arange(numeric)
    values = rng.standard_normal((events, numeric)) * stds + means
    codes = rng.choice(len(CATEGORIES), size=(events, categorical), p=CATEGORY_P)
    prediction = 1.0 / (1.0 + np.exp(-(values[:, 0] - means[0]))) if numeric else rng.random(events)
    timestamps = 1.7e9 + np.arange(events) / 1000.0
    batches = []
    for start in range(0, events, batch):
        stop = min(events, start + batch)
        columns = {f"f{j}": Column.from_numbers(values[start:stop, j]) for j in range(numeric)}
        columns |= {f"c{j}": Column.from_codes(codes[start:stop, j], list(CATEGORIES)) for j in range(categorical)}
        batches.append(ModelBatch(columns, timestamps[start:stop], Column.from_numbers(prediction[start:stop]),
                                  versions=["1"] * (stop - start)))  # fmt: skip
    return batches


def run(models: int, features: int, batch: int, warmup: int, events: int, config: MonitorConfig,
        profiler: cProfile.Profile | None = None) -> tuple[float, int]:  # fmt: skip
    """Events per CPU second of ``observe`` over ``events`` events per model after ``warmup``, and the alerts raised."""
    monitors = [ModelMonitor(f"m{i}", config) for i in range(models)]
    streams = [model_batches(i, features, warmup + events, batch) for i in range(models)]
    first_timed = -(-warmup // batch)  # the warm-up is whole batches: the timed ones start after it
    for monitor, batches in zip(monitors, streams, strict=True):
        for item in batches[:first_timed]:
            monitor.observe(item)
    timed = [(monitor, item) for rank in range(first_timed, len(streams[0]))
             for monitor, item in ((m, s[rank]) for m, s in zip(monitors, streams, strict=True))]  # fmt: skip
    alerts = 0
    if profiler is not None:
        profiler.enable()
    # CPU time of this process: other work on a shared machine barely moves it, unlike the wall clock.
    started = time.process_time()
    for monitor, item in timed:
        alerts += len(monitor.observe(item).alerts)
    elapsed = time.process_time() - started
    if profiler is not None:
        profiler.disable()
    return sum(len(item) for _, item in timed) / elapsed, alerts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=10_000, help="events per model before timing")
    parser.add_argument("--events", type=int, default=60_000, help="timed events per model")
    parser.add_argument("--models", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--batches", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--profile", type=int, nargs="*", default=None,
                        help="batch sizes to profile (1 model): cProfile top 20 by tottime and cumtime")  # fmt: skip
    args = parser.parse_args()
    config = MonitorConfig()
    print(f"ModelMonitor.observe, {args.features} features ({args.features * 3 // 4} numeric), default MonitorConfig, "
          f"{args.warmup} warm-up then {args.events} timed events per model")  # fmt: skip
    for models in args.models:
        for batch in args.batches:
            rate, alerts = run(models, args.features, batch, args.warmup, args.events, config)
            print(f"models {models}  batch {batch:>6}: {rate:>10,.0f} events/s (CPU)  "
                  f"({1e6 / rate:.2f} us/event, {alerts} alerts)")  # fmt: skip
    for batch in args.profile or []:
        profiler = cProfile.Profile()
        rate, _ = run(1, args.features, batch, args.warmup, args.events, config, profiler)
        print(f"\ncProfile, 1 model, batch {batch} ({rate:,.0f} events/s under the profiler)")
        for order in ("tottime", "cumtime"):
            pstats.Stats(profiler).strip_dirs().sort_stats(order).print_stats(20)


if __name__ == "__main__":
    main()
