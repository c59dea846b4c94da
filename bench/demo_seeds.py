"""Does ``driftstream demo`` alert on the features it drifts, and on no other, whatever the seed?

Run from the repository root::

    .venv/bin/python -m bench.demo_seeds                     # seeds 1..10, 45 s each, about 10 min
    .venv/bin/python -m bench.demo_seeds --seeds 3 --duration 30

Each run is the real demo (embedded broker, Redis, a worker, the simulator) with the traffic's
seed replaced; nothing else changes (the lines come from the default false-alarm budget, not from
any seed). A run passes when the firing alerts name exactly the drifted places: every drift's
(model, feature), and for a drift confined to a segment value of a model sliced by that key, also
(model, segment, feature); a model with ``DATASET_DRIFT_FEATURES`` or more drifted features (not
counting missing values) also alerts on its inputs (dataset drift), and a model whose labels'
concept drifts on its quality. The prediction depends on an undrifted feature, so no prediction
alert is expected. Retraining requests are not places: they are left out.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from detectors.config import MonitorConfig
from streams.console import where
from streams.demo import DEMO_LABELS, DEMO_TRAFFIC, SLICED_KEYS, run_demo


def expected_places() -> set[str]:
    places = set()
    drifted: dict[str, int] = {}
    for drift in DEMO_TRAFFIC.drifts:
        model = drift.model or DEMO_TRAFFIC.models[0]
        if drift.kind != "null_rate":  # missing values are data quality, not drift
            drifted[model] = drifted.get(model, 0) + 1
        places.add(f"{model}/{drift.feature}")
        if drift.segment and set(drift.segment) <= set(SLICED_KEYS.get(model, ())):
            label = ",".join(f"{key}={value}" for key, value in drift.segment.items())
            places.add(f"{model}[{label}]/{drift.feature}")
    places.update(f"{model}/inputs" for model, count in drifted.items()
                  if count >= MonitorConfig().dataset_drift_features)  # fmt: skip
    places.update(f"{drift.model or DEMO_TRAFFIC.models[0]}/quality v1" for drift in DEMO_LABELS.concept_drifts)
    return places


def summary(alerts: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """Each alerted place and the detectors its firing alerts named, in order of first alert."""
    places: dict[str, list[str]] = {}
    for alert in alerts:
        if alert.get("status") != "firing":  # a retraining request has none
            continue
        named = places.setdefault(where(alert), [])
        for detector in alert.get("detectors") or [alert["detector"]]:
            if detector not in named:
                named.append(detector)
    return places


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.demo_seeds", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="runs, with seeds 1..N (default 10)")
    parser.add_argument("--duration", type=float, default=45.0, help="seconds per run (default 45)")
    args = parser.parse_args(argv)
    expected = expected_places()
    rows, failed = [], 0
    for seed in range(1, args.seeds + 1):
        places = summary(run_demo(args.duration, seed=seed))
        unexpected = sorted(set(places) - expected)
        missed = sorted(expected - set(places))
        failed += bool(unexpected or missed)
        alerted = "; ".join(f"{place} ({', '.join(detectors)})" for place, detectors in sorted(places.items()))
        rows.append(f"| {seed} | {alerted} | {', '.join(unexpected) or '-'} | {', '.join(missed) or '-'} |")
    print(f"\nExpected: {', '.join(sorted(expected))}. {args.duration:g} s per run.\n")
    print("| seed | alerted (detectors) | unexpected | missed |\n|--:|---|---|---|")
    print("\n".join(rows))
    print(f"\n{args.seeds - failed} of {args.seeds} runs alerted on exactly the drifted places")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
