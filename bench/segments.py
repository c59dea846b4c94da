"""What slicing a model by segment costs: the engine's throughput before and after segments, and memory.

Run from the repository root::

    .venv/bin/python -m bench.segments engine --old /tmp/v1          # about 4 min on 2 cores
    .venv/bin/python -m bench.segments engine --runs 5 --out report.md
    .venv/bin/python -m bench.segments memory                        # about 4 min

``engine``: the engine alone (``Engine.process`` on pre-built Kafka records, a ``MemoryStateStore``,
no broker, no Faust), on the 20-feature envelope workload of ``bench.throughput`` (contender e,
1000-event envelopes):

* Traffic: ``streams.simulate`` with 4 models (m0, m1, m4, m5, one partition each), 15 numeric and
  5 categorical features, seed 7, ``--events`` events in all (default 300,000: 75 envelopes of 1000
  events per model), sent round-robin over the models as ``produce`` sends them. Timestamps come
  from a counter, so the bytes are the same on every run. The envelopes are encoded once, here,
  and every run reads the same file.
* The engine runs with the worker settings of ``bench.throughput`` (ADWIN, Page-Hinkley and windowed
  PSI on every numeric feature and the prediction, PSI on every categorical one), fed 16 records a
  batch (``BATCH_MAX`` for 1000-event envelopes) and checkpointing to its store every second, as the
  worker does.
* Variants: the release before segments (``--old``: a worktree of it, e.g. ``git worktree add /tmp/v1
  e168f43``; run with ``PYTHONPATH`` pointing at it, and the run checks which ``streams`` it
  imported) and this tree on the same unsegmented envelopes; then this tree on the same traffic with
  a ``region`` segment object of 3 and of 20 values (equal shares) on every event, every model
  configured to slice by ``region``.
* Each run is a fresh process. The runs alternate (old, new, 3 segments, 20 segments, then the
  next round in the opposite order), because the machine is shared and its speed drifts. events/s =
  events over the wall time of the loop (process and checkpoints; start-up, the encoding and the
  warm-up excluded). The warm-up, not timed, takes each model past every scope's 5000-row
  reference (1.3 x 5000 x the segment values, in whole envelopes); the run checks that every
  feature monitor judges by then.

The whole worker through Kafka, old against new, is ``bench.throughput`` run from each tree, e.g.
``cd /tmp/v1 && PYTHONPATH=/tmp/v1 python -m bench.throughput --quick --no-memory --no-scale-out``
alternated with the same command here.

``memory``: what a tracked segment costs a model in memory and in checkpoint bytes.

* One ``ModelMonitor`` (no engine, no Kafka) of 20 features, 15 numeric N(0,1) and 5 categorical
  of 6 values, and a numeric prediction of one version, with the default ``MonitorConfig``; sliced
  by one key whose ``--segments`` values (default 0, 5 and 20; 0 = unsegmented) take equal shares;
  fed stable events in batches of 1000, the same seeded events for every run.
* Measured after 80,000 events (with 20 values, every segment still building its references from
  about 4000 values per column) and after 600,000 (every scope judging, in its steady state):
  the live Python heap since the monitor was created (tracemalloc; numpy buffers included, river's
  Rust ADWIN not: a few KB per detector), the growth of the process's RSS over the same span after
  ``gc.collect()`` and ``malloc_trim(0)`` (a separate run, without tracemalloc), and the bytes of
  ``msgpack(monitor.snapshot())``, what a checkpoint writes for the model. Each run is a fresh
  process.
* Per tracked segment: the difference from the unsegmented model divided by the segment values.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MODELS = ("m0", "m1", "m4", "m5")  # one partition each (bench.throughput.MODELS)
PARTITIONS = {"m0": 1, "m1": 3, "m4": 0, "m5": 2}  # librdkafka's default partitioner, 4 partitions
NUMERIC, CATEGORICAL = 15, 5
SEED = 7
ENVELOPE = 1000
REFERENCE = 5000  # MonitorConfig.reference_size
BATCH = 16  # records per Engine.process: bench.throughput's BATCH_MAX for 1000-event envelopes
CHECKPOINT_EVERY = 1.0  # seconds
TOPIC = "events"


# -- the envelopes -------------------------------------------------------------------------------


def warmup_envelopes(segments: int) -> int:
    """Envelopes per model before the timed part: every scope past its 5000-row reference (equal shares)."""
    return -(-int(1.3 * REFERENCE * max(segments, 1)) // ENVELOPE)


def write_envelopes(path: Path, events: int, segments: int) -> None:
    """The workload's envelopes, in sending order: partition (4 bytes), key length (4), value length (8)."""
    import orjson

    from streams.simulate import SegmentMix, Traffic, batches

    mixes: tuple[SegmentMix, ...] = ()
    if segments:
        values = tuple(f"r{i:02d}" for i in range(segments))
        mixes = (SegmentMix("region", values, (1.0,) * segments),)
    traffic = Traffic(models=MODELS, numeric=NUMERIC, categorical=CATEGORICAL, seed=SEED, segments=mixes)
    clock = itertools.count(1_700_000_000).__next__
    with path.open("wb") as out:
        per_model = warmup_envelopes(segments) * ENVELOPE + events // len(MODELS)
        for model, batch in batches(traffic, per_model, ENVELOPE, clock=lambda: float(clock())):
            key, value = model.encode(), orjson.dumps(batch)
            out.write(PARTITIONS[model].to_bytes(4, "little") + len(key).to_bytes(4, "little"))
            out.write(len(value).to_bytes(8, "little") + key + value)


