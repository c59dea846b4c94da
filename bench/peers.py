"""The whylogs and NannyML contenders of the throughput benchmark, one process each, beside Evidently.

``python -m bench.peers KIND --rows FILE --reference N``; ``bench.throughput`` starts them with the
interpreter of the peers venv (``.venv-peers``, made by ``make bench-peers`` from
``bench/peers-requirements.txt``): whylogs 1.6 does not run under numpy 2, which the project needs.
This module therefore imports nothing of the project and only the standard library at the top.

``FILE`` is a Parquet file the parent wrote: the rows of every model (column ``model``, then the
feature columns, then ``prediction``), the same seeded rows the worker reads. Reading it is not
timed, as Evidently's DataFrame build is not.

Kinds:

``whylogs``
    ``whylogs.log(pandas=frame)`` of every model's rows (reference and current), one call per model,
    all feature columns. Rows/s = rows profiled / time (a first call on 100 rows, whylogs' one-off
    set-up, is not timed).
``nannyml``
    Per model, ``nannyml.UnivariateDriftCalculator(column_names=features, chunk_size=1000)`` with its
    default methods, ``fit`` on the model's first ``--reference`` rows, ``calculate`` on the rest,
    and its alert columns read. Rows/s = rows judged (after the reference) / time, fit included.

Each prints one JSON line: rows, seconds (wall), cpu_seconds (this process), max_rss, a note.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Sequence
from typing import Any

KINDS = ("whylogs", "nannyml")
# Whether a kind runs with an interpreter: under numpy 2 whylogs imports, then fails in its first log.
CHECKS = {
    "whylogs": "import pandas, pyarrow, whylogs; whylogs.log(pandas=pandas.DataFrame({'a': [1.0], 'b': ['x']}))",
    "nannyml": "import pandas, pyarrow, nannyml",
}
CHUNK = 1000


def _quiet() -> None:
    # Both send usage statistics from a thread by default: no network here, and its CPU would be timed.
    os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "1")
    os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")


def _frames(path: str) -> tuple[list[tuple[str, Any]], list[str]]:
    """Per model its rows (in event order), and the feature columns."""
    import pandas as pd

    frame = pd.read_parquet(path)
    features = [c for c in frame.columns if c not in ("model", "prediction")]
    models = list(dict.fromkeys(frame["model"]))
    return [(m, frame[frame["model"] == m][features].reset_index(drop=True)) for m in models], features


class Timer:
    """Wall and CPU seconds of this process from ``start()`` to ``stop()``."""

    def start(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def run_whylogs(frames: list[tuple[str, Any]], features: list[str], reference: int, timer: Timer) -> tuple[int, str]:
    import whylogs as why

    why.log(pandas=frames[0][1].iloc[:100])  # first-call set-up (type resolvers) outside the timing
    columns = 0
    rows = 0
    timer.start()
    for _, frame in frames:
        view = why.log(pandas=frame).view()
        columns += len(view.get_columns())  # read back, so that nothing is left undone
        rows += len(frame)
    timer.stop()
    return rows, f"{len(frames)} profile(s) of {columns // max(1, len(frames))} columns (all rows)"


def run_nannyml(frames: list[tuple[str, Any]], features: list[str], reference: int, timer: Timer) -> tuple[int, str]:
    import nannyml

    timer.start()
    rows = 0
    alerts = 0
    methods: set[str] = set()
    for _, frame in frames:
        calculator = nannyml.UnivariateDriftCalculator(column_names=features, chunk_size=CHUNK)
        calculator.fit(frame.iloc[:reference])
        result = calculator.calculate(frame.iloc[reference:].reset_index(drop=True)).filter(period="analysis")
        table = result.to_df()
        flags = [c for c in table.columns if c[-1] == "alert"]
        alerts += int(table[flags].to_numpy().sum())
        methods |= {c[1] for c in flags}
        rows += len(frame) - reference
    timer.stop()
    return rows, f"methods {', '.join(sorted(methods))}; {alerts} alert(s) over chunks of {CHUNK} rows"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--rows", required=True, help="Parquet file of the rows (columns model, features...)")
    parser.add_argument("--reference", type=int, default=5000, help="nannyml: reference rows per model")
    args = parser.parse_args(argv)
    _quiet()
    frames, features = _frames(args.rows)
    run = {"whylogs": run_whylogs, "nannyml": run_nannyml}[args.kind]
    timer = Timer()
    rows, note = run(frames, features, args.reference, timer)
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"rows": rows, "seconds": timer.wall, "cpu_seconds": timer.cpu, "max_rss": max_rss, "note": note,
                      "columns": len(features)}), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
