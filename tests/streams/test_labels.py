"""Labels joined to their predictions through the engine, against a real redis-server (and memory)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgpack
import orjson
import pytest
import redis
from prometheus_client import CollectorRegistry

from streams.decode import Limits, decode_labels
from streams.engine import Engine, Outputs, Record
from streams.join import MAX_DATA_BYTES, JoinData, RedisJoinStore, mark, stored_value
from streams.metrics import Metrics
from streams.settings import Settings
from streams.state import MemoryStateStore, RedisStateStore, StateStore

T0 = 1.8e9  # event time of the first event


def settings(unique: str, **overrides: Any) -> Settings:
    values = dict(app_id=f"labels-{unique}", state_prefix=f"t-{unique}", topic_events="events",
                  topic_labels="labels", quality_window=50, label_retry_interval=0.001)  # fmt: skip
    return Settings(**(values | overrides))


def event(i: int, prediction: Any = 1, **extra: Any) -> dict[str, Any]:
    return {"model": "fraud", "event_id": f"e{i}", "timestamp": T0 + i, "features": {"x": float(i % 7)},
            "prediction": prediction, **extra}  # fmt: skip


def label(i: int | str, value: Any = 1, at: float | None = None) -> dict[str, Any]:
    found = {"model": "fraud", "event_id": i if isinstance(i, str) else f"e{i}", "label": value}
    if at is not None:
        found["timestamp"] = at
    return found


class Feed:
    """Kafka records of the events and labels topics, offsets counted per topic."""

    def __init__(self) -> None:
        self.offsets = {"events": 0, "labels": 0}

    def record(self, topic: str, value: Any, at: float) -> Record:
        offset = self.offsets[topic]
        self.offsets[topic] += 1
        return Record(topic, 0, offset, at, b"fraud", value if isinstance(value, bytes) else orjson.dumps(value))


def make_engine(config: Settings, store: StateStore) -> Engine:
    return Engine(config, store, Metrics(CollectorRegistry()), clock=lambda: T0)


def outcomes(engine: Engine) -> dict[str, float]:
    found = {}
    for metric in engine.metrics.registry.collect():
        if metric.name == "driftstream_labels":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    found[sample.labels["outcome"]] = sample.value
    return found


def test_label_messages_decode_one_or_an_array_and_reject_bad_elements() -> None:
    good, bad = decode_labels(orjson.dumps([label(1), {"model": "fraud", "event_id": "e2"}, label(3, "spam"),
                                            {"model": "fraud", "event_id": "", "label": 1}, label(4, None), 7,
                                            label(5, 2.5, at="2026-11-24T08:00:00Z")]), Limits())  # fmt: skip
    assert [(g.event_id, g.label) for g in good] == [("e1", 1), ("e3", "spam"), ("e5", 2.5)]
    assert good[2].timestamp == 1795507200.0  # 2026-11-24T08:00:00Z
    assert [(b.index, b.reason) for b in bad] == [(1, "invalid_label"), (3, "invalid_event_id"), (4, "invalid_label"),
                                                  (5, "not_an_object")]  # fmt: skip
    single, none = decode_labels(orjson.dumps(label(9, True)), Limits())
    assert [s.label for s in single] == [True] and not none


def test_labels_join_once_and_every_other_outcome_is_counted(unique: str, store_factory) -> None:
    """Joined, an hour late, before its prediction, twice, conflicting, unknown: each as specified."""
    config = settings(unique, label_ttl=7200)
    engine = make_engine(config, store_factory(config))
    feed = Feed()

    async def run() -> None:
        await engine.process([feed.record("events", [event(i) for i in range(10)], T0 + 10)])
        await engine.checkpoint()  # it stores the join data of the events it covers
        await engine.process([
            feed.record("labels", label(0), T0 + 20),  # joins
            feed.record("labels", label(1, at=T0 + 1 + 3600), T0 + 3601),  # an hour after its prediction: joins
            feed.record("labels", [label(0), label(2, 0), label(2, 1)], T0 + 3602),  # duplicate; joins, conflict
            feed.record("labels", label(20), T0 + 3603),  # before its prediction: waits
            feed.record("labels", label("nobody"), T0 + 3604),  # never predicted: waits
            feed.record("labels", label(20, 0), T0 + 3605),  # conflicts with the waiting one
        ])  # fmt: skip
        assert outcomes(engine) == {"joined": 3, "duplicate": 1, "conflict": 2, "waiting": 2}
        await engine.process([feed.record("events", event(20), T0 + 3700)])
        await engine.checkpoint()
        await asyncio.sleep(0.01)  # label_retry_interval (1 ms) since the last lookup of the waiting ones
        await engine.process([feed.record("labels", label(3), T0 + 3701)])  # its batch retries the waiting ones
        assert outcomes(engine) == {"joined": 5, "duplicate": 1, "conflict": 2, "waiting": 2}
        # The partition's clock passes label_ttl since "nobody" began to wait: it leaves unmatched.
        await engine.process([feed.record("labels", label(4), T0 + 3604 + 7200)])
        assert outcomes(engine) == {"joined": 6, "duplicate": 1, "conflict": 2, "waiting": 2, "unmatched": 1}

    asyncio.run(run())
    (state,) = [s for (topic, _), s in engine.partitions.items() if topic == "labels"]
    assert state.labels["fraud"].quality.labels_seen == 6 and not state.labels["fraud"].waiting
    # Label time minus event time: 20 s, the hour-late label's 3600 s (its own timestamp), 3600, 3583 (the
    # early label: it came at T0+3603 for an event of T0+20), 3698 and 10,800.
    registry = engine.metrics.registry
    assert registry.get_sample_value("driftstream_label_lag_seconds_count", {"model": "fraud"}) == 6
    assert registry.get_sample_value("driftstream_label_lag_seconds_sum", {"model": "fraud"}) == 25301


def test_a_batch_replayed_after_a_crash_applies_its_labels_again_and_only_once(unique: str, store_factory) -> None:
    """The join marks a prediction labeled before the quality state is saved: a replay finds its own mark."""
    config = settings(unique)
    store = store_factory(config)
    feed = Feed()
    events = feed.record("events", [event(i) for i in range(30)], T0 + 30)
    labels = [feed.record("labels", [label(i), label(i + 1)], T0 + 40 + i) for i in range(0, 30, 2)]

    async def run() -> tuple[bytes, bytes]:
        first = make_engine(config, store)
        await first.process([events])
        await first.checkpoint()
        await first.process(labels[:5])
        await first.checkpoint()
        await first.process(labels[5:])  # applied, marked in the join store, never checkpointed: a crash
        again = make_engine(config, store)
        await again.process([events, *labels])  # the events are skipped; labels[5:] are replayed
        await again.checkpoint()
        once = make_engine(config.model_copy(update={"app_id": config.app_id + "-once"}), store)
        await once.process([events])
        await once.checkpoint()
        await once.process(labels)
        await once.checkpoint()
        return (msgpack.packb(again.partitions[("labels", 0)].snapshot_of("fraud")),
                msgpack.packb(once.partitions[("labels", 0)].snapshot_of("fraud")))  # fmt: skip

    replayed, uninterrupted = asyncio.run(run())
    assert replayed == uninterrupted
    assert msgpack.unpackb(replayed)["quality"]["labels_seen"] == 30


def test_join_data_is_compact_and_expires_after_the_ttl(unique: str, redis_url: str) -> None:
    config = settings(unique, label_ttl=3600)
    client = redis.Redis.from_url(redis_url)
    engine = make_engine(config, RedisStateStore.from_settings(config.model_copy(update={"redis_url": redis_url})))
    feed = Feed()
    async def run() -> None:
        await engine.process([feed.record("events", [event(i, {"yes": 0.8, "no": 0.2}) for i in range(3)], T0)])
        await engine.checkpoint()

    asyncio.run(run())
    assert isinstance(engine.joins, RedisJoinStore)
    buckets = list(client.scan_iter(engine.joins.bucket_base("fraud") + "*"))
    assert buckets and all(client.object("encoding", key) == b"listpack" for key in buckets)
    # Lookups read a bucket until label_ttl past the end of its generation (label_ttl / 8 long); it
    # lives one generation more for replays.
    assert all(3600 + 3600 / 8 - 1 <= client.ttl(key) <= 3600 + 2 * 3600 / 8 + 1 for key in buckets)
    values = {field: value for key in buckets for field, value in client.hgetall(key).items()}
    assert set(values) == {b"e0", b"e1", b"e2"}
    assert JoinData.unpack(values[b"e1"][2:]) == JoinData(None, None, "yes", {"yes": 0.8, "no": 0.2}, T0 + 1)
    assert len(values[b"e1"]) < 60
    # Too large for the length prefix: stored without probabilities, else not at all.
    huge = {f"class-{i}": 0.0 for i in range(8000)}
    shrunk = stored_value(JoinData("1", None, "class-0", huge, T0))
    assert shrunk is not None and JoinData.unpack(shrunk[2:]).probabilities is None
    assert stored_value(JoinData("1", {"k": "v" * MAX_DATA_BYTES}, 1, None, T0)) is None
    assert mark("0:1:2", b"\x01") == b"0:1:2\x00\x01"


def test_a_prediction_waits_its_ttl_and_generations_forget_it(unique: str, redis_url: str) -> None:
    now = [T0]
    config = settings(unique, label_ttl=800)
    store = RedisJoinStore.from_settings(config.model_copy(update={"redis_url": redis_url}))
    store._clock = lambda: now[0]  # noqa: SLF001 - the generations follow the worker's clock
    value = stored_value(JoinData("1", None, 1, None, T0))
    assert value is not None

    async def run() -> list[str]:
        assert await store.store("fraud", [("old", value)], 1000.0) == 1
        now[0] += 50  # stored again in the same generation (a replay): not new, the first stands
        assert await store.store("fraud", [("old", value)], 1000.0) == 0
        now[0] += 450
        assert await store.store("fraud", [("new", value)], 1000.0) == 1
        now[0] += 350  # "old" was stored 850 s ago: past label_ttl, within 9/8 of it: still there
        first = [f.outcome.name for f in await store.lookup("fraud", [("old", mark("0:0:0", b"1"))])]
        now[0] += 100  # 950 s: its generation is out of reach, but for the replay of its own label
        second = [f.outcome.name for f in await store.lookup("fraud", [("old", mark("0:0:0", b"1")),
                                                                        ("old", mark("0:1:0", b"1")),
                                                                        ("new", mark("0:2:0", b"1"))])]  # fmt: skip
        assert await store.coverage("fraud") == (2, 2)
        return first + second

    assert asyncio.run(run()) == ["JOINED", "REPLAYED", "MISSING", "JOINED"]


def test_every_key_of_a_model_shares_one_cluster_slot_whatever_its_name(unique: str, redis_url: str) -> None:
    from redis.crc import key_slot

    store = RedisJoinStore.from_settings(settings(unique, redis_url=redis_url))
    for model in ("fraud", "}x", "a{b}", "{", "churn}{"):
        keys = [store.bucket_base(model) + "7:3", store.meta_key(model), store.stats_key(model)]
        assert len({key_slot(key.encode()) for key in keys}) == 1, (model, keys)


def test_a_quiet_models_waiting_labels_are_retried_while_another_models_labels_flow(unique: str) -> None:
    config = settings(unique)
    engine = make_engine(config, MemoryStateStore())

    def other(i: int) -> dict[str, Any]:
        return {**label(i), "model": "churn", "event_id": f"c{i}"}

    async def run() -> None:
        await engine.process([Record("labels", 0, 0, T0, b"fraud", orjson.dumps(label(1)))])  # waits
        await engine.process([Record("events", 0, 0, T0, b"fraud", orjson.dumps(event(1)))])
        await engine.checkpoint()
        for offset in range(1, 4):  # only churn's labels come now
            await asyncio.sleep(0.01)
            await engine.process([Record("labels", 0, offset, T0 + offset, b"churn", orjson.dumps(other(offset)))])

    asyncio.run(run())
    joined = engine.metrics.registry.get_sample_value("driftstream_labels_total", {"model": "fraud",
                                                                                   "outcome": "joined"})  # fmt: skip
    assert joined == 1 and not engine.partitions[("labels", 0)].labels["fraud"].waiting


def test_without_join_data_labels_are_unmatched_and_keep_no_state(unique: str) -> None:
    engine = make_engine(settings(unique, label_ttl=0), MemoryStateStore())

    async def run() -> None:
        await engine.process([Record("events", 0, 0, T0, b"fraud", orjson.dumps(event(1)))])
        await engine.checkpoint()
        await engine.process([Record("labels", 0, 0, T0, b"fraud", orjson.dumps([label(1), label(2)]))])

    asyncio.run(run())
    assert outcomes(engine) == {"unmatched": 2}
    assert not engine.partitions[("labels", 0)].labels
    assert engine.metrics.registry.get_sample_value("driftstream_predictions_stored_total", {"model": "fraud"}) is None


@pytest.mark.parametrize("count", [1_000_000])
def test_bytes_per_pending_prediction(unique: str, count: int, capsys: pytest.CaptureFixture[str]) -> None:
    """A million pending predictions in a redis-server of their own: the memory each costs, printed.

    The steady state of a model at its EVENT_RATE (1000/s) with a LABEL_TTL of 1000 s: the worker's
    clock moves a second per 1000 predictions, so they spread over the generations as in production.
    """
    from streams.services import EmbeddedRedis

    now = [T0]
    with EmbeddedRedis() as server:
        config = settings(unique, redis_url=server.url, label_ttl=count / 1000)
        client = redis.Redis.from_url(server.url)
        store = RedisJoinStore.from_settings(config)
        store._clock = lambda: now[0]  # noqa: SLF001
        before = client.info("memory")["used_memory"]
        value = stored_value(JoinData("3", {"region": "eu"}, 0.93, None, T0))
        assert value is not None
        started = time.perf_counter()

        async def fill() -> int:
            new = 0
            for start in range(0, count, 1000):
                new += await store.store("fraud", [(f"6f1c2a-{i:08d}", value) for i in range(start, start + 1000)],
                                         1000.0)  # fmt: skip
                now[0] += 1.0
            return new

        assert asyncio.run(fill()) == count
        seconds = time.perf_counter() - started
        used = client.info("memory")["used_memory"] - before
        per = used / count
        encodings = {client.object("encoding", key) for key in client.scan_iter(store.bucket_base("fraud") + "*")}
        with capsys.disabled():
            print(f"\n{count:,} pending predictions: {used / 2**20:.1f} MiB in Redis, {per:.1f} bytes each "
                  f"(event id 15 B, value {len(value)} B, {store.buckets(1000.0)} buckets a generation, "
                  f"encodings {sorted(e.decode() for e in encodings)}); "
                  f"stored at {count / seconds:,.0f}/s")  # fmt: skip
        assert encodings == {b"listpack"}
        assert per < 80


def test_a_baseline_with_reference_quality_judges_the_first_window(unique: str, store_factory) -> None:
    """Without a baseline the first window is the reference; with one, it is judged against it."""
    import numpy as np

    from detectors.monitors.quality import LabeledRows, QualitySpec, quality_reference
    from streams.baseline import baseline_blob

    perfect = LabeledRows(versions=[None] * 200, segments=[None] * 200, predictions=[i % 2 for i in range(200)],
                          probabilities=[None] * 200, labels=[i % 2 for i in range(200)],
                          event_times=np.full(200, T0), label_times=np.full(200, T0))  # fmt: skip
    reference = quality_reference(perfect, QualitySpec())
    assert reference.accuracy == 1.0

    def run(with_baseline: bool) -> list[dict[str, Any]]:
        config = settings(unique + str(with_baseline), quality_window=100)
        engine = make_engine(config, store_factory(config))
        feed = Feed()
        # The model says 1 for every event; a third of the labels say 0: accuracy 2/3.
        events = feed.record("events", [event(i, 1) for i in range(100)], T0 + 100)
        labels = feed.record("labels", [label(i, 0 if i % 3 == 0 else 1) for i in range(100)], T0 + 200)

        async def go() -> list[dict[str, Any]]:
            if with_baseline:
                await engine.store.save_baseline("fraud", baseline_blob({}, reference))
            first = (await engine.process([events])).alert_objects
            await engine.checkpoint()
            return first + (await engine.process([labels])).alert_objects

        return asyncio.run(go())

    assert run(with_baseline=False) == []
    (alert,) = run(with_baseline=True)
    assert (alert["type"], alert["status"], alert["severity"]) == ("performance", "firing", "critical")
    assert alert["reference"]["accuracy"] == 1.0 and alert["current"]["accuracy"] == pytest.approx(0.66)


def test_bad_labels_reach_the_dlq_from_the_labels_topic_and_a_closed_window_reaches_drift_metrics(
        unique: str) -> None:  # fmt: skip
    config = settings(unique, quality_window=20)
    engine = make_engine(config, MemoryStateStore())
    feed = Feed()

    async def run() -> Outputs:
        await engine.process([feed.record("events", [event(i) for i in range(20)], T0 + 20)])
        await engine.checkpoint()
        return await engine.process([
            feed.record("labels", [label(i) for i in range(20)] + [{"model": "fraud", "event_id": "e1"}], T0 + 30),
            feed.record("labels", b"not json", T0 + 31),
        ])  # fmt: skip

    out = asyncio.run(run())
    reasons = [(dict(headers)["driftstream-reason"], dict(headers)["driftstream-source-topic"],
                dict(headers).get("driftstream-batch-index")) for _, _, headers in out.dlq]  # fmt: skip
    assert reasons == [(b"invalid_label", b"labels", b"20"), (b"invalid_json", b"labels", None)]
    assert engine.metrics.registry.get_sample_value("driftstream_events_rejected_total",
                                                    {"reason": "invalid_label"}) == 1  # fmt: skip
    (snapshot,) = [orjson.loads(value) for _, value in out.metrics]
    assert snapshot["topic"] == "labels" and snapshot["labels_seen"] == 20
    metrics = {item["metric"]: item["value"] for item in snapshot["quality"] if item["segment"] is None}
    assert metrics["accuracy"] == 1.0 and metrics["coverage"] == 1.0
    assert engine.metrics.registry.get_sample_value(
        "driftstream_quality", {"model": "fraud", "version": "", "segment": "", "metric": "accuracy"}) == 1.0