def read_envelopes(path: Path) -> list[tuple[int, bytes, bytes]]:
    records = []
    with path.open("rb") as file:
        while header := file.read(16):
            partition = int.from_bytes(header[:4], "little")
            key = file.read(int.from_bytes(header[4:8], "little"))
            records.append((partition, key, file.read(int.from_bytes(header[8:16], "little"))))
    return records


# -- one run (a child process, importing whichever tree PYTHONPATH points at) ---------------------


async def engine_run(path: Path, segments: int) -> dict[str, Any]:
    import orjson
    from prometheus_client import CollectorRegistry

    import streams
    from streams.engine import Engine, Record
    from streams.metrics import Metrics
    from streams.settings import Settings
    from streams.state import MemoryStateStore

    options: dict[str, Any] = {
        "state_backend": "memory",
        "numeric_tests": ("psi",),
        "categorical_tests": ("psi",),
        "change_detectors": ("adwin", "page_hinkley"),
    }
    if segments:
        options["models"] = {model: {"segments": ["region"]} for model in MODELS}
    settings = Settings(**options)
    engine = Engine(settings, MemoryStateStore(), Metrics(CollectorRegistry()))
    envelopes = read_envelopes(path)
    offsets = dict.fromkeys(PARTITIONS.values(), 0)
    records = []
    for partition, key, value in envelopes:
        records.append(Record(TOPIC, partition, offsets[partition], time.time(), key, value))
        offsets[partition] += 1
    warmup = warmup_envelopes(segments) * len(MODELS)
    for start in range(0, warmup, BATCH):  # not timed: every scope builds its references
        await engine.process(records[start : min(start + BATCH, warmup)])
    await engine.checkpoint()
    monitors = [m for state in engine.partitions.values() for m in state.monitors.values()]
    scopes = [scope for m in monitors for scope in getattr(m, "scopes", [])]
    features = [f for scope in scopes for f in scope.features.values()]
    if not scopes:  # the release before segments: features straight on the model
        features = [f for m in monitors for f in getattr(m, "features").values()]  # noqa: B009
    judging = sum(f.window is not None for f in features)
    records = records[warmup:]
    events = sum(len(orjson.loads(r.value or b"[]")) for r in records)
    alerts = rejected = checkpoints = 0
    in_process = in_checkpoint = 0.0
    started = last = time.perf_counter()
    for start in range(0, len(records), BATCH):
        before = time.perf_counter()
        out = await engine.process(records[start : start + BATCH])
        after = time.perf_counter()
        in_process += after - before
        alerts += len(out.alerts)
        rejected += len(out.dlq)
        if after - last >= CHECKPOINT_EVERY:
            await engine.checkpoint()
            last = time.perf_counter()
            in_checkpoint += last - after
            checkpoints += 1
    before = time.perf_counter()
    await engine.checkpoint()
    finished = time.perf_counter()
    in_checkpoint += finished - before
    checkpoints += 1
    return {
        "streams": str(Path(streams.__file__).resolve().parent.parent),
        "events": events,
        "seconds": finished - started,
        "process": in_process,
        "checkpoint": in_checkpoint,
        "checkpoints": checkpoints,
        "alerts": alerts,
        "rejected": rejected,
        "scopes": len(scopes) or len(monitors),
        "features": len(features),
        "judging": judging,
    }


