"""Throughput benchmark: the driftstream worker against the Faust ceiling, the parse limit and peers.

Run from the repository root (needs ``redis-server`` and the dev extra for the embedded broker;
Evidently is optional: ``pip install 'driftstream[bench]'``; whylogs and NannyML run from a venv of
their own, ``make bench-peers``, as they need numpy 1)::

    .venv/bin/python -m bench.throughput                       # full run, about 12 min on 2 cores
    .venv/bin/python -m bench.throughput --quick               # smoke test (20 features), about 6 min
    .venv/bin/python -m bench.throughput --features 20 --events 600000
    .venv/bin/python -m bench.throughput --out docs/throughput-table.md

Protocol (the contenders and what limits them: docs/throughput.md):

* One embedded broker (Tansu, in memory) and one redis-server, started here on free ports, shared by
  every run. They run on the same 2 cores as the contender, and their CPU over each measured
  interval is reported next to the contender's.
* Per workload (``--features``: 3/4 numeric, 1/4 categorical, 4 models) the same seeded traffic
  (``streams.simulate``, with drifts from each model's event 5000 on, DRIFTS: mean shifts, category
  mixes, missing values, a wider spread) is produced once into five topics of 4 partitions: single-event
  messages, 100-event and 1000-event row envelopes, and 1000-event columnar batches as JSON
  (``streams.producer.columnar_json``) and as Arrow (``columnar_arrow``, header ``content-type``).
  Each message holds one model's events, keyed by model; the model names are chosen so that each
  model has a partition of its own. Event timestamps are the same in every topic (a clock per model,
  1 ms an event). Every message is acknowledged by the broker before any contender starts.
* Every contender is its own process, reading a topic from the start in a consumer group of its
  own. The parent samples its progress every 0.05 s (0.1 s for a worker's /metrics) and, at each
  sample, its CPU time (user + system, psutil). Throughput is the events counted between the first
  sample that shows an event and the first sample that shows all of them, over the time between the
  two: start-up, group join and the first batch are excluded. CPU is taken over the same interval.
  Peak RSS is the process's VmHWM (Linux; it includes start-up).
* The driftstream worker (``python -m streams worker``) runs with the default detectors (every
  setting at its default) except ``BATCH_MAX``, set as the README advises for envelopes (about
  16,000 events a batch: 1000 single events, 160 or 16 envelopes), and topics of its own. Its
  progress is ``driftstream_events_consumed_total`` (summed over models) from its /metrics. An extra
  row runs the 1000-event envelopes with issue 5's set (PSI, ADWIN, Page-Hinkley only).
* ``driftstream replay`` (``streams.replay.replay`` in a process of its own, ``bench.replayer``) over
  the 1000-event row and Arrow topics, with the worker's settings; progress from its callback.
* Batching changes no result: each worker run (and each replay) sends its alerts to a topic of its
  own; they are read back after the run and compared, per model over the events every topic holds
  (the single-event topic is the shortest), on model, version, segment, type, feature, detector,
  status, severity, event index and window times. A difference makes the run exit 1 (after the report).
* Peers beside Evidently, each a process timed the same way (own wall and CPU time, data prepared
  untimed): whylogs (``whylogs.log`` of the rows) and NannyML (``UnivariateDriftCalculator``), from
  ``bench.peers`` run by the peers venv's interpreter (``--peers-python``, default
  ``.venv-peers/bin/python``). A peer that is not installed is a row saying how to install it.
* Extra runs: memory of one worker with 100 models x 100 features (1000-event envelopes, every
  model past its 5000-row reference and one window), and the cost of checkpointing: the 1000-event
  envelope run with ``DRIFTSTREAM_CHECKPOINT_INTERVAL=3600`` against the default 1 s, alternated
  1, 3600, 1, 3600 (not in --quick).
* Scale-out (20-feature workload, --quick too; ``--no-scale-out`` skips it): right after the 1-worker
  run on 1000-event envelopes, SCALE_OUT worker processes in one consumer group (one app id, each its own
  web port and data dir), started together on the same topic. Their counters are summed and measured like
  e (first event to all), and also as a drain: all events over the time from the group's first partition
  assignment to the last event, for the 1-worker run too. Each worker's ``driftstream_partitions_assigned``
  is sampled; a worker that owned no partition or applied no event fails the run (exit code 1, after the
  report).

Every child runs in its own process group and is stopped with everything it started, on success,
failure, Ctrl-C or SIGTERM; a contender that does not start, stalls or exits fails the run with its
name and the tail of its log (the logs are kept then).
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata
import itertools
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.agents import Progress
from streams.services import EmbeddedBroker, EmbeddedRedis, free_port, stop_process_group
from streams.settings import Settings
from streams.simulate import Drift, Traffic, model_events

REPO = Path(__file__).resolve().parent.parent
PARTITIONS = 4
# Keys hashed by librdkafka's default partitioner (CRC32 of the key, modulo 4): m0 -> 1, m1 -> 3, m4 -> 0,
# m5 -> 2. One model per partition, so that every partition carries a quarter of the data and any 2 + 2
# assignment of the scale-out run splits it evenly (m0..m3 would fill partitions 1 and 3 only).
MODELS = ("m0", "m1", "m4", "m5")
SEED = 7
REFERENCE = 5000  # the worker's reference_size, and Evidently's reference rows
WINDOW = 1000  # the worker's window_size, the naive agent's window and reference
START_TIMEOUT = 120.0  # seconds for a contender to show its first event (Faust start-up and group join)
STALL_TIMEOUT = 180.0  # seconds without progress before a contender counts as stuck (a batch may take long)
RUN_TIMEOUT = 900.0  # seconds for one measured run, whatever its progress
SCALE_OUT = 2  # worker processes of the scale-out run
MIN_BATCHES = 3  # fewer batches of a worker in its measured interval: the rate is flagged as too coarse
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL when a contender is stopped (nothing is measured then)

EVENT_SPACING = 0.001  # seconds between two events of a model (their timestamps: the same in every topic)
# The drift of the traffic, so that the runs have alerts to compare (model, feature, kind, magnitude, first event):
# after the reference, a 1-sigma mean shift (m0), the reversed category mix (m1), 30% missing values (m4); in m5
# several, two of them mid-window, so that change detectors, out-of-range and dataset drift fire between windows.
DRIFTS = (
    ("m0", "f1", "mean_shift", 1.0, REFERENCE),
    ("m1", "c0", "category_mix", 1.0, REFERENCE),
    ("m4", "f2", "null_rate", 0.3, REFERENCE),
    ("m5", "f5", "variance", 2.5, REFERENCE),
    ("m5", "c2", "category_mix", 1.0, REFERENCE + 1200),
    ("m5", "f3", "mean_shift", 2.0, REFERENCE + 1500),
)
PEERS_PYTHON = REPO / ".venv-peers" / "bin" / "python"  # the venv of `make bench-peers`
PEERS_INSTALL = "make bench-peers (a venv .venv-peers from bench/peers-requirements.txt; or --peers-python PATH)"
EVIDENTLY_INSTALL = "pip install 'driftstream[bench]'"
# Issue 5's detector set, the extra row "e1000-i5": windowed PSI, ADWIN and Page-Hinkley only
ISSUE5_DETECTORS = {
    "DRIFTSTREAM_NUMERIC_TESTS": '["psi"]',
    "DRIFTSTREAM_CATEGORICAL_TESTS": '["psi"]',
    "DRIFTSTREAM_CHANGE_DETECTORS": '["adwin","page_hinkley"]',
}

CONTENDERS = {
    "a": "a. empty Faust agent",
    "b": "b. decode + columns (confluent consume)",
    "c": "c. naive Faust agent (river + PSI per event)",
    "d": "d. driftstream worker",
    "e100": "e. driftstream worker",
    "e1000": "e. driftstream worker",
    "ecol": "e. driftstream worker",
    "earrow": "e. driftstream worker",
    "e1000-i5": "e. driftstream worker, issue 5's detectors (PSI, ADWIN, Page-Hinkley)",
    "e1000x2": "e. driftstream worker, 2 processes in one group",
    "r1000": "r. driftstream replay",
    "rarrow": "r. driftstream replay",
    "f": "f. Evidently DataDriftPreset, one report",
    "f-win": "f. Evidently DataDriftPreset, report per 1000 rows",
    "g": "g. whylogs profile (why.log)",
    "h": "h. NannyML UnivariateDriftCalculator",
}
MESSAGES = {  # what each topic holds, as the table names it
    "single": "single events",
    "b100": "100-event envelopes",
    "b1000": "1000-event envelopes",
    "col": "1000-event columnar JSON",
    "arrow": "1000-event Arrow",
}
TARGETS = {  # on the 20-feature workload (issue 5, point 4; issue 17, point 6)
    "d/a": 0.9,  # issue 17 (issue 5: 0.8)
    "e": 80_000.0,  # JSON rows of 1000, issue 17 (issue 5: 150,000)
    "col": 150_000.0,
    "arrow": 250_000.0,
    "arrow/f": 8.0,
    "arrow/peer": 1.0,  # ahead of whylogs and of NannyML
    "e/b": 0.3,
    "e/c": 5.0,
    "e/f": 10.0,
    "rss_mb": 500.0,
    "checkpoint_loss": 0.05,
}


def batch_max_for(per_message: int) -> int:
    """``DRIFTSTREAM_BATCH_MAX`` as the README advises: about 16,000 events a batch, at most the default 1000."""
    return max(1, min(1000, 16_000 // per_message))


class BenchError(Exception):
    """A contender or a service failed; the message names it."""


# -- plans -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    features: int
    batch_events: int  # events in each envelope topic (all models)
    single_events: int  # events in the single-event topic (also the prefix whose alerts are compared)
    naive_events: int  # of those, what the naive agent reads
    evidently_rows: int  # current rows of the one-report Evidently job
    evidently_windows: int  # reports of 1000 rows in the windowed Evidently job
    models: tuple[str, ...] = MODELS
    drifts: bool = True  # DRIFTS in the traffic

    @property
    def peer_rows(self) -> int:
        """Rows per model after the reference for whylogs and NannyML: Evidently's, shared by the models."""
        return max(WINDOW, self.evidently_rows // len(self.models))

    @property
    def numeric(self) -> int:
        return max(1, round(self.features * 3 / 4))

    @property
    def categorical(self) -> int:
        return self.features - self.numeric

    @property
    def traffic(self) -> Traffic:
        names = [f"f{i}" for i in range(self.numeric)] + [f"c{i}" for i in range(self.categorical)]
        drifts = tuple(Drift(feature, start, kind, magnitude, model)  # type: ignore[arg-type]
                       for model, feature, kind, magnitude, start in DRIFTS
                       if self.drifts and model in self.models and feature in names)  # fmt: skip
        return Traffic(models=self.models, numeric=self.numeric, categorical=self.categorical, seed=SEED,
                       drifts=drifts)  # fmt: skip

    def title(self) -> str:
        return (f"{self.features} features ({self.numeric} numeric, {self.categorical} categorical), "
                f"{len(self.models)} models")  # fmt: skip


def _round_to(value: float, unit: int) -> int:
    return max(unit, int(round(value / unit)) * unit)


def plan_workload(features: int, events: int, quick: bool = False) -> Workload:
    """Sizes for one feature count; ``events`` is the size of an envelope topic at 20 features.

    Rates are rates: each contender gets enough events for several seconds of measurement here, the
    slow ones fewer. Wider events get fewer envelope events (at 100 features: 3/10 of them, about
    1.5 times the bytes). The naive agent reads at least its 1000-value reference and two PSI windows
    per model and feature; the single-event topic holds at least every model's reference and three
    windows (the drift's alerts are compared over it).
    """
    unit = len(MODELS) * 1000  # whole 1000-event envelopes for every model
    narrow = min(1.0, 20 / features)
    batch = _round_to(events * min(1.0, 30 / features), unit)
    naive = max(_round_to(events * narrow * 0.06, unit), len(MODELS) * 3 * WINDOW)
    single = max(_round_to(events * 0.16, unit), naive, len(MODELS) * (REFERENCE + 3 * WINDOW))
    return Workload(
        features=features,
        batch_events=batch,
        single_events=single,
        naive_events=naive,
        evidently_rows=_round_to(events * narrow / 3, 1000),
        evidently_windows=1 if quick else max(1, round(3 * narrow)),
    )


# -- results ---------------------------------------------------------------------------------------


@dataclass
class Result:
    key: str  # a, b, c, d, e100, e1000, f, f-win, ...
    label: str
    messages: str  # what the contender reads
    events: int  # events in the measured interval
    seconds: float
    cpu_seconds: float
    peak_rss: int  # bytes
    notes: list[str] = field(default_factory=list)
    services_cpu: float = math.nan  # CPU seconds of the broker and redis-server over the interval
    other_cpu: float = math.nan  # CPU seconds of the rest of the machine over the interval
    worker: dict[str, float] = field(default_factory=dict)  # a worker's own metrics over the interval
    shares: list[Share] = field(default_factory=list)  # per worker process (several in one group: scale-out)
    alerts: list[dict[str, Any]] | None = None  # the alerts it sent (a worker or a replay), read after the run

    def percent(self, cpu_seconds: float) -> str:
        return "-" if cpu_seconds != cpu_seconds or self.seconds <= 0 else f"{100 * cpu_seconds / self.seconds:.0f}"

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else math.nan

    @property
    def cpu_per_million(self) -> float:
        return self.cpu_seconds / self.events * 1e6 if self.events else math.nan


@dataclass
class WorkloadResults:
    workload: Workload
    results: dict[str, Result] = field(default_factory=dict)
    missing: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (what it reads, why it did not run)
    comparison: Comparison | None = None  # the alerts of the runs on the same events
    checkpoint: tuple[list[Result], list[Result]] | None = None  # runs with interval 1 s, with interval 3600 s
    scale_out: Result | None = None  # e1000 with SCALE_OUT worker processes in one consumer group
    partition_sizes: list[int] = field(default_factory=list)  # messages per partition of the 1000-event topic

    @property
    def scale_out_failed(self) -> bool:
        return self.scale_out is not None and not all(share.served for share in self.scale_out.shares)

    @property
    def alerts_differ(self) -> bool:
        return self.comparison is not None and not self.comparison.same


# -- children --------------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, errors="replace") as handle:
                return "".join(handle.readlines()[-lines:])
        except OSError:
            return ""

    def failure(self, what: str) -> BenchError:
        return BenchError(f"{self.name}: {what}; log {self.log_path}:\n{self.tail()}")


class Children:
    """Every process this benchmark started, so that all of them are stopped whatever happens."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: list[Child] = []

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> Child:
        log_path = self.log_dir / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                       start_new_session=True)  # fmt: skip
        child = Child(name, process, log_path)
        self.running.append(child)
        return child

    def stop(self, child: Child) -> None:
        if child in self.running:
            self.running.remove(child)
        stop_process_group(child.process, timeout=STOP_TIMEOUT)

    def stop_all(self) -> None:
        while self.running:
            child = self.running.pop()
            try:
                stop_process_group(child.process, timeout=STOP_TIMEOUT)
            except ProcessLookupError:
                pass


def _peak_rss(pid: int) -> int:
    """VmHWM of a live process, in bytes (0 when unreadable)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Measured:
    events: int
    seconds: float
    cpu_seconds: float  # of all the contender's processes
    peak_rss: int  # the largest of its processes'
    total: int
    startup: float  # seconds from the start of the process to the first sample showing an event
    services_cpu: float  # CPU seconds of the broker and redis-server over the same interval
    other_cpu: float  # CPU seconds of every other process of the machine (this one included)
    processes: list[tuple[float, int]] = field(default_factory=list)  # per process: CPU seconds, peak RSS


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _machine_busy() -> float:
    """CPU seconds the whole machine spent busy so far (guest time is already counted in user)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0) - getattr(times, "guest", 0.0)
                 - getattr(times, "guest_nice", 0.0))  # fmt: skip


def measure(
    contender: Child | Sequence[Child],
    progress: Callable[[], int | None],
    target: int,
    poll: float,
    services: Sequence[psutil.Process] = (),
) -> Measured:
    """Sample ``progress()`` until it reaches ``target``; the rate between first and last events seen.

    ``contender``: its process, or all of them when several share the work (``progress()`` is then
    their combined count): CPU is summed over them, and kept per process in ``Measured.processes``.
    """
    children = [contender] if isinstance(contender, Child) else list(contender)
    ps = [psutil.Process(child.process.pid) for child in children]
    started = time.monotonic()
    first: tuple[float, int, list[float], float, float] | None = None
    last_change, last_count = started, 0
    rss = [0] * len(children)
    next_rss = 0.0

    def failure(what: str) -> BenchError:
        return BenchError("\n".join(str(child.failure(what)) for child in children))

    while True:
        for child in children:
            if child.process.poll() is not None:
                raise child.failure(f"exited with code {child.process.returncode} after {last_count:,} of "
                                    f"{target:,} events")  # fmt: skip
        count = progress()
        now = time.monotonic()
        try:
            cpu = [_cpu(p) for p in ps]
            services_cpu = sum(_cpu(service) for service in services)
            busy = _machine_busy()
        except psutil.Error as exc:
            raise failure(f"cannot read CPU times ({exc})") from exc
        if now >= next_rss:  # sampled peak, a fallback where VmHWM is not available
            for i, p in enumerate(ps):
                try:
                    rss[i] = max(rss[i], p.memory_info().rss)
                except psutil.Error:
                    pass
            next_rss = now + 0.2
        if count is not None and count != last_count:
            last_change, last_count = now, count
        if first is None and count:
            first = (now, count, cpu, services_cpu, busy)
        if first is not None and count is not None and count >= target:
            events, seconds = count - first[1], now - first[0]
            if events <= 0 or seconds <= 0:
                raise failure(f"all {target:,} events arrived between two samples: too few events to measure "
                              "(raise --events)")  # fmt: skip
            each = [c - c0 for c, c0 in zip(cpu, first[2], strict=True)]
            own, used = sum(each), services_cpu - first[3]
            processes = [(c, max(_peak_rss(p.pid), r)) for c, p, r in zip(each, ps, rss, strict=True)]
            got = Measured(events, seconds, own, max(r for _, r in processes), count, first[0] - started, used,
                           max(0.0, busy - first[4] - own - used), processes)  # fmt: skip
            shares = " + ".join(f"{100 * c / seconds:.0f}" for c in each)
            log(f"    {events / seconds:,.0f} events/s over {seconds:.1f} s ({events:,} events) after "
                f"{got.startup:.1f} s of start-up; CPU % contender {shares}, broker + redis "
                f"{100 * used / seconds:.0f}, rest of the machine {100 * got.other_cpu / seconds:.0f}")  # fmt: skip
            return got
        if first is None and now - started > START_TIMEOUT:
            raise failure(f"no event consumed within {START_TIMEOUT:.0f} s of its start")
        if first is not None and now - last_change > STALL_TIMEOUT:
            raise failure(f"stalled at {last_count:,} of {target:,} events for {STALL_TIMEOUT:.0f} s")
        if now - started > RUN_TIMEOUT:
            raise failure(f"not done after {RUN_TIMEOUT:.0f} s ({last_count:,} of {target:,} events)")
        time.sleep(poll)


WORKER_METRICS = {  # key: the worker's series, summed over labels
    "events": "driftstream_events_consumed_total",
    "messages": "driftstream_messages_consumed_total",
    "batch_seconds": "driftstream_batch_duration_seconds_sum",  # time in Engine.process
    "batches": "driftstream_batch_duration_seconds_count",
    "checkpoint_seconds": "driftstream_checkpoint_duration_seconds_sum",  # time writing checkpoints
    "checkpoints": "driftstream_checkpoint_duration_seconds_count",
    "partitions": "driftstream_partitions_assigned",  # events-topic partitions the worker owns now
}
# Series summed only where a label has one value: key -> (series, label="value")
LABELLED_METRICS = {
    "labels_joined": ("driftstream_labels_total", 'outcome="joined"'),  # labels applied to a quality monitor
}
METRIC_KEYS = (*WORKER_METRICS, *LABELLED_METRICS)


def _metrics(port: int, models: dict[str, float] | None = None) -> dict[str, float] | None:
    """The worker's WORKER_METRICS, or None when /metrics does not answer yet.

    ``models``, when given, is updated with the events consumed of each model.
    """
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    sums = dict.fromkeys(METRIC_KEYS, 0.0)
    for key, name in WORKER_METRICS.items():
        for match in re.finditer(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M):
            sums[key] += float(match.group(1))
    for key, (name, label) in LABELLED_METRICS.items():
        for match in re.finditer(rf"^{name}\{{[^}}]*{re.escape(label)}[^}}]*\}} (\S+)$", text, re.M):
            sums[key] += float(match.group(1))
    if models is not None:
        for match in re.finditer(rf'^{WORKER_METRICS["events"]}\{{[^}}]*model="([^"]*)"[^}}]*\}} (\S+)$', text, re.M):
            models[match.group(1)] = float(match.group(2))
    return sums


@dataclass
class Share:
    """What one worker process did (one of several in a consumer group, or the only one)."""

    events: int  # events it applied over the measured interval (first event to all)
    total: int  # events it applied from its start
    cpu_seconds: float  # over the measured interval
    peak_rss: int
    batches: int  # batches it finished within the measured interval
    drain_cpu: float  # CPU seconds over the drain (the group's first assignment to all events)
    partitions: list[tuple[float, int]]  # its driftstream_partitions_assigned: (s from the first assignment, value)
    first_event: float  # s from the group's first assignment to the first sample showing an event of it
    models: list[str]  # models it applied events of

    @property
    def served(self) -> bool:
        """It owned a partition at some point and applied events."""
        return self.total > 0 and any(value > 0 for _, value in self.partitions)


@dataclass
class Sample:
    """One sample of a worker run: per process its events applied, partitions owned, CPU seconds."""

    time: float
    events: list[float]
    partitions: list[float]
    cpu: list[float]
    services_cpu: float


# -- the bench -------------------------------------------------------------------------------------


class Bench:
    def __init__(self, broker: EmbeddedBroker, redis: EmbeddedRedis, children: Children, work_dir: Path) -> None:
        self.broker = broker
        self.redis = redis
        self.children = children
        self.work_dir = work_dir
        self.settings = Settings(kafka_bootstrap_servers=broker.bootstrap, redis_url=redis.url)
        self.admin = AdminClient(self.settings.confluent_config())
        assert broker.process is not None and redis.process is not None, "start the broker and redis first"
        self.services = [psutil.Process(broker.process.pid), psutil.Process(redis.process.pid)]
        self.run_id = uuid.uuid4().hex[:6]
        self.topics: list[str] = []
        self._runs = 0

    def group(self, name: str) -> str:
        """A consumer group (and app id) of its own for every run, so that each reads its topic from the start."""
        self._runs += 1
        return f"bench-{self.run_id}-{self._runs}-{name}"

    # -- data --------------------------------------------------------------------------------------

    def create_topic(self, name: str) -> str:
        for future in self.admin.create_topics([NewTopic(name, PARTITIONS, 1)], operation_timeout=30).values():
            future.result(30)
        self.topics.append(name)
        return name

    def delete_topics(self) -> None:
        if self.topics:
            for future in self.admin.delete_topics(self.topics, operation_timeout=30).values():
                try:
                    future.result(30)
                except Exception as exc:  # noqa: BLE001 - only frees broker memory
                    log(f"  (could not delete a topic: {exc})")
            self.topics = []
        self.redis.cli("FLUSHALL")

    def produce(self, topic: str, traffic: Traffic, events: int, batch_size: int, encoding: str = "rows",
                t0: float | None = None) -> int:  # fmt: skip
        """``events`` (all models) into ``topic``; the messages sent, every one acknowledged by the broker.

        Round-robin over the models, ``batch_size`` events of one model a message (as ``streams.simulate``
        sends them), encoded as JSON rows (one event: an object), or as the contract's columnar batch:
        ``encoding`` "columnar" (JSON) or "arrow" (header ``content-type``). Event ``i`` of a model is
        stamped ``t0 + i * EVENT_SPACING``, so that every topic holds the same events.
        """
        encode, headers = _encoder(encoding)
        t0 = time.time() - 86_400 if t0 is None else t0
        per_model = events // len(traffic.models)
        messages = len(traffic.models) * math.ceil(per_model / batch_size)
        delivered, errors = [0], []

        def on_delivery(error: Any, message: Any) -> None:
            if error is None:
                delivered[0] += 1
            else:
                errors.append(str(error))

        producer = Producer({**self.settings.confluent_config(), "linger.ms": 5,
                             "message.max.bytes": self.settings.max_message_bytes})  # fmt: skip
        started = time.monotonic()
        sent = size = 0
        for model, batch in model_batches(traffic, per_model, batch_size, t0):
            value = encode(model, batch)
            size += len(value)
            while True:
                try:
                    producer.produce(topic, key=model.encode(), value=value, headers=headers, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            sent += len(batch)
            producer.poll(0)
        left = producer.flush(120)
        if sent != events or delivered[0] != messages or left or errors:
            raise BenchError(f"producing {topic}: {sent:,} of {events:,} events sent, {delivered[0]:,} of "
                             f"{messages:,} messages acknowledged, {left} unsent; errors: {errors[:3]}")  # fmt: skip
        log(f"  produced {events:,} events in {messages:,} messages ({encoding}, {size / 2**20:,.1f} MiB) to {topic} "
            f"({time.monotonic() - started:.1f} s)")  # fmt: skip
        return messages

    def read_alerts(self, topic: str) -> list[dict[str, Any]]:
        """Every alert in ``topic``, read from the start to its end (no consumer group joined)."""
        consumer = Consumer({**self.settings.confluent_config(), "group.id": f"bench-{self.run_id}-alerts",
                             "enable.auto.commit": False, "enable.partition.eof": True})  # fmt: skip
        try:
            metadata = consumer.list_topics(topic, timeout=30).topics.get(topic)
            if metadata is None or metadata.error is not None:
                return []  # the worker never created it: it sent nothing
            partitions = list(metadata.partitions)
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
            ended: set[int] = set()
            alerts: list[dict[str, Any]] = []
            deadline = time.monotonic() + 60
            while len(ended) < len(partitions):
                if time.monotonic() > deadline:
                    raise BenchError(f"reading the alerts of {topic}: partitions {sorted(set(partitions) - ended)} "
                                     "did not reach their end within 60 s")  # fmt: skip
                for message in consumer.consume(num_messages=1000, timeout=1.0):
                    error = message.error()
                    if error is not None and error.code() == KafkaError._PARTITION_EOF:
                        ended.add(message.partition() or 0)
                    elif error is not None:
                        raise BenchError(f"reading the alerts of {topic}: {error}")
                    else:
                        alerts.append(json.loads(message.value() or b"null"))
            return alerts
        finally:
            consumer.close()

    # -- contenders --------------------------------------------------------------------------------

    @contextmanager
    def child(self, name: str, command: list[str], env: dict[str, str] | None = None) -> Iterator[Child]:
        child = self.children.start(name, command, env)
        try:
            yield child
        finally:
            self.children.stop(child)

    def agent(self, key: str, label: str, messages: str, kind: str, topic: str, target: int,
              *extra: str) -> Result:  # fmt: skip
        name = f"{key}-{topic}"
        counter = Progress.create(self.work_dir, name)
        command = [sys.executable, "-m", "bench.agents", kind, "--counter", str(counter),
                   "--bootstrap", self.broker.bootstrap, "--topic", topic,
                   "--group", self.group(name), "--data-dir", str(self.work_dir / f"{name}-data"),
                   *extra]  # fmt: skip
        log(f"  {label} ({messages}): {target:,} events")
        with self.child(f"{label} [{name}]", command) as child:
            got = measure(child, lambda: Progress.read(counter)[0], target, 0.05, self.services)
            tail = child.tail(5)
        notes = [_column_note(line) for line in tail.splitlines() if line.startswith('{"columns"')]
        return Result(key, label, messages, got.events, got.seconds, got.cpu_seconds, got.peak_rss, notes,
                      got.services_cpu, got.other_cpu)  # fmt: skip

    def worker_env(self, group: str, topic: str, workload_tag: str, port: int, data_dir: Path,
                   checkpoint_interval: float, per_message: int = 1, own_topics: bool = True
                   ) -> dict[str, str]:  # fmt: skip
        """The environment of one ``python -m streams worker`` of consumer group (and app id) ``group``.

        Default detectors; ``BATCH_MAX`` follows the README's advice for ``per_message`` events per
        message. Its alerts and retraining requests go to topics of the group's own (``{group}-alerts``).
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTSTREAM_")}
        env.update({
            "DRIFTSTREAM_KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "DRIFTSTREAM_REDIS_URL": self.redis.url,
            "DRIFTSTREAM_APP_ID": group,
            "DRIFTSTREAM_STATE_PREFIX": group,
            "DRIFTSTREAM_TOPIC_EVENTS": topic,
            "DRIFTSTREAM_TOPIC_LABELS": f"bench-{workload_tag}-labels",
            "DRIFTSTREAM_TOPIC_ALERTS": f"{group}-alerts",
            "DRIFTSTREAM_TOPIC_RETRAIN": f"{group}-retrain",
            "DRIFTSTREAM_TOPIC_METRICS": f"bench-{workload_tag}-metrics",
            "DRIFTSTREAM_TOPIC_DLQ": f"bench-{workload_tag}-dlq",
            "DRIFTSTREAM_TOPIC_PARTITIONS": str(PARTITIONS),
            "DRIFTSTREAM_WEB_HOST": "127.0.0.1",
            "DRIFTSTREAM_WEB_PORT": str(port),
            "DRIFTSTREAM_DATA_DIR": str(data_dir),
            "DRIFTSTREAM_LOG_LEVEL": "WARNING",
            "DRIFTSTREAM_CHECKPOINT_INTERVAL": f"{checkpoint_interval:g}",
            "DRIFTSTREAM_BATCH_MAX": str(batch_max_for(per_message)),
        })  # fmt: skip
        made = [f"bench-{workload_tag}-{suffix}" for suffix in ("labels", "metrics", "dlq")]
        for topic_name in [*made, f"{group}-alerts", f"{group}-retrain"] if own_topics else []:
            if topic_name not in self.topics:
                self.topics.append(topic_name)  # the worker creates them; deleted with the rest
        return env

    def worker(self, key: str, label: str, messages: str, topic: str, target: int, workload_tag: str,
               checkpoint_interval: float = 1.0, processes: int = 1, stagger: float = 0.0,
               per_message: int = 1, counted: str = "events", env: dict[str, str] | None = None,
               group: str | None = None, alerts: bool = False) -> Result:  # fmt: skip
        """``processes`` workers in one consumer group, started together; their combined rate.

        ``stagger``: worker ``i`` (from 0) starts ``i * stagger`` seconds after the first (its process
        is a shell that sleeps, then becomes the worker), to see a rebalance while the first consumes.

        Each has its own web port and data dir; they share the app id (so the group and the Redis
        state). Progress is their ``driftstream_events_consumed_total`` summed. ``Result.shares``
        says what each did and whether it owned a partition; ``Result.worker`` adds the drain: all
        events over the time from the group's first partition assignment to the last event.

        ``counted``: the METRIC_KEYS series that counts progress (and "events" in the result) instead of
        the events consumed, e.g. "labels_joined"; ``env``: variables set over ``worker_env``'s;
        ``group``: the app id (consumer group, Redis state) to run in instead of a new one; ``alerts``:
        read back the alerts the run sent (``Result.alerts``), after a checkpoint that follows its last event.
        """
        name = f"{key}-{topic}-cp{checkpoint_interval:g}" + (f"-x{processes}" if processes > 1 else "")
        group = group or self.group(name)
        ports: list[int] = []
        while len(ports) < processes:
            port = free_port()
            if port not in ports:
                ports.append(port)
        data_dirs = [Path(tempfile.mkdtemp(prefix="driftstream-bench-worker-", dir=self.work_dir)) for _ in ports]
        envs = [self.worker_env(group, topic, workload_tag, port, data_dir, checkpoint_interval, per_message)
                | (env or {}) for port, data_dir in zip(ports, data_dirs, strict=True)]  # fmt: skip
        many = f"{processes} processes in one group, " if processes > 1 else ""
        many += f"started {stagger:g} s apart, " if processes > 1 and stagger > 0 else ""
        log(f"  {label} ({messages}, {many}checkpoint every {checkpoint_interval:g} s): {target:,} events")
        # each process's metrics at the first and the last sample of the interval
        first: list[dict[str, float]] = [{} for _ in ports]
        last = [dict.fromkeys(METRIC_KEYS, 0.0) for _ in ports]
        models: list[dict[str, float]] = [{} for _ in ports]
        procs: list[psutil.Process] = []
        samples: list[Sample] = []  # from the group's first partition assignment on

        # A worker's /metrics waits while it processes a batch (one event loop): ask all of them at once.
        pool = ThreadPoolExecutor(processes)

        def progress() -> int | None:
            answered = list(pool.map(_metrics, ports, models))
            if all(sums is None for sums in answered):
                return None
            for i, sums in enumerate(answered):
                if sums is not None:  # a process that does not answer yet (or this once) keeps its last counts
                    last[i] = sums
            total = int(sum(sums[counted] for sums in last))
            if total and not first[0]:
                for start, now in zip(first, last, strict=True):
                    start.update(now)  # measure() starts its interval at this same sample
            if samples or any(sums["partitions"] for sums in last):
                try:
                    cpu, services = [_cpu(p) for p in procs], sum(_cpu(p) for p in self.services)
                except psutil.Error:  # measure() reports it at this same sample
                    return total
                samples.append(Sample(time.monotonic(), [s[counted] for s in last], [s["partitions"] for s in last],
                                      cpu, services))  # fmt: skip
            return total

        command = [sys.executable, "-m", "streams", "worker"]
        with ExitStack() as stack:
            stack.callback(pool.shutdown)
            children = []
            for i, env in enumerate(envs):
                late = ["sh", "-c", f'sleep {i * stagger:g} && exec "$0" "$@"'] if i and stagger > 0 else []
                suffix = f" #{i + 1}" if processes > 1 else ""
                children.append(stack.enter_context(self.child(f"{label} [{name}{suffix}]", late + command, env)))
            procs += [psutil.Process(child.process.pid) for child in children]  # the same pid after the shell's exec
            got = measure(children, progress, target, 0.1, self.services)
            if alerts:  # a checkpoint after the last batch: its alerts are flushed to the broker then
                done = sum(now["checkpoints"] for now in last)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    now_metrics = [_metrics(port) for port in ports]
                    if sum(m["checkpoints"] for m in now_metrics if m is not None) > done:
                        break
                    time.sleep(0.2)
                else:
                    log("    (no checkpoint within 30 s of the last event: its alerts may not all be sent)")
        sent = self.read_alerts(f"{group}-alerts") if alerts else None
        if sent is not None:
            log(f"    {len(sent)} alerts sent")
        for data_dir in data_dirs:
            shutil.rmtree(data_dir, ignore_errors=True)
        spent = {key: sum(now[key] - start[key] for start, now in zip(first, last, strict=True))
                 for key in ("batch_seconds", "checkpoint_seconds", "checkpoints")}  # fmt: skip
        spent["seconds"] = got.seconds
        spent["stagger"] = stagger
        if not samples:  # no partitions gauge ever above 0: the drain is unknown, and the run reported as failed
            samples.append(Sample(time.monotonic(), [0.0] * processes, [0.0] * processes, [0.0] * processes, 0.0))
        begin, end = samples[0], samples[-1]
        spent.update(drain_seconds=end.time - begin.time, drain_events=sum(end.events) - sum(begin.events),
                     drain_services_cpu=end.services_cpu - begin.services_cpu)  # fmt: skip

        def each(key: str, fmt: str) -> str:
            return " / ".join(format((now[key] - start[key]) / got.seconds, fmt)
                              for start, now in zip(first, last, strict=True))  # fmt: skip

        notes = [
            f"{int(sum(now['messages'] for now in last)):,} messages",
            f"in Engine.process {each('batch_seconds', '.0%')} of the interval",
            f"in {spent['checkpoints']:.0f} checkpoints {each('checkpoint_seconds', '.1%')}",
        ]
        shares = []
        for i, (cpu, rss) in enumerate(got.processes):
            owned: list[tuple[float, int]] = []
            for sample in samples:
                if not owned or owned[-1][1] != int(sample.partitions[i]):
                    owned.append((sample.time - begin.time, int(sample.partitions[i])))
            shares.append(Share(
                events=int(last[i][counted] - first[i][counted]), total=int(last[i][counted]), cpu_seconds=cpu,
                peak_rss=rss, batches=int(last[i]["batches"] - first[i]["batches"]),
                drain_cpu=end.cpu[i] - begin.cpu[i], partitions=owned,
                first_event=next((s.time - begin.time for s in samples if s.events[i]), math.nan),
                models=sorted(m for m, n in models[i].items() if n),
            ))  # fmt: skip
        if processes > 1:
            applied = int(sum(now[counted] for now in last))
            if applied > target:
                notes.append(f"{applied - target:,} events applied twice (by the old and the new owner)")
            idle = [i + 1 for i, share in enumerate(shares) if not share.served]
            spent["idle_processes"] = len(idle)
            if idle:
                notes.insert(0, f"**FAILED: worker(s) #{', #'.join(map(str, idle))} got no partition**")
                log(f"  !!! SCALE-OUT FAILED: worker(s) #{', #'.join(map(str, idle))} of {processes} owned no "
                    f"partition / applied no event: one process did all the work")  # fmt: skip
            log(f"    drain (first assignment to all events): {_int(_drain_rate(spent))} events/s over "
                f"{spent['drain_seconds']:.1f} s")  # fmt: skip
            for i, share in enumerate(shares):
                log(f"    worker #{i + 1}: {share.total:,} events of {', '.join(share.models) or 'no model'}; "
                    f"partitions {_partition_story(share.partitions)}; first event at +{share.first_event:.1f} s; "
                    f"{share.batches} batches in the interval; CPU % {100 * share.cpu_seconds / got.seconds:.0f} "
                    f"(drain {_percent(share.drain_cpu, spent['drain_seconds'])})")  # fmt: skip
        return Result(key, label, messages, got.events, got.seconds, got.cpu_seconds, got.peak_rss, notes,
                      got.services_cpu, got.other_cpu, spent, shares, sent)  # fmt: skip

    def partition_sizes(self, topic: str) -> list[int]:
        """Messages in each partition of ``topic`` (high minus low watermark)."""
        consumer = Consumer({**self.settings.confluent_config(), "group.id": f"bench-{self.run_id}-watermarks"})
        try:
            sizes = []
            for partition in range(PARTITIONS):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
                sizes.append(high - low)
            return sizes
        finally:
            consumer.close()

    def replay(self, key: str, messages: str, topic: str, target: int, workload_tag: str,
               per_message: int) -> Result:  # fmt: skip
        """``streams.replay.replay`` over ``topic`` with the worker's settings, state in Redis (``bench.replayer``)."""
        label = CONTENDERS[key]
        name = f"{key}-{topic}"
        group = self.group(name)
        counter = Progress.create(self.work_dir, name)
        out = self.work_dir / f"{name}.json"
        env = self.worker_env(group, topic, workload_tag, free_port(), self.work_dir, 1.0, per_message,
                              own_topics=False)  # fmt: skip
        command = [sys.executable, "-m", "bench.replayer", "--counter", str(counter), "--out", str(out),
                   "--state-prefix", f"{group}-replay"]  # fmt: skip
        log(f"  {label} ({messages}): {target:,} events")
        with self.child(f"{label} [{name}]", command, env) as child:
            got = measure(child, lambda: Progress.read(counter)[0], target, 0.05, self.services)
            deadline = time.monotonic() + 60
            while not out.exists():
                if child.process.poll() is not None or time.monotonic() > deadline:
                    raise child.failure("wrote no summary after its last event")
                time.sleep(0.1)
        summary = json.loads(out.read_text())
        own = summary["events"] / summary["elapsed"] if summary["elapsed"] > 0 else math.nan
        notes = [f"its own summary: {summary['events']:,} events, {summary['messages']:,} messages in "
                 f"{summary['elapsed']:.1f} s ({_int(own)} events/s, start and end included)",
                 f"{summary['rejected']} rejected, {len(summary['alerts'])} alerts"]  # fmt: skip
        return Result(key, label, messages, got.events, got.seconds, got.cpu_seconds, got.peak_rss, notes,
                      got.services_cpu, got.other_cpu, alerts=summary["alerts"])  # fmt: skip

    def batch_job(self, label: str, name: str, command: list[str], env: dict[str, str] | None = None
                  ) -> tuple[dict[str, Any], int]:  # fmt: skip
        """Run a contender that times itself and prints one JSON line with ``rows``; that line and its peak RSS."""
        with self.child(f"{label} [{name}]", command, env) as child:
            deadline = time.monotonic() + RUN_TIMEOUT
            rss = 0
            while child.process.poll() is None:
                rss = max(rss, _peak_rss(child.process.pid))
                if time.monotonic() > deadline:
                    raise child.failure(f"not done after {RUN_TIMEOUT:.0f} s")
                time.sleep(0.2)
            if child.process.returncode != 0:
                raise child.failure(f"exited with code {child.process.returncode}")
            lines = [line for line in child.tail(200).splitlines() if line.startswith('{"rows"')]
            if not lines:
                raise child.failure("printed no result")
            report = json.loads(lines[-1])
        rss = max(rss, int(report.get("max_rss", 0)))
        log(f"    {report['rows'] / report['seconds']:,.0f} events/s over {report['seconds']:.1f} s; "
            f"{100 * report['cpu_seconds'] / report['seconds']:.0f}% CPU")  # fmt: skip
        return report, rss

    def evidently(self, key: str, workload: Workload, rows: int, window: int) -> Result:
        label = CONTENDERS[key]
        counter = Progress.create(self.work_dir, f"{key}-{workload.features}")
        command = [sys.executable, "-m", "bench.agents", "evidently", "--counter", str(counter),
                   "--models", ",".join(workload.models), "--numeric", str(workload.numeric),
                   "--categorical", str(workload.categorical), "--seed", str(SEED), "--reference", str(REFERENCE),
                   "--rows", str(rows), "--window", str(window)]  # fmt: skip
        for drift in workload.traffic.drifts:  # the same rows as the worker's, drift included
            command += ["--drift", f"{drift.model}/{drift.feature}:{drift.kind}:{drift.start}:{drift.magnitude}"]
        what = "one report" if not window else f"{rows // window} reports of {window} rows"
        log(f"  {label}: {REFERENCE:,} reference rows, {rows:,} current rows ({what})")
        report, rss = self.batch_job(label, f"{key}-{workload.features}", command)
        notes = [f"{report['reports']} report(s), method psi, {report['drifted_columns']} drifted column verdicts"]
        return Result(key, label, f"{rows:,} rows in memory", report["rows"], report["seconds"],
                      report["cpu_seconds"], rss, notes)  # fmt: skip

    def peer(self, key: str, kind: str, python: str, workload: Workload, rows_file: Path) -> Result:
        """whylogs or NannyML (``bench.peers``), run by the peers venv's ``python``."""
        label = CONTENDERS[key]
        per_model = REFERENCE + workload.peer_rows
        command = [python, "-m", "bench.peers", kind, "--rows", str(rows_file), "--reference", str(REFERENCE)]
        log(f"  {label}: {len(workload.models)} models x {per_model:,} rows")
        report, rss = self.batch_job(label, f"{key}-{workload.features}", command)
        judged = "rows profiled" if kind == "whylogs" else f"rows judged after the {REFERENCE:,}-row reference"
        messages = f"{report['rows']:,} {judged}, in memory"
        notes = [f"{report['columns']} columns; {report['note']}"]
        return Result(key, label, messages, report["rows"], report["seconds"], report["cpu_seconds"], rss, notes)

    def write_rows(self, workload: Workload, t0: float) -> Path:
        """The peers' rows: every model's first REFERENCE + ``peer_rows`` events (the topics' events), as Parquet."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        per_model = REFERENCE + workload.peer_rows
        columns: dict[str, list[Any]] = {"model": []}
        for model, events in model_batches(workload.traffic, per_model, per_model, t0):
            columns["model"] += [model] * len(events)
            for name in events[0]["features"]:
                columns.setdefault(name, []).extend(event["features"][name] for event in events)
        path = self.work_dir / f"rows-{workload.features}.parquet"
        pq.write_table(pa.table(columns), path)
        return path


def _partition_story(partitions: list[tuple[float, int]]) -> str:
    """``4, 0 at +1.2 s, 2 at +1.9 s``: a worker's partitions gauge over the interval."""
    steps = [f"{value}" if not i else f"{value} at +{t:.1f} s" for i, (t, value) in enumerate(partitions)]
    return ", ".join(steps) or "-"


def _column_note(line: str) -> str:
    try:
        return f"columns: {json.loads(line)['columns']}"
    except (ValueError, KeyError):
        return line


def model_batches(traffic: Traffic, per_model: int, batch_size: int, t0: float
                  ) -> Iterator[tuple[str, list[dict[str, Any]]]]:  # fmt: skip
    """(model, events) in sending order, as ``streams.simulate.batches``, with a clock per model."""

    def clock() -> Callable[[], float]:
        ticks = itertools.count()
        return lambda: t0 + next(ticks) * EVENT_SPACING

    streams = [model_events(traffic, i, clock()) for i in range(len(traffic.models))]
    for first in range(0, per_model, batch_size):
        for model, stream in zip(traffic.models, streams, strict=True):
            yield model, list(itertools.islice(stream, min(batch_size, per_model - first)))


Headers = list[tuple[str, str | bytes | None]]


def _encoder(encoding: str) -> tuple[Callable[[str, list[dict[str, Any]]], bytes], Headers | None]:
    """The message value of a model's events, and the headers of every message."""
    if encoding == "rows":
        return (lambda model, events: orjson.dumps(events[0] if len(events) == 1 else events)), None
    from streams.producer import ARROW_CONTENT_TYPE, columnar_arrow, columnar_json

    def version(events: list[dict[str, Any]]) -> str | None:
        versions = {event.get("model_version") for event in events}
        if len(versions) != 1:
            raise BenchError(f"a columnar batch holds one model version, these events have "
                             f"{sorted(map(str, versions))}")  # fmt: skip
        return versions.pop()

    if encoding == "columnar":
        return (lambda model, events: columnar_json(model, version(events), events)), None

    def arrow(model: str, events: list[dict[str, Any]]) -> bytes:
        value = columnar_arrow(model, version(events), events)
        if value is None:
            raise BenchError(f"columnar_arrow cannot type a column of {model}'s events (mixed kinds)")
        return value

    return arrow, [("content-type", ARROW_CONTENT_TYPE.encode())]


def evidently_available() -> str | None:
    """None when Evidently runs here, else how to install it."""
    check = subprocess.run([sys.executable, "-c", "import evidently.presets, pandas"], capture_output=True,
                           cwd=REPO, timeout=120, check=False)  # fmt: skip
    return None if check.returncode == 0 else EVIDENTLY_INSTALL


@dataclass
class Peers:
    """The interpreter that runs bench.peers, and per kind None (it runs) or why it does not."""

    python: str
    missing: dict[str, str | None]
    versions: str  # of the peer packages, for the report


def peers_available(python: str) -> Peers:
    from bench.peers import CHECKS

    if not Path(python).exists() and not shutil.which(python):
        return Peers(python, dict.fromkeys(CHECKS, f"{python} not found: {PEERS_INSTALL}"), "")
    missing: dict[str, str | None] = {}
    for kind, statement in CHECKS.items():
        check = subprocess.run([python, "-c", statement], capture_output=True, text=True, cwd=REPO, timeout=300,
                               check=False, env=dict(os.environ, WHYLOGS_NO_ANALYTICS="1",
                                                     NML_DISABLE_USAGE_LOGGING="1"))  # fmt: skip
        last = (check.stderr.strip().splitlines() or ["?"])[-1]
        missing[kind] = None if check.returncode == 0 else f"{last} with {python}: {PEERS_INSTALL}"
    script = (
        "import importlib.metadata as m\nfor p in ('whylogs','nannyml','numpy','pandas'):\n"
        "    try: print(p, m.version(p))\n    except m.PackageNotFoundError: print(p, 'not installed')"
    )
    versions = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    return Peers(python, missing, ", ".join(versions.stdout.split("\n")).strip(", "))


# -- the runs --------------------------------------------------------------------------------------


COMPARED = ("d", "e100", "e1000", "ecol", "earrow", "r1000", "rarrow")  # runs whose alerts must be the same


def run_workload(bench: Bench, workload: Workload, evidently: str | None, peers: Peers, checkpoint: bool,
                 scale_out: bool = False, stagger: float = 0.0, issue5: bool = True) -> WorkloadResults:  # fmt: skip
    """``evidently``: None, or why Evidently does not run; ``issue5``: the extra row with issue 5's detectors."""
    out = WorkloadResults(workload)
    tag = f"{bench.run_id}-{workload.features}f"
    log(f"{workload.title()}:")
    traffic = workload.traffic
    t0 = float(int(time.time()) - 86_400)  # the events' clock: a day ago, the same in every topic
    topics = {name: bench.create_topic(f"bench-{tag}-{name}") for name in MESSAGES}
    bench.produce(topics["single"], traffic, workload.single_events, 1, t0=t0)
    bench.produce(topics["b100"], traffic, workload.batch_events, 100, t0=t0)
    bench.produce(topics["b1000"], traffic, workload.batch_events, 1000, t0=t0)
    columnar: dict[str, str] = {}  # topic name -> why it could not be produced
    for name, encoding in (("col", "columnar"), ("arrow", "arrow")):
        try:
            bench.produce(topics[name], traffic, workload.batch_events, 1000, encoding, t0)
        except ImportError as exc:  # streams.producer without the encoders
            columnar[name] = f"not available: {exc}"
            log(f"  {name}: {columnar[name]}")
    r = out.results
    r["a"] = bench.agent("a", CONTENDERS["a"], MESSAGES["single"], "faust-empty", topics["single"],
                         workload.single_events)  # fmt: skip
    r["b"] = bench.agent("b", CONTENDERS["b"], MESSAGES["b1000"], "decode", topics["b1000"], workload.batch_events)
    r["c"] = bench.agent("c", CONTENDERS["c"], MESSAGES["single"], "naive", topics["single"], workload.naive_events)
    r["d"] = bench.worker("d", CONTENDERS["d"], MESSAGES["single"], topics["single"], workload.single_events, tag,
                          alerts=True)  # fmt: skip
    r["e100"] = bench.worker("e100", CONTENDERS["e100"], MESSAGES["b100"], topics["b100"], workload.batch_events,
                             tag, per_message=100, alerts=True)  # fmt: skip
    r["e1000"] = bench.worker("e1000", CONTENDERS["e1000"], MESSAGES["b1000"], topics["b1000"], workload.batch_events,
                              tag, per_message=1000, alerts=True)  # fmt: skip
    for key, name in (("ecol", "col"), ("earrow", "arrow")):
        if name in columnar:
            out.missing[key] = (MESSAGES[name], columnar[name])
        else:
            r[key] = bench.worker(key, CONTENDERS[key], MESSAGES[name], topics[name], workload.batch_events, tag,
                                  per_message=1000, alerts=True)  # fmt: skip
    if issue5:
        r["e1000-i5"] = bench.worker("e1000-i5", CONTENDERS["e1000-i5"], MESSAGES["b1000"], topics["b1000"],
                                     workload.batch_events, tag, per_message=1000, env=ISSUE5_DETECTORS)  # fmt: skip
    if scale_out:  # right after the 1-worker run it is compared with
        out.partition_sizes = bench.partition_sizes(topics["b1000"])
        log(f"  messages per partition of {topics['b1000']}: {' / '.join(map(str, out.partition_sizes))}")
        if 0 in out.partition_sizes:
            log("  warning: a partition holds no message, so the workers cannot share the data evenly")
        out.scale_out = bench.worker("e1000x2", CONTENDERS["e1000x2"], MESSAGES["b1000"], topics["b1000"],
                                     workload.batch_events, tag, processes=SCALE_OUT, stagger=stagger,
                                     per_message=1000)  # fmt: skip
    if checkpoint:  # alternating, so that a drift of the machine's speed hits both alike
        every, hourly = [r["e1000"]], list[Result]()
        for interval in (3600, 1, 3600):
            run = bench.worker("e1000", CONTENDERS["e1000"], MESSAGES["b1000"], topics["b1000"], workload.batch_events,
                               tag, checkpoint_interval=interval, per_message=1000)  # fmt: skip
            (every if interval == 1 else hourly).append(run)
        out.checkpoint = (every, hourly)
    for key, name in (("r1000", "b1000"), ("rarrow", "arrow")):
        if name in columnar:
            out.missing[key] = (MESSAGES[name], columnar[name])
            continue
        try:
            import streams.replay  # noqa: F401 - only whether it is there
        except ImportError as exc:
            out.missing[key] = (MESSAGES[name], f"not available: {exc}")
            continue
        r[key] = bench.replay(key, MESSAGES[name], topics[name], workload.batch_events, tag, 1000)
    if evidently is None:
        r["f"] = bench.evidently("f", workload, workload.evidently_rows, 0)
        r["f-win"] = bench.evidently("f-win", workload, workload.evidently_windows * WINDOW, WINDOW)
    else:
        for key in ("f", "f-win"):
            out.missing[key] = ("rows in memory", f"not installed: {evidently}")
    rows_file = bench.write_rows(workload, t0) if not all(peers.missing.values()) else None
    for key, kind in (("g", "whylogs"), ("h", "nannyml")):
        reason = peers.missing.get(kind)
        if reason is not None or rows_file is None:
            out.missing[key] = ("rows in memory", f"not installed: {reason}")
        else:
            r[key] = bench.peer(key, kind, peers.python, workload, rows_file)
    for key, (_, reason) in out.missing.items():
        log(f"  {CONTENDERS[key]}: {reason}")
    out.comparison = compare_alerts(r, workload)
    if out.comparison is not None:
        log("  " + out.comparison.verdict())
    bench.delete_topics()
    return out


def run_memory(bench: Bench, models: int, features: int, per_model: int) -> Result:
    names = tuple(f"m{i}" for i in range(models))
    workload = Workload(features=features, batch_events=models * per_model, single_events=0, naive_events=0,
                        evidently_rows=0, evidently_windows=0, models=names, drifts=False)  # fmt: skip
    tag = f"{bench.run_id}-mem"
    log(f"memory: {models} models x {features} features, {per_model:,} events per model:")
    topic = bench.create_topic(f"bench-{tag}-b1000")
    bench.produce(topic, workload.traffic, workload.batch_events, 1000)
    result = bench.worker("mem", f"driftstream worker, {models} models x {features} features", "1000-event envelopes",
                          topic, workload.batch_events, tag, per_message=1000)  # fmt: skip
    bench.delete_topics()
    return result


# -- report ----------------------------------------------------------------------------------------


AlertKey = tuple[Any, ...]


def alert_key(alert: dict[str, Any]) -> AlertKey:
    """What must not depend on how the events were batched (the alert id names the topic, so it is left out)."""
    window = alert.get("window") or {}
    return (alert.get("model"), alert.get("model_version"), json.dumps(alert.get("segment"), sort_keys=True),
            alert.get("type"), alert.get("feature"), alert.get("detector"), alert.get("status"),
            alert.get("severity"), window.get("event_index"), window.get("start"), window.get("end"),
            tuple(alert.get("detectors") or ()))  # fmt: skip


@dataclass
class Comparison:
    """The alerts of runs over the same events, over the first ``prefix`` events of each model."""

    prefix: int
    reference: str  # the run the others are compared with (single events)
    alerts: dict[str, list[AlertKey]]  # run -> its alerts within the prefix, sorted
    total: dict[str, int]  # run -> all its alerts
    statistic: dict[str, float]  # run -> largest relative difference of a matching alert's statistic
    examples: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return all(keys == self.alerts[self.reference] for keys in self.alerts.values())

    def verdict(self) -> str:
        n = len(self.alerts[self.reference])
        if self.same:
            return (f"batching changes no result: the same {n} alerts from {', '.join(self.alerts)} over the first "
                    f"{self.prefix:,} events of each model")  # fmt: skip
        differ = [key for key, keys in self.alerts.items() if keys != self.alerts[self.reference]]
        return f"BATCHING CHANGED THE ALERTS: {', '.join(differ)} differ from {self.reference} ({n} alerts)"


def compare_alerts(results: dict[str, Result], workload: Workload) -> Comparison | None:
    runs = {key: results[key] for key in COMPARED if key in results and results[key].alerts is not None}
    if len(runs) < 2:
        return None
    prefix = workload.single_events // len(workload.models)  # the single-event topic is the shortest
    reference = "d" if "d" in runs else next(iter(runs))
    keyed: dict[str, list[AlertKey]] = {}
    stats: dict[str, dict[AlertKey, float]] = {}
    for key, result in runs.items():
        inside = [a for a in result.alerts or () if (a.get("window") or {}).get("event_index", prefix) < prefix]
        keyed[key] = sorted((alert_key(a) for a in inside), key=repr)
        stats[key] = {alert_key(a): float(a.get("statistic") or 0.0) for a in inside}
    largest: dict[str, float] = {}
    for key in runs:
        shared = stats[key].keys() & stats[reference].keys()
        largest[key] = max((abs(stats[key][k] - stats[reference][k]) / max(abs(stats[reference][k]), 1e-12)
                            for k in shared), default=0.0)  # fmt: skip
    comparison = Comparison(prefix, reference, keyed, {k: len(r.alerts or ()) for k, r in runs.items()}, largest)
    base = collections.Counter(keyed[reference])
    for key, keys in keyed.items():
        mine = collections.Counter(keys)
        for what, extra in (("only in " + key, mine - base), ("missing from " + key, base - mine)):
            comparison.examples += [f"{what}: {_shown(k)}" for k in list(extra)[:3]]
    return comparison


def _shown(key: AlertKey) -> str:
    model, version, segment, kind, feature, detector, status, severity, index, _, _, detectors = key
    where = f"{model} v{version}" + ("" if segment == "null" else f" {segment}")
    also = f" ({'+'.join(detectors)})" if len(detectors) > 1 else ""
    return f"{where} {kind} {feature or '(model)'} {detector}{also} {status} {severity} at event {index:,}"


def comparison_table(comparison: Comparison, results: dict[str, Result]) -> list[str]:
    reference = comparison.alerts[comparison.reference]
    lines = [
        f"Batching changes no result? Alerts over the first {comparison.prefix:,} events of each model (what every "
        f"topic holds; the traffic drifts from event {REFERENCE:,} on), compared on model, version, segment, type, "
        "feature, detector(s), status, severity, event index and window times:",
        "",
        "| run | messages | alerts compared | all its alerts | same as single events | largest relative "
        "difference of a statistic |",
        "|---|---|---:|---:|---|---:|",
    ]
    for key, keys in comparison.alerts.items():
        same = "(reference)" if key == comparison.reference else ("yes" if keys == reference else "**no**")
        lines.append(f"| {results[key].label} | {results[key].messages} | {len(keys)} | {comparison.total[key]} | "
                     f"{same} | {comparison.statistic[key]:.1e} |")  # fmt: skip
    shown = [_shown(k) for k in reference[:12]] + ([f"{len(reference) - 12} more"] if len(reference) > 12 else [])
    lines += [
        "",
        comparison.verdict()
        + (": " + "; ".join(comparison.examples[:10]) if comparison.examples else "")
        + ". The alerts of single events: "
        + ("; ".join(shown) or "none")
        + ".",
    ]
    return lines


def _int(value: float) -> str:
    return "-" if value != value else f"{value:,.0f}"


def _mb(value: int) -> str:
    return f"{value / 2**20:,.0f}"


def _status(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "**not met**")


def result_table(results: dict[str, Result], missing: dict[str, tuple[str, str]] | None = None) -> list[str]:
    """Every contender: the measured ones, and those that did not run with the reason."""
    lines = [
        "| contender | messages | events/s per process | CPU s per 1M events | CPU %: contender / broker + redis / "
        "rest | peak RSS MB | events measured | notes |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results.values():
        cpu = " / ".join(r.percent(c) for c in (r.cpu_seconds, r.services_cpu, r.other_cpu))
        lines.append(f"| {r.label} | {r.messages} | {_int(r.rate)} | {r.cpu_per_million:,.1f} | {cpu} | "
                     f"{_mb(r.peak_rss)} | {r.events:,} | {'; '.join(r.notes)} |")  # fmt: skip
    for key, (messages, reason) in (missing or {}).items():
        lines.append(f"| {CONTENDERS[key]} | {messages} | - | - | - | - | - | **{reason}** |")
    return lines


def ratio_table(results: dict[str, Result], judged: bool) -> list[str]:
    """The issues' ratios; ``judged``: the workload the targets are set on (20 features)."""
    rate = {key: r.rate for key, r in results.items()}
    rows: list[tuple[str, str, str, bool | None]] = []

    def speed(name: str, key: str, target: float) -> None:
        value = rate.get(key, math.nan)
        rows.append((name, f"{_int(value)} events/s", f">= {target:,.0f} events/s",
                     value >= target if judged and key in rate else None))  # fmt: skip

    def ratio(name: str, top: str, bottom: str, target: float | None, what: str, ahead: bool = False) -> None:
        if top not in rate or bottom not in rate:
            absent = " and ".join(CONTENDERS[k].split(". ", 1)[-1] for k in (top, bottom) if k not in rate)
            rows.append((f"{name} ({what})", f"- ({absent} did not run)",
                         "(information)" if target is None else (f"> {target:g}" if ahead else f">= {target:g}"),
                         None))  # fmt: skip
            return
        value = rate[top] / rate[bottom]
        if target is None:
            rows.append((f"{name} ({what})", f"{value:,.2f}", "(information)", None))
            return
        ok = (value > target if ahead else value >= target) if judged else None
        rows.append((f"{name} ({what})", f"{value:,.2f}", f"> {target:g} (ahead)" if ahead else f">= {target:g}", ok))

    speed("arrow (1000-event Arrow batches)", "earrow", TARGETS["arrow"])
    ratio("arrow/f", "earrow", "f", TARGETS["arrow/f"], "worker on Arrow / Evidently, one report")
    speed("col (1000-event columnar JSON)", "ecol", TARGETS["col"])
    speed("e (1000-event JSON row envelopes)", "e1000", TARGETS["e"])
    ratio("d/a", "d", "a", TARGETS["d/a"], "worker, single events / empty Faust agent")
    ratio("arrow/g", "earrow", "g", TARGETS["arrow/peer"], "worker on Arrow / whylogs profile", ahead=True)
    ratio("arrow/h", "earrow", "h", TARGETS["arrow/peer"], "worker on Arrow / NannyML univariate drift", ahead=True)
    ratio("e/g", "e1000", "g", None, "worker on JSON rows / whylogs profile")
    ratio("e/h", "e1000", "h", None, "worker on JSON rows / NannyML univariate drift")
    ratio("e/b", "e1000", "b", TARGETS["e/b"], "worker / decode-only loop, issue 5")
    ratio("e/c", "e1000", "c", TARGETS["e/c"], "worker / naive Faust agent, issue 5")
    ratio("e/f", "e1000", "f", TARGETS["e/f"], "worker on JSON rows / Evidently, one report, issue 5")
    ratio("e/f, windows", "e1000", "f-win", None, "worker / Evidently, a report per 1000 rows")
    ratio("r/e", "r1000", "e1000", None, "replay / worker, 1000-event JSON rows")
    ratio("r arrow/earrow", "rarrow", "earrow", None, "replay / worker, Arrow")
    ratio("e100/e1000", "e100", "e1000", None, "100-event / 1000-event envelopes")
    ratio("default/issue 5", "e1000", "e1000-i5", None, "default detectors / issue 5's set, 1000-event envelopes")
    lines = ["| ratio | value | target | status |", "|---|---:|---|---|"]
    lines += [f"| {name} | {value} | {target} | {_status(ok)} |" for name, value, target, ok in rows]
    return lines


def checkpoint_table(every: list[Result], hourly: list[Result]) -> list[str]:
    def pooled(runs: list[Result]) -> tuple[float, float]:
        events = sum(r.events for r in runs)
        return events / sum(r.seconds for r in runs), sum(r.cpu_seconds for r in runs) / events * 1e6

    def writing(runs: list[Result]) -> str:
        seconds = sum(r.worker.get("seconds", 0.0) for r in runs)
        spent = sum(r.worker.get("checkpoint_seconds", 0.0) for r in runs)
        count = sum(r.worker.get("checkpoints", 0.0) for r in runs)
        return f"{spent / seconds:.1%} ({count:.0f} checkpoints)" if seconds else "-"

    (rate_1, cpu_1), (rate_h, cpu_h) = pooled(every), pooled(hourly)
    loss = 1 - rate_1 / rate_h
    runs = " / ".join
    return [
        "Checkpoint cost (1000-event envelopes; runs alternate 1 s, 3600 s, 1 s, 3600 s; pooled = all events "
        "over all measured seconds; writing = time in `Engine.checkpoint` (snapshots encoded, one Redis "
        "pipeline) per the worker's `driftstream_checkpoint_duration_seconds`, share of the measured time):",
        "",
        "| checkpoint interval | events/s, each run | events/s, pooled | CPU s per 1M events, pooled | writing |",
        "|---|---|---:|---:|---:|",
        f"| 1 s (default) | {runs(_int(r.rate) for r in every)} | {_int(rate_1)} | {cpu_1:,.1f} | {writing(every)} |",
        f"| 3600 s | {runs(_int(r.rate) for r in hourly)} | {_int(rate_h)} | {cpu_h:,.1f} | {writing(hourly)} |",
        "",
        f"Throughput lost to checkpointing every second: {loss:.1%} (target <= {TARGETS['checkpoint_loss']:.0%}): "
        f"{_status(loss <= TARGETS['checkpoint_loss'])}. Compare it with the spread between runs of one interval "
        "(a difference within it is noise) and with the time spent writing checkpoints, which is measured "
        "directly (the flush, acks and offset commit that follow a checkpoint are not in it).",
    ]


def _drain_rate(worker: dict[str, float]) -> float:
    seconds = worker.get("drain_seconds", 0.0)
    return worker["drain_events"] / seconds if seconds > 0 else math.nan


def _percent(cpu_seconds: float, seconds: float) -> str:
    return "-" if cpu_seconds != cpu_seconds or seconds <= 0 else f"{100 * cpu_seconds / seconds:.0f}"


def scale_out_table(one: Result, many: Result, sizes: list[int]) -> list[str]:
    """1 worker (e1000 of the same run) against SCALE_OUT workers in one consumer group."""
    n = len(many.shares)
    rows = []
    for name, r in (("1 worker (e above)", one), (f"{n} workers, one group", many)):
        drain = r.worker.get("drain_seconds", math.nan)
        cpu = " / ".join(f"{r.percent(share.cpu_seconds)} ({_percent(share.drain_cpu, drain)})" for share in r.shares)
        rss = " / ".join(_mb(share.peak_rss) for share in r.shares)
        owned = "; ".join(
            (f"#{i + 1}: " if n > 1 and r is many else "") + f"{_partition_story(share.partitions)} "
            f"({share.total:,} events of {', '.join(share.models) or '**no model**'}; {share.batches} batches measured)"
            for i, share in enumerate(r.shares)
        )  # fmt: skip
        services = (f"{r.percent(r.services_cpu)} ({_percent(r.worker.get('drain_services_cpu', math.nan), drain)}) "
                    f"/ {r.percent(r.other_cpu)}")  # fmt: skip
        rows.append(f"| {name} | {_int(r.rate)} | {r.rate / one.rate:.2f} | {_int(_drain_rate(r.worker))} | "
                    f"{_drain_rate(r.worker) / _drain_rate(one.worker):.2f} | {cpu} | {services} | {rss} | "
                    f"{owned} |")  # fmt: skip
    failed = [i + 1 for i, share in enumerate(many.shares) if not share.served]
    if failed:
        verdict = (f"**FAILED: worker(s) #{', #'.join(map(str, failed))} owned no partition and applied no event: "
                   "one process did all the work, so the row above is not a scale-out figure.**")  # fmt: skip
    else:
        verdict = f"Every one of the {n} workers owned partitions and applied events (last column)."
    if 0 in sizes:
        verdict += " **A partition holds no message: the workers could not share the data evenly.**"
    if any(share.batches < MIN_BATCHES for r in (one, many) for share in r.shares):
        verdict += (f" A worker finished fewer than {MIN_BATCHES} batches inside the first-event interval: that "
                    "figure rests on a few counter steps (see above); the drain is the steadier one.")  # fmt: skip
    cores = os.cpu_count() or 1
    ideal = ": the ideal is below 2x" if cores <= n else ""
    stagger = many.worker.get("stagger", 0.0)
    started = f"started {stagger:g} s apart (`--scale-out-stagger`)" if stagger else "started together"
    return [
        f"Scale-out (the 1000-event envelope topic: {PARTITIONS} partitions of {' / '.join(f'{m:,}' for m in sizes)} "
        f"messages, one model each). {n} `streams worker` processes with one app id (so one consumer group and one "
        f"Redis state), each with its own web port and data dir, {started}. **This machine has "
        f"{cores} cores, shared by the workers with the broker, Redis and this benchmark's sampling{ideal}.**",
        "",
        "Two measures, both from the workers' `driftstream_events_consumed_total` summed over the processes. "
        "*First event*: as for e, from the first sample showing an event to the first showing all of them. A "
        "worker's counter moves once per batch (up to "
        "`BATCH_MAX` messages), so each worker finishes only a few batches; with several workers the count at the "
        "interval's start misses the other workers' first batches, which then land inside the interval although "
        "mostly processed before it. *Drain*: every event over the time from the first sample where a worker of the "
        "group owns a partition to the last event, the first batches and any rebalance included, computed the "
        "same way for 1 and for several workers. The data is in the topic before the workers start: the first one "
        "to join may consume alone until the second joins and the group rebalances (partitions column: each "
        "worker's `driftstream_partitions_assigned`, seconds from the group's first assignment). CPU: over the "
        "first-event interval, the drain's in brackets; rest = the rest of the machine (a high value means "
        "something else ran then, and that row is suspect).",
        "",
        "| run | events/s, first event | scale | events/s, drain | scale | CPU % per process (drain) | CPU % broker "
        "+ redis (drain) / rest | peak RSS MB per process | partitions owned (events applied), per process |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
        verdict,
    ]


def environment() -> list[str]:
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    try:
        revision = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                                  timeout=10, cwd=REPO, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        revision = "unknown"
    names = ("faust-streaming", "aiokafka", "confluent-kafka", "river", "numpy", "orjson", "pyarrow", "evidently",
             "pandas")  # fmt: skip
    packages = ", ".join(f"{p} {version(p)}" for p in names)
    return [
        f"git {revision}; {os.cpu_count()} cores ({model}), {psutil.virtual_memory().total / 2**30:.0f} GiB; "
        f"Python {platform.python_version()}; {packages}.",
    ]


def python_speed() -> float:
    """Seconds for a fixed pure-Python loop: how fast this machine runs Python right now (noisy neighbours)."""
    started = time.perf_counter()
    total = 0
    for i in range(5_000_000):
        total += i
    return time.perf_counter() - started


def detectors_in_force() -> str:
    """The worker's default detectors, as the settings say (not a copy of them)."""
    defaults = Settings.model_fields
    names = {field: ", ".join(defaults[field].default) for field in ("numeric_tests", "categorical_tests",
                                                                     "change_detectors")}  # fmt: skip
    return (f"driftstream: its default detectors, every setting at its default but `BATCH_MAX`: windowed "
            f"{names['numeric_tests']} on every numeric feature and the prediction, {names['categorical_tests']} on "
            f"every categorical one ({Settings.model_fields['window_size'].default}-row tumbling windows, "
            f"{Settings.model_fields['reference_size'].default}-row reference), {names['change_detectors']} on the "
            "numeric ones, and the model-level checks (schema, multivariate, dataset drift); checkpoint to Redis "
            "every second.")  # fmt: skip


def report(args: argparse.Namespace, workloads: list[WorkloadResults], memory: Result | None, elapsed: float,
           memory_plan: tuple[int, int, int] | None, speed: tuple[float, float], setting: str,
           peers: Peers | None = None) -> str:  # fmt: skip
    command = "python -m bench.throughput" + (" --quick" if args.quick else "")
    command += f" --features {args.features} --events {args.events}"
    lines = [
        f"# Throughput benchmark ({'quick' if args.quick else 'full'} run)",
        "",
        f"`{command}`, {elapsed:.0f} s. {setting}",
        "",
        "**The broker (Tansu, in memory) and redis-server share the 2 cores with the contender being measured**, "
        "as does this benchmark's own sampling: every rate below is a rate on a machine that also serves the "
        "data. Events/s per process = events consumed between the first and the last progress sample over the "
        "time between them (start-up and group join excluded); CPU (user + system) of the contender's process "
        "over the same interval, next to that of the broker and redis-server and that of the rest of the machine "
        "(this benchmark's sampling, and anything else running); peak RSS = VmHWM. Protocol: "
        "`bench/throughput.py`, contenders: [throughput.md](throughput.md).",
        "",
        f"Machine speed check (a 5M-iteration Python loop, run by the parent): {speed[0]:.2f} s before the "
        f"runs, {speed[1]:.2f} s after. Runs on this shared VM vary by 10-30% from one hour to the next: "
        "compare ratios within one run, not absolute rates across runs.",
        "",
        detectors_in_force(),
    ]
    if peers is not None:
        lines += ["", f"whylogs and NannyML ran with `{peers.python}`: {peers.versions or 'not found'}."]
    for w in workloads:
        lines += ["", f"## {w.workload.title()}", ""]
        wl = w.workload
        lines.append(f"Data: {wl.single_events:,} events as single-event messages (c reads the first "
                     f"{wl.naive_events:,}); {wl.batch_events:,} events as 100-event and as 1000-event JSON row "
                     f"envelopes, as 1000-event columnar JSON and as 1000-event Arrow batches; "
                     f"Evidently: the first model's first {REFERENCE:,} events as reference, the next "
                     f"{wl.evidently_rows:,} as current in one report, and the first "
                     f"{wl.evidently_windows * WINDOW:,} of those in reports of 1000 rows; whylogs and NannyML: "
                     f"each model's first {REFERENCE + wl.peer_rows:,} events ({REFERENCE:,} as NannyML's "
                     "reference), the topics' own rows.")  # fmt: skip
        lines += [""] + result_table(w.results, w.missing)
        judged = w.workload.features == 20
        lines += ["", "Ratios" + ("" if judged else " (the targets are set on the 20-feature workload)") + ":", ""]
        lines += ratio_table(w.results, judged)
        if w.scale_out is not None and "e1000" in w.results:
            lines += ["", *scale_out_table(w.results["e1000"], w.scale_out, w.partition_sizes)]
        if w.comparison is not None:
            lines += ["", *comparison_table(w.comparison, w.results)]
        if w.checkpoint:
            lines += ["", *checkpoint_table(*w.checkpoint)]
    if memory is not None and memory_plan is not None:
        models, features, per_model = memory_plan
        full = models >= 100 and features >= 100
        peak = memory.peak_rss / 2**20
        verdict = _status(peak <= TARGETS["rss_mb"]) if full else "- (quick run: smaller)"
        windows = (per_model - REFERENCE) // WINDOW
        lines += [
            "",
            "## Memory",
            "",
            f"One worker, {models} models x {features} features (1000-event envelopes, {per_model:,} events per "
            f"model: the {REFERENCE:,}-row reference, then {windows} window(s) of {WINDOW}): peak RSS "
            f"**{peak:,.0f} MB** (target <= {TARGETS['rss_mb']:.0f} MB for 100 models x 100 features: {verdict}); "
            f"{_int(memory.rate)} events/s, {memory.cpu_per_million:,.1f} CPU s per 1M events.",
        ]
    return "\n".join(lines) + "\n"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run for a smoke test (about 2 minutes)")
    parser.add_argument("--features", help="feature counts of the workloads (default 20,100; --quick 20)")
    parser.add_argument("--events", type=int, help="events per envelope topic at 20 features (default 300,000; "
                        "--quick 150,000); wider events get fewer, in proportion")  # fmt: skip
    parser.add_argument("--out", type=Path, help="also write the markdown tables to this file")
    parser.add_argument("--no-memory", action="store_true", help="skip the 100 models x 100 features memory run")
    parser.add_argument("--peers-python", default=str(PEERS_PYTHON), metavar="PATH",
                        help="the interpreter that runs the whylogs and NannyML contenders (default: the venv of "
                        "`make bench-peers`, .venv-peers/bin/python)")  # fmt: skip
    parser.add_argument("--no-issue5-row", action="store_true", help="skip the extra row with issue 5's detectors")
    parser.add_argument("--no-scale-out", action="store_true", help=f"skip the run with {SCALE_OUT} workers in one "
                        "group")  # fmt: skip
    parser.add_argument("--scale-out-stagger", type=float, default=0.0, metavar="S",
                        help="start each further worker of the scale-out run S seconds after the previous one "
                        "(default 0: together), to see the rebalance while the first consumes")  # fmt: skip
    args = parser.parse_args(argv)
    args.events = args.events or (150_000 if args.quick else 300_000)
    args.features = args.features or ("20" if args.quick else "20,100")
    try:
        feature_counts = [int(x) for x in args.features.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--features: comma-separated integers, got {args.features!r}")
    if not feature_counts or min(feature_counts) < 2:
        parser.error("--features: each workload needs at least 2 features")
    # models, features, events per model: each model past its reference and one window
    memory_plan = None if args.no_memory else ((10, 100, REFERENCE + WINDOW) if args.quick
                                                else (100, 100, REFERENCE + WINDOW))  # fmt: skip

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    started = time.monotonic()
    speed_before = python_speed()
    setting = environment()[0]  # now: the code the children run is what is checked out at the start
    work_dir = Path(tempfile.mkdtemp(prefix="driftstream-bench-"))
    children = Children(work_dir)
    broker, redis = EmbeddedBroker(), EmbeddedRedis()
    failed = True
    try:
        broker.start()
        redis.start()
        evidently = evidently_available()
        peers = peers_available(args.peers_python)
        bench = Bench(broker, redis, children, work_dir)
        results = []
        # the checkpoint cost is measured on the workload the targets are set on (not in a quick run)
        judged = 20 if 20 in feature_counts else feature_counts[0]
        checkpoint_at = None if args.quick else judged
        scale_out_at = None if args.no_scale_out else judged  # the scale-out too, in a quick run as well
        for features in feature_counts:
            workload = plan_workload(features, args.events, args.quick)
            results.append(run_workload(bench, workload, evidently, peers, checkpoint=features == checkpoint_at,
                                        issue5=not args.no_issue5_row,
                                        scale_out=features == scale_out_at,
                                        stagger=args.scale_out_stagger))  # fmt: skip
        memory = run_memory(bench, *memory_plan) if memory_plan else None
        speed = (speed_before, python_speed())
        text = report(args, results, memory, time.monotonic() - started, memory_plan, speed, setting, peers)
        failed = False
    except BenchError as exc:
        log(f"error: {exc}")
        return 1
    finally:
        children.stop_all()
        redis.stop()
        broker.stop()
        if failed:
            log(f"logs kept in {work_dir} (broker: {broker.log_path}, redis: {redis.log_path})")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
            broker.log_path.unlink(missing_ok=True)
            redis.log_path.unlink(missing_ok=True)
    print(text)
    if args.out:
        args.out.write_text(text)
        log(f"wrote {args.out}")
    failed = False
    if any(w.scale_out_failed for w in results):
        log("error: scale-out failed: a worker of the group owned no partition (see the scale-out table)")
        failed = True
    if any(w.alerts_differ for w in results):
        log("error: batching changed the alerts (see the comparison table)")
        failed = True
    if failed:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
