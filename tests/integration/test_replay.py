"""``driftstream replay`` against a real broker and redis-server: a time range and an offset range of
simulated traffic give the alerts an Engine fed the same records directly gives, the live prefix's
Redis keys stay as they were, ``--alerts-topic`` receives the alerts, and bad options are one line."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest
import redis
from confluent_kafka import Message, Producer
from prometheus_client import CollectorRegistry

from detectors.reference import NumericReference
from streams.alerts import rfc3339
from streams.baseline import baseline_blob
from streams.engine import Engine, Record
from streams.metrics import Metrics
from streams.replay import OffsetBound, ReplayError, ReplayRange, parse_time, replay
from streams.settings import Settings
from streams.simulate import ConceptDrift, Drift, LabelPlan, Traffic, send
from streams.state import Checkpoint, MemoryStateStore, RedisStateStore
from tests.integration.harness import isolated_settings, read_topic, worker_env

pytestmark = pytest.mark.integration

PARTITIONS = 2
# Keys go to partition crc32(key) % partitions (librdkafka's consistent_random): one drifting model a partition.
MODELS = ("fraud", "risk")
EVENTS = 6000  # per model, in the range
TRAFFIC = Traffic(models=MODELS, numeric=5, categorical=1, seed=11,
                  drifts=(Drift("f2", start=3000, kind="mean_shift", magnitude=1.5, model="fraud"),
                          Drift("f3", start=3000, kind="mean_shift", magnitude=1.5, model="fraud"),
                          Drift("c0", start=4000, kind="category_mix", model="risk")))  # fmt: skip
OUTSIDE = Traffic(models=("early", "late"), numeric=5, categorical=1, seed=12)  # sent before and after the range


@dataclass(frozen=True)
class Sent:
    settings: Settings
    since: float  # Unix seconds: between the traffic before the range and the range's first record
    until: float  # between the range's last record and the traffic after it
    records: list[Record]  # the whole events topic, in offset order per partition


@pytest.fixture(scope="module")
def sent(kafka_bootstrap: str, redis_url: str) -> Iterator[Sent]:
    assert [zlib.crc32(model.encode()) % PARTITIONS for model in MODELS] == [0, 1]
    settings = isolated_settings(kafka_bootstrap, redis_url, "replay", topic_partitions=PARTITIONS,
                                 reference_size=2000, window_size=500, dataset_drift_events=500)  # fmt: skip
    assert send(settings, OUTSIDE, 300, batch_size=50).undelivered == 0
    time.sleep(0.3)  # Kafka timestamps are milliseconds: keep the phases apart
    since = time.time()
    time.sleep(0.3)
    assert send(settings, TRAFFIC, EVENTS, batch_size=200).undelivered == 0
    time.sleep(0.3)
    until = time.time()
    time.sleep(0.3)
    assert send(settings, OUTSIDE, 300, batch_size=50).undelivered == 0
    records = [_record(m) for m in read_topic(settings, settings.topic_events)]
    assert {r.partition for r in records} == {0, 1}
    yield Sent(settings, since, until, sorted(records, key=lambda r: (r.partition, r.offset)))


def _record(message: Message) -> Record:
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None
    return Record(topic, partition, offset, message.timestamp()[1] / 1000, message.key(), message.value(),
                  message.headers())  # fmt: skip


def in_range(sent: Sent) -> list[Record]:
    return [r for r in sent.records if sent.since <= r.timestamp <= sent.until]


def reference_alerts(settings: Settings, records: list[Record]) -> list[dict[str, Any]]:
    """What an Engine fed these records directly (a few at a time, in memory) alerts on."""

    async def run() -> list[dict[str, Any]]:
        engine = Engine(settings, MemoryStateStore(), Metrics(CollectorRegistry()))
        alerts: list[dict[str, Any]] = []
        for first in range(0, len(records), 3):
            alerts += (await engine.process(records[first:first + 3])).alert_objects
        return alerts

    return asyncio.run(run())


def comparable(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Alerts without the time they were detected (a replay's clock is its records' time), in a stable order."""
    return sorted(({k: v for k, v in a.items() if k != "detected_at"} for a in alerts),
                  key=lambda a: (a["model"], a["window"]["event_index"], a["alert_id"]))  # fmt: skip