# -- memory per tracked segment -------------------------------------------------------------------

# Events fed when measured: with 20 values, every segment still building its references (about 4000
# values each); and long after every scope judges (ADWIN's blocks reach their bound of 256 after 13,000
# values of a scope, and the RSS stopped growing from about 450,000 events on in trial runs).
MEMORY_POINTS = (80_000, 600_000)
MEMORY_BATCH = 1000
CATEGORIES = ("a", "b", "c", "d", "e", "f")
CATEGORY_MIX = (0.3, 0.25, 0.2, 0.1, 0.1, 0.05)


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def memory_run(segments: int, trace: bool) -> dict[str, Any]:
    """One model (20 features and the prediction) fed stable events; its memory at MEMORY_POINTS."""
    import ctypes
    import gc
    import tracemalloc

    import numpy as np

    from detectors.columns import Column
    from detectors.config import MonitorConfig
    from detectors.monitors import ModelBatch, ModelMonitor
    from streams.state import encode

    rng = np.random.default_rng(SEED)
    values = [{"region": f"r{i:02d}"} for i in range(max(segments, 1))]
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    start_rss = rss_kib()
    if trace:
        tracemalloc.start()
    monitor = ModelMonitor("m", MonitorConfig(), segments=[("region",)] if segments else ())
    points: list[dict[str, Any]] = []
    fed = 0
    for point in MEMORY_POINTS:
        while fed < point:
            n = MEMORY_BATCH
            features = {f"f{j}": Column.from_numbers(rng.standard_normal(n)) for j in range(NUMERIC)}
            features.update({f"c{j}": Column.from_codes(rng.choice(len(CATEGORIES), size=n, p=CATEGORY_MIX),
                                                        list(CATEGORIES)) for j in range(CATEGORICAL)})  # fmt: skip
            batch = ModelBatch(features, np.arange(fed, fed + n, dtype=np.float64),
                               prediction=Column.from_numbers(rng.random(n)), versions=["1"] * n,
                               segments=[values[c] for c in rng.integers(0, len(values), size=n).tolist()])  # fmt: skip
            monitor.observe(batch)
            fed += n
        del features, batch
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        monitors = [f for scope in monitor.scopes for f in scope.monitors()]
        points.append({
            "events": fed,
            "scopes": len(monitor.scopes),
            "building": sum(f.window is None for f in monitors),
            "monitors": len(monitors),
            "snapshot": len(encode(monitor.snapshot())),
            "heap": tracemalloc.get_traced_memory()[0] if trace else None,
            "rss": (rss_kib() - start_rss) * 1024,
        })  # fmt: skip
    return {"segments": segments, "trace": trace, "points": points}


