"""The contenders of the throughput benchmark that are not the driftstream worker, one process each.

``python -m bench.agents KIND --counter FILE [options]``; ``bench.throughput`` starts them. Each
reports its progress through a tiny shared file (:class:`Progress`): events and messages done so
far, written by the contender after every unit of work, read by the parent as often as it likes.
No sockets and no extra thread, so reporting costs the contender ~0.2 microseconds per update.

Kinds:

``faust-empty``
    A Faust agent that does nothing with its messages: ``async for _ in stream``. The Faust ceiling.
``naive``
    What a user writes first: a Faust agent (Faust's ``json`` codec) that, per event and per feature,
    updates river's ``ADWIN`` and ``PageHinkley`` (numeric features and the prediction), keeps the
    last 1000 values of every feature and, each time those fill, computes PSI against the first 1000
    values of that feature (quantile bins for numbers, category frequencies for strings).
``decode``
    The parse limit: a confluent-kafka consumer assigned every partition from the start (no group),
    ``consume(num_messages=10)``, then for each batch
    ``streams.decode.decode_message`` on every message, events grouped per model, and per model the
    engine's column build (``streams.engine._columns``) and typed numpy columns
    (``detectors.columns.Column``: ``numeric()`` / ``coded()``). No detectors.
``evidently``
    Evidently's ``DataDriftPreset`` as a batch job over the first model's events: reference = its
    first 5000 rows, current = the next ``--rows`` rows, in one report (``--window 0``) or in
    reports of ``--window`` rows each. Prints one JSON line with its own wall and CPU time.
"""

from __future__ import annotations

import argparse
import atexit
import itertools
import json
import math
import mmap
import os
import resource
import shutil
import struct
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

_LAYOUT = struct.Struct("<qq")  # events, messages


class Progress:
    """Two int64 counters in a 16-byte file, shared through mmap (written by one process only)."""

    size = _LAYOUT.size

    def __init__(self, path: str | Path) -> None:
        with open(path, "r+b") as handle:
            self._map = mmap.mmap(handle.fileno(), self.size)
        self.events = 0
        self.messages = 0

    @classmethod
    def create(cls, directory: str | Path, name: str) -> Path:
        path = Path(directory) / f"{name}.progress"
        path.write_bytes(b"\0" * cls.size)
        return path

    @staticmethod
    def read(path: str | Path) -> tuple[int, int]:
        data = Path(path).read_bytes()
        if len(data) < _LAYOUT.size:
            return 0, 0
        events, messages = _LAYOUT.unpack_from(data)
        return int(events), int(messages)

    def add(self, events: int, messages: int) -> None:
        self.events += events
        self.messages += messages
        _LAYOUT.pack_into(self._map, 0, self.events, self.messages)


# -- Faust contenders --------------------------------------------------------------------------------


def _faust_app(args: argparse.Namespace, value_serializer: str) -> tuple[Any, Any]:
    """A Faust app configured like the driftstream worker's (fetch size, buffer, offsets), and its topic."""
    import faust

    app = faust.App(
        args.group,
        broker=[f"kafka://{server}" for server in args.bootstrap.split(",")],
        value_serializer=value_serializer,
        key_serializer="raw",
        web_enabled=False,
        datadir=args.data_dir or _temporary_dir(),
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10.0,  # as the worker's defaults
        broker_rebalance_timeout=10.0,
        broker_heartbeat_interval=1.0,
        topic_allow_declare=False,
        stream_buffer_maxsize=4096,  # as the worker: max(4096, 2 * batch_max)
        consumer_max_fetch_size=10 * 1024 * 1024 + 64 * 1024,  # as the worker: max_message_bytes + 64 KiB
    )
    topic = app.topic(args.topic, value_serializer=value_serializer, key_serializer="raw")
    return app, topic