def run_cli(settings: Settings, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams", "replay", *args], env=worker_env(settings),
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def live_keys(settings: Settings) -> dict[bytes, bytes]:
    """Every key under the live prefix, with its serialized value (DUMP)."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return {key: client.dump(key) for key in client.scan_iter(match=f"{settings.state_prefix}:*")}
    finally:
        client.close()


def test_a_time_range_alerts_as_the_engine_does_and_leaves_the_live_keys(sent: Sent) -> None:
    settings = sent.settings
    # The live worker's state: a checkpoint that covers the whole range. A replay neither reads nor changes it.
    store = RedisStateStore.from_settings(settings)

    async def plant() -> None:
        await store.save([Checkpoint(settings.topic_events, 0, 10**6, {"fraud": b"live"})])
        await store.close()

    asyncio.run(plant())
    before = live_keys(settings)
    assert len(before) == 1

    done = run_cli(settings, "--from", rfc3339(sent.since), "--to", f"{sent.until:.3f}", "--json")
    assert done.returncode == 0, done.stderr
    lines = [orjson.loads(line) for line in done.stdout.splitlines()]
    alerts = [line for line in lines if "alert_id" in line]
    requests = [line for line in lines if "alert_id" not in line]
    # fraud's inputs drift on two features: a dataset drift alert, and the retraining request it makes,
    # printed and never published.
    assert [(r["model"], r["trigger"]["detector"]) for r in requests] == [("fraud", "dataset")], requests
    assert set(requests[0]["since"]["offsets"]) == {settings.topic_events, settings.topic_labels}
    assert read_topic(settings, settings.topic_retrain, timeout=1) == []
    expected = reference_alerts(settings, in_range(sent))
    print(f"{len(expected)} alerts, e.g. {expected[0]['message'] if expected else None}; summary:\n{done.stderr}")
    assert {(a["model"], a["feature"]) for a in expected if a["status"] == "firing"} >= {("fraud", "f2"),
                                                                                         ("risk", "c0")}
    assert comparable(alerts) == comparable(expected)
    # Detected at the replayed records' time, not the time of the replay.
    assert all(rfc3339(sent.since) <= a["detected_at"] <= rfc3339(sent.until) for a in alerts)
    assert f"replayed {2 * EVENTS:,} events" in done.stderr
    assert "rejected: 0" in done.stderr

    assert live_keys(settings) == before
    client = redis.Redis.from_url(settings.redis_url)
    try:
        replayed = list(client.scan_iter(match=f"{settings.state_prefix}-replay:{settings.app_id}:state:*"))
    finally:
        client.close()
    assert {key.decode().rsplit(":", 1)[1] for key in replayed} >= {"0", "1"}

    # The same again would find the first run's state: refused in one line, unless told what to do with it.
    again = run_cli(settings, "--from", f"{sent.since}", "--json")
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.count("\n") == 1 and "--fresh" in again.stderr and "--resume" in again.stderr
    # Resumed, it goes on from its checkpoints: everything in range was applied already.
    resumed = run_cli(settings, "--from", f"{sent.since}", "--to", f"{sent.until}", "--json", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == "" and "replayed 0 events" in resumed.stderr

    # In process, state in memory: the same alerts.
    found: list[dict[str, Any]] = []
    summary = replay(settings, ReplayRange(since=sent.since, until=sent.until), memory=True, on_alert=found.append)
    assert comparable(found) == comparable(expected)
    assert summary.events == 2 * EVENTS and summary.state_prefix is None
    assert live_keys(settings) == before


def test_an_offset_range_sends_the_engines_alerts_to_the_chosen_topic(sent: Sent) -> None:
    settings = sent.settings
    wanted = in_range(sent)
    bounds = {p: (min(r.offset for r in wanted if r.partition == p), max(r.offset for r in wanted if r.partition == p))
              for p in (0, 1)}  # fmt: skip
    assert bounds[0][0] == 0 and bounds[1][0] > 0  # partition 1 holds the traffic sent before the range
    topic = f"{settings.topic_alerts}-replayed"
    events = settings.topic_events
    done = run_cli(settings, "--from-offset", f"{bounds[0][0]}", "--from-offset", f"{events}:1={bounds[1][0]}",
                   "--to-offset", f"{events}:0={bounds[0][1]}", "--to-offset", f"{events}:1={bounds[1][1]}",
                   "--topics", events, "--state-prefix", f"{settings.state_prefix}-offsets",
                   "--alerts-topic", topic)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "FIRING" not in done.stdout  # sent, not printed
    expected = reference_alerts(settings, wanted)
    received = [orjson.loads(m.value()) for m in read_topic(settings, topic)]
    assert expected and comparable(received) == comparable(expected)
    assert f"replayed {2 * EVENTS:,} events" in done.stderr
    assert f"{events}[0] {bounds[0][0]}..{bounds[0][1]}, {events}[1] {bounds[1][0]}..{bounds[1][1]}" in done.stderr
    assert read_topic(settings, settings.topic_alerts, timeout=1) == []  # nothing reached the live alert topic
    assert read_topic(settings, settings.topic_dlq, timeout=1) == []


@pytest.mark.parametrize(("args", "says"), [
    (["--alerts-topic", "LIVE"], "is the live alert topic"),
    (["--state-prefix", "LIVE_PREFIX"], "is the live worker's"),
    (["--from-offset", "events:x=5"], "give an offset N or TOPIC:PARTITION=N"),
    (["--from", "last tuesday"], "is not RFC 3339"),
    (["--from", "2026-12-02T00:00:00Z", "--to", "2026-12-01T00:00:00Z"], "the range is empty"),
    (["--topics", "no-such-topic"], "does not exist"),
    (["--fresh", "--resume"], "exclude each other"),
])  # fmt: skip
def test_a_bad_option_is_one_line(sent: Sent, args: list[str], says: str) -> None:
    settings = sent.settings
    args = [settings.topic_alerts if a == "LIVE" else settings.state_prefix if a == "LIVE_PREFIX" else a
            for a in args]  # fmt: skip
    done = run_cli(settings, *args, timeout=60)
    assert done.returncode == 2
    assert done.stdout == "" and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert says in done.stderr


def test_labels_wait_for_the_events_they_label(kafka_bootstrap: str, redis_url: str) -> None:
    """Read from their own partition, labels would run ahead of their predictions and wait past
    LABEL_WAIT_MAX (here 500); held back to the events' time, every one joins and the concept drift shows."""
    settings = isolated_settings(kafka_bootstrap, redis_url, "replay-labels", topic_partitions=1,
                                 reference_size=2000, window_size=500, label_wait_max=500)  # fmt: skip
    traffic = Traffic(models=("churn",), numeric=3, categorical=0, seed=4)
    plan = LabelPlan(concept_drifts=(ConceptDrift.parse("6000:flip"),))
    assert send(settings, traffic, 12_000, batch_size=200, labels=plan, label_batch=100).undelivered == 0
    alerts: list[dict[str, Any]] = []
    summary = replay(settings, on_alert=alerts.append)
    print("\n".join(summary.lines()))
    assert summary.label_messages == 120 and summary.events == 12_000
    assert summary.labels == {"joined": 12_000}
    firing = [a for a in alerts if a["type"] == "concept_drift" and a["status"] == "firing"]
    assert firing and all(a["window"]["event_index"] >= 6000 for a in firing), alerts


def test_a_replay_judges_against_the_live_baselines(kafka_bootstrap: str, redis_url: str) -> None:
    """A model's baseline, loaded under the live prefix, is the replay's reference too (Redis or memory state)."""
    settings = isolated_settings(kafka_bootstrap, redis_url, "replay-baseline", topic_partitions=1, window_size=500)
    traffic = Traffic(models=("risk",), numeric=3, categorical=0, seed=5)  # f1 ~ N(1, 1.1)
    assert send(settings, traffic, 3000, batch_size=500).undelivered == 0
    without: list[dict[str, Any]] = []
    replay(settings, memory=True, on_alert=without.append)
    assert without == []  # 3000 events: the stream's own reference (5000 rows) is not built yet

    rng = np.random.default_rng(0)
    blob = baseline_blob({"f1": NumericReference.build(rng.standard_normal(5000) - 2.0, bins=10)})
    store = RedisStateStore.from_settings(settings)

    async def load() -> None:
        await store.save_baseline("risk", blob)
        await store.close()

    asyncio.run(load())
    before = live_keys(settings)
    for memory in (True, False):
        found: list[dict[str, Any]] = []
        replay(settings, memory=memory, on_alert=found.append)
        # (f0 and f2, absent from the baseline, are data quality findings; drift is f1's alone)
        assert {(a["model"], a["feature"]) for a in found if a["type"] == "data_drift"} == {("risk", "f1")}, found
    assert live_keys(settings) == before


def test_offset_bounds_name_every_partition_or_one() -> None:
    bound = OffsetBound.parse("--from-offset", ["100", "events:2=7", "my.topic-x:10=0"])
    assert bound is not None
    assert [bound.of("events", 0), bound.of("events", 2), bound.of("my.topic-x", 10), bound.of("labels", 2)] == [
        100, 7, 0, 100]  # fmt: skip
    assert OffsetBound.parse("--to-offset", []) is None
    for values, says in ((["5", "6"], "every partition twice"), (["e:1=5", "e:1=6"], "e:1 twice"),
                         (["-1"], "an offset is >= 0"), (["=5"], "TOPIC:PARTITION=N"), (["e=5"], "TOPIC:PARTITION=N"),
                         (["e:1=x"], "TOPIC:PARTITION=N")):  # fmt: skip
        with pytest.raises(ReplayError, match=says):
            OffsetBound.parse("--from-offset", values)
    with pytest.raises(ReplayError, match="not both"):
        ReplayRange(since=1.0, from_offsets=bound)
    with pytest.raises(ReplayError, match="range is empty"):
        ReplayRange(from_offsets=OffsetBound(every=10), to_offsets=OffsetBound(every=9))
    assert parse_time("--from", "2026-12-01T00:00:00Z") == parse_time("--from", "1796083200") == 1796083200.0


def test_bad_messages_are_counted_never_sent_to_the_dlq(kafka_bootstrap: str, redis_url: str) -> None:
    settings = isolated_settings(kafka_bootstrap, redis_url, "replay-bad", topic_partitions=1)
    producer = Producer(settings.confluent_config())
    good = {"model": "fraud", "features": {"f0": 1.0}, "prediction": 0.5}
    for value in (b"{not json", orjson.dumps(good), orjson.dumps([good, {"model": "fraud", "features": 7}]), b"[]"):
        producer.produce(settings.topic_events, key=b"fraud", value=value)
    assert producer.flush(10) == 0
    summary = replay(settings, memory=True)
    assert summary.events == 2 and summary.messages == 4
    assert summary.rejected == {"invalid_json": 1, "invalid_features": 1, "empty_batch": 1}
    assert "rejected: 3 (empty_batch 1, invalid_features 1, invalid_json 1)" in summary.lines()
    assert read_topic(settings, settings.topic_dlq, timeout=1) == []