def memory_main(args: argparse.Namespace) -> list[str]:
    results: dict[tuple[int, bool], dict[str, Any]] = {}
    for trace in (False, True):
        for n in args.segments:
            command = [sys.executable, "-m", "bench.segments", "_memory-run", str(n)] + (["--trace"] if trace else [])
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
            if done.returncode:
                raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
            results[n, trace] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"  {n} segments{' (traced)' if trace else ''}: done", file=sys.stderr)
    mib = 2**20
    lines = [
        f"`python -m bench.segments memory --segments {','.join(map(str, args.segments))}`: git "
        f"{_git(REPO, 'describe', '--always', '--dirty')}. One model of {NUMERIC + CATEGORICAL} features "
        f"({NUMERIC} numeric N(0,1), {CATEGORICAL} categorical of {len(CATEGORIES)} values) and a numeric prediction "
        "(one version), default `MonitorConfig` (psi, ks, null_rate, adwin, page_hinkley on numbers; psi, "
        "chi_square, unseen_rate, null_rate on categories), sliced by one key whose values take equal shares, fed "
        f"stable events in batches of {MEMORY_BATCH}. Measured after {MEMORY_POINTS[0]:,} events (with 20 values "
        f"each segment holds about {MEMORY_POINTS[0] // 20:,} values per column: still building its references) "
        f"and after {MEMORY_POINTS[1]:,} (every scope judging, in its steady state). Heap: live Python allocations "
        "since the monitor was created (tracemalloc, its own run; numpy buffers included, river's Rust ADWIN not). "
        "RSS: growth of "
        "the process's resident set over the same span, after `gc.collect()` and `malloc_trim(0)` (a run without "
        "tracemalloc). Snapshot: bytes of `msgpack(monitor.snapshot())`, what a checkpoint writes for the model.",
        "",
        "| segment values | events fed | scopes | column monitors (building references) | heap MiB | RSS MiB "
        "| snapshot KiB |",
        "|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for index in range(len(MEMORY_POINTS)):
        for n in args.segments:
            plain, traced = results[n, False]["points"][index], results[n, True]["points"][index]
            lines.append(f"| {n} | {plain['events']:,} | {plain['scopes']} | {plain['monitors']} "
                         f"({plain['building']}) | {traced['heap'] / mib:.2f} | {plain['rss'] / mib:.1f} "
                         f"| {plain['snapshot'] / 1024:,.0f} |")  # fmt: skip
    top = max(args.segments)
    if 0 in args.segments and top > 0:
        lines += ["", "Per tracked segment: the difference from the unsegmented model over the segment values.", "",
                  "| state | segment values | heap KiB | RSS KiB | snapshot KiB |",
                  "|---|--:|--:|--:|--:|"]  # fmt: skip
        for index, state in enumerate(("building its references", "judging")):
            for n in (m for m in args.segments if m):
                if index == 0 and n != top:
                    continue  # with fewer values every segment is already past its references
                zero_p, zero_t = results[0, False]["points"][index], results[0, True]["points"][index]
                p, t = results[n, False]["points"][index], results[n, True]["points"][index]
                lines.append(f"| {state} | {n} | {(t['heap'] - zero_t['heap']) / n / 1024:,.0f} "
                             f"| {(p['rss'] - zero_p['rss']) / n / 1024:,.0f} "
                             f"| {(p['snapshot'] - zero_p['snapshot']) / n / 1024:,.1f} |")  # fmt: skip
    return lines


# -- the comparison ------------------------------------------------------------------------------


def run_child(tree: Path, path: Path, segments: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTSTREAM_")}
    env["PYTHONPATH"] = str(tree)
    command = [sys.executable, str(Path(__file__).resolve()), "_engine-run", str(path), "--segments", str(segments)]
    done = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} (PYTHONPATH={tree}) failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(result["streams"]) != tree.resolve():
        raise SystemExit(f"the run imported streams from {result['streams']}, not {tree}")
    if result["rejected"]:
        raise SystemExit(f"{tree}: {result['rejected']} messages rejected")
    if result["judging"] != result["features"]:
        raise SystemExit(f"{tree}: {result['features'] - result['judging']} monitors still building references")
    return result


def _git(tree: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=tree, capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def engine_main(args: argparse.Namespace) -> list[str]:
    variants: list[tuple[str, Path | None, int]] = []  # label, tree (None: this one), segment values
    if args.old:
        variants.append((f"before segments ({_git(args.old, 'rev-parse', '--short', 'HEAD')}), unsegmented",
                         args.old, 0))  # fmt: skip
    variants.append(("this tree, unsegmented", None, 0))
    variants += [(f"this tree, {n} segment values", None, n) for n in args.segments]
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in variants}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="driftstream-bench-segments-") as work:
        files = {n: Path(work) / f"envelopes-{n}.bin" for n in {n for _, _, n in variants}}
        for n, path in files.items():
            write_envelopes(path, args.events, n)
        for round_ in range(args.runs):
            order = variants if round_ % 2 == 0 else variants[::-1]
            for label, tree, n in order:
                result = run_child(tree or REPO, files[n], n)
                runs[label].append(result)
                rate = result["events"] / result["seconds"]
                print(f"  round {round_ + 1}/{args.runs}: {label}: {rate:,.0f} events/s ({result['seconds']:.1f} s, "
                      f"{result['checkpoints']} checkpoints)", file=sys.stderr)  # fmt: skip
    elapsed = time.perf_counter() - started

    def rates(label: str) -> list[float]:
        return [r["events"] / r["seconds"] for r in runs[label]]

    base = "this tree, unsegmented"
    lines = [
        "| engine | events/s, each run | median events/s | median / this tree unsegmented | in checkpoints | "
        "scopes (4 models) | alerts per run |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for label, _, _ in variants:
        each, done = rates(label), runs[label]
        share = sum(r["checkpoint"] for r in done) / sum(r["seconds"] for r in done)
        lines.append(f"| {label} | {' / '.join(f'{x:,.0f}' for x in each)} | {statistics.median(each):,.0f} "
                     f"| {statistics.median(each) / statistics.median(rates(base)):.2f} | {share:.1%} "
                     f"| {done[0]['scopes']} | {done[0]['alerts']} |")  # fmt: skip
    head = [
        f"`python -m bench.segments engine{f' --old {args.old}' if args.old else ''} --runs {args.runs} "
        f"--events {args.events}`: git {_git(REPO, 'describe', '--always', '--dirty')}, {elapsed:.0f} s on "
        f"{os.cpu_count()} cores; {args.events:,} events per run ({len(MODELS)} models, {NUMERIC} numeric + "
        f"{CATEGORICAL} categorical features, {ENVELOPE}-event envelopes, {BATCH} records per batch, a checkpoint "
        "every second).",
        "",
    ]
    if args.old:
        old = rates(variants[0][0])
        new = rates(base)
        pairs = [n / o for o, n in zip(old, new, strict=True)]
        head.append(f"new / old, unsegmented: {statistics.median(new) / statistics.median(old):.3f} (medians); "
                    f"per round {', '.join(f'{p:.3f}' for p in pairs)}.")  # fmt: skip
        head.append("")
    return head + lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.segments", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    engine = commands.add_parser("engine", help="engine throughput: before segments, unsegmented, segmented")
    engine.add_argument("--old", type=Path, help="worktree of the release to compare with (e.g. /tmp/v1)")
    engine.add_argument("--runs", type=int, default=3, help="runs of each variant (default 3)")
    engine.add_argument("--events", type=int, default=300_000, help="events per run, all models (default 300,000)")
    engine.add_argument("--segments", type=lambda text: [int(n) for n in text.split(",")], default=[3, 20],
                        help="segment values of the segmented variants (default 3,20)")  # fmt: skip
    engine.add_argument("--out", type=Path, help="also write the markdown table to this file")
    memory = commands.add_parser("memory", help="memory and snapshot bytes per tracked segment")
    memory.add_argument("--segments", type=lambda text: [int(n) for n in text.split(",")], default=[0, 5, 20],
                        help="segment values of the runs (default 0,5,20)")  # fmt: skip
    memory.add_argument("--out", type=Path, help="also write the markdown table to this file")
    memory_child = commands.add_parser("_memory-run", help=argparse.SUPPRESS)
    memory_child.add_argument("segments", type=int)
    memory_child.add_argument("--trace", action="store_true")
    child = commands.add_parser("_engine-run", help=argparse.SUPPRESS)
    child.add_argument("path", type=Path)
    child.add_argument("--segments", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "_engine-run":
        print(json.dumps(asyncio.run(engine_run(args.path, args.segments))))
        return 0
    if args.command == "_memory-run":
        print(json.dumps(memory_run(args.segments, args.trace)))
        return 0
    report = "\n".join(engine_main(args) if args.command == "engine" else memory_main(args)) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