def _temporary_dir() -> str:
    """A directory removed when this process exits."""
    path = tempfile.mkdtemp(prefix="driftstream-bench-faust-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _run_faust(app: Any) -> None:
    import faust

    faust.Worker(app, loglevel=os.environ.get("BENCH_FAUST_LOGLEVEL", "WARNING"), quiet=True).execute_from_commandline()


def run_faust_empty(args: argparse.Namespace) -> None:
    progress = Progress(args.counter)
    app, topic = _faust_app(args, "raw")

    @app.agent(topic, name="empty")
    async def empty(stream: Any) -> None:
        async for _ in stream:
            progress.add(1, 1)

    _run_faust(app)


class NaivePsi:
    """PSI of each full window of ``size`` values against the feature's first ``size`` values."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.reference: list[Any] = []
        self.window: list[Any] = []
        self.edges: np.ndarray | None = None
        self.expected: Any = None
        self.last = 0.0

    def add(self, value: Any) -> None:
        if len(self.reference) < self.size:
            self.reference.append(value)
            if len(self.reference) == self.size:
                self._build()
            return
        self.window.append(value)
        if len(self.window) == self.size:
            self.last = self._psi()
            self.window = []

    def _build(self) -> None:
        if isinstance(self.reference[0], str):
            counts = Counter(self.reference)
            self.expected = {k: v / self.size for k, v in counts.items()}
        else:
            reference = np.asarray(self.reference, dtype=float)
            self.edges = np.unique(np.quantile(reference, np.linspace(0, 1, 11)[1:-1]))
            self.expected = np.bincount(np.searchsorted(self.edges, reference), minlength=len(self.edges) + 1)
            self.expected = self.expected / self.size

    def _psi(self) -> float:
        eps = 1e-4
        if self.edges is None:
            counts = Counter(self.window)
            keys = set(counts) | set(self.expected)
            total = 0.0
            for key in keys:
                p = max(self.expected.get(key, 0.0), eps)
                q = max(counts.get(key, 0) / self.size, eps)
                total += (q - p) * math.log(q / p)
            return total
        window = np.asarray(self.window, dtype=float)
        actual = np.bincount(np.searchsorted(self.edges, window), minlength=len(self.edges) + 1) / self.size
        p, q = np.maximum(self.expected, eps), np.maximum(actual, eps)
        return float(np.sum((q - p) * np.log(q / p)))


class NaiveFeature:
    def __init__(self, numeric: bool, window: int) -> None:
        from river import drift

        self.psi = NaivePsi(window)
        self.adwin = drift.ADWIN() if numeric else None
        self.ph = drift.PageHinkley() if numeric else None


def run_naive(args: argparse.Namespace) -> None:
    progress = Progress(args.counter)
    app, topic = _faust_app(args, "json")
    monitors: dict[tuple[str, str], NaiveFeature] = {}
    changes = 0  # change points seen, so nothing is optimised away

    def observe(model: str, name: str, value: Any) -> None:
        nonlocal changes
        if value is None:
            return
        feature = monitors.get((model, name))
        if feature is None:
            feature = monitors[(model, name)] = NaiveFeature(not isinstance(value, str), args.window)
        if feature.adwin is not None and feature.ph is not None:
            feature.adwin.update(value)
            feature.ph.update(value)
            changes += feature.adwin.drift_detected + feature.ph.drift_detected
        feature.psi.add(value)

    @app.agent(topic, name="naive")
    async def naive(stream: Any) -> None:
        async for event in stream:
            model = event["model"]
            for name, value in event["features"].items():
                observe(model, name, value)
            observe(model, "prediction", event.get("prediction"))
            progress.add(1, 1)

    _run_faust(app)


# -- the parse limit ---------------------------------------------------------------------------------


def _column_builder() -> tuple[Any, str]:
    """The engine's own column build, and its name for the table."""
    from streams.engine import _columns

    return _columns, "streams.engine._columns"


def run_decode(args: argparse.Namespace) -> None:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from streams.decode import Limits, decode_message

    build, source = _column_builder()
    print(json.dumps({"columns": source}), flush=True)
    progress = Progress(args.counter)
    limits = Limits()
    kinds: dict[tuple[str, str], Any] = {}  # FeatureKind, or None while a column is all missing
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "enable.auto.commit": False,
        "max.partition.fetch.bytes": 16 * 1024 * 1024,
        "fetch.max.bytes": 64 * 1024 * 1024,
        "receive.message.max.bytes": 128 * 1024 * 1024,
    })  # fmt: skip
    # assign(), not subscribe(): no consumer group to join (librdkafka's join against Tansu takes
    # tens of seconds here); one consumer reading every partition from the start either way.
    partitions = consumer.list_topics(args.topic, timeout=10).topics[args.topic].partitions
    consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in partitions])
    try:
        while True:
            messages = consumer.consume(num_messages=args.num_messages, timeout=0.5)
            if not messages:
                continue
            groups: dict[str, list[Any]] = defaultdict(list)
            stamps: dict[str, list[float]] = defaultdict(list)
            count = 0
            for message in messages:
                if message.error():
                    continue
                record_ts = message.timestamp()[1] / 1000
                events, _ = decode_message(message.value(), limits)
                for event in events:
                    groups[event.model].append(event)
                    stamps[event.model].append(record_ts if event.timestamp is None else event.timestamp)
                count += len(events)
            for model, events in groups.items():
                batch = build(events, np.fromiter(stamps[model], float, len(events)))
                for name, column in batch.features.items():
                    kind = kinds.get((model, name))
                    if kind is None:
                        kind = kinds[(model, name)] = column.infer_kind()
                    if kind == "numeric":
                        column.numeric()
                    elif kind is not None:
                        column.coded(kind)
            progress.add(count, len(messages))
    finally:
        consumer.close()


# -- Evidently ---------------------------------------------------------------------------------------


def run_evidently(args: argparse.Namespace) -> None:
    os.environ.setdefault("DO_NOT_TRACK", "1")
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from streams.simulate import Drift, Traffic, model_events

    traffic = Traffic(models=tuple(args.models.split(",")), numeric=args.numeric, categorical=args.categorical,
                      seed=args.seed, drifts=tuple(Drift.parse(text) for text in args.drift))  # fmt: skip
    total = args.reference + args.rows
    rows = [dict(e["features"], prediction=e["prediction"]) for e in itertools.islice(model_events(traffic, 0), total)]
    frame = pd.DataFrame(rows)
    definition = DataDefinition(
        numerical_columns=[f"f{i}" for i in range(args.numeric)] + ["prediction"],
        categorical_columns=[f"c{i}" for i in range(args.categorical)],
    )
    preset = DataDriftPreset(method=args.method) if args.method else DataDriftPreset()
    window = args.window or args.rows
    wall = time.perf_counter()
    cpu = time.process_time()
    reference = Dataset.from_pandas(frame.iloc[: args.reference].reset_index(drop=True), data_definition=definition)
    drifted = 0
    for start in range(args.reference, total, window):
        current = frame.iloc[start : start + window].reset_index(drop=True)
        snapshot = Report([preset]).run(Dataset.from_pandas(current, data_definition=definition), reference)
        drifted += int(snapshot.dict()["metrics"][0]["value"]["count"])
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    reports = math.ceil(args.rows / window)
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"rows": args.rows, "seconds": wall, "cpu_seconds": cpu, "reports": reports,
                      "drifted_columns": drifted, "max_rss": max_rss}), flush=True)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.agents", description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=("faust-empty", "naive", "decode", "evidently"))
    parser.add_argument("--counter", required=True, help="progress file made by Progress.create")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="inference-events")
    parser.add_argument("--group", default="bench")
    parser.add_argument("--data-dir", help="Faust data dir (default: a temporary one, removed at exit)")
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--num-messages", type=int, default=10, help="decode: messages per consume() call")
    parser.add_argument("--models", default="m0")
    parser.add_argument("--numeric", type=int, default=15)
    parser.add_argument("--categorical", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--drift", action="append", default=[], help="evidently: a drift of the traffic, as "
                        "driftstream simulate --drift takes it (repeatable)")  # fmt: skip
    parser.add_argument("--reference", type=int, default=5000)
    parser.add_argument("--rows", type=int, default=100_000, help="evidently: current rows")
    parser.add_argument("--method", default="psi", help="evidently: stattest of every column ('' = preset default)")
    args = parser.parse_args(argv)
    runs = {"faust-empty": run_faust_empty, "naive": run_naive, "decode": run_decode, "evidently": run_evidently}
    runs[args.kind](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
