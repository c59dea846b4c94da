"""The batch engine against a real redis-server (and the in-memory store)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgpack
import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from detectors.monitors import PREDICTION, SNAPSHOT_VERSION
from detectors.reference import NumericReference
from streams import engine as engine_module
from streams.baseline import baseline_blob
from streams.engine import Engine, Record
from streams.join import RedisJoinStore
from streams.metrics import Metrics
from streams.services import free_port
from streams.settings import CONFIG_ENV, Settings
from streams.simulate import Drift, Traffic, VersionSwitch, model_events
from streams.state import (
    STATE_VERSION,
    Checkpoint,
    MemoryStateStore,
    RedisStateStore,
    StateStore,
    StoreUnavailable,
    Write,
)


def settings(unique: str, **overrides) -> Settings:
    values = dict(app_id=f"engine-{unique}", state_prefix=f"t-{unique}", reference_size=1000, window_size=500)
    return Settings(**(values | overrides))


def records(traffic: Traffic, count: int, per_message: int = 1, topic: str = "events") -> list[Record]:
    stream = model_events(traffic, 0)
    out = []
    for offset in range(count // per_message):
        events = [next(stream) for _ in range(per_message)]
        value = orjson.dumps(events[0] if per_message == 1 else events)
        out.append(Record(topic, 0, offset, 1.8e9 + offset, b"fraud", value))
    return out


def make_engine(config: Settings, store: StateStore) -> Engine:
    return Engine(config, store, Metrics(CollectorRegistry()), clock=lambda: 1.8e9)


async def feed(engine: Engine, items: list[Record], size: int = 200) -> list[dict]:
    alerts = []
    for start in range(0, len(items), size):
        alerts += (await engine.process(items[start : start + size])).alert_objects
    return alerts


TRAFFIC = Traffic(numeric=4, categorical=1, seed=11, drifts=(Drift("f1", 3000, "mean_shift", 1.5),))


@pytest.mark.parametrize("cut", [2600, 4600])  # before the drift, and with its incident firing
def test_drift_alerts_and_checkpointed_state_survive_a_new_engine(unique: str, store_factory, cut: int) -> None:
    config = settings(unique)
    items = records(TRAFFIC, 6000)

    async def scenario() -> tuple[list[dict], list[dict], list[dict]]:
        straight = await feed(make_engine(config, store_factory(config)), items)
        per_config = config.model_copy(update={"app_id": f"per-{unique}", "alert_per_detector": True})
        per_detector = await feed(make_engine(per_config, store_factory(per_config)), items)
        resumed_config = config.model_copy(update={"app_id": f"resumed-{unique}"})
        first = make_engine(resumed_config, store_factory(resumed_config))
        alerts = await feed(first, items[:cut])
        await first.checkpoint()
        second = make_engine(resumed_config, store_factory(resumed_config))
        # Records the checkpoint covers are skipped: replaying from 600 records before it changes nothing.
        alerts += await feed(second, items[cut - 600 :])
        return straight, per_detector, alerts

    straight, per_detector, resumed = asyncio.run(scenario())
    assert {(a["feature"], a["detector"]) for a in per_detector if a["status"] == "firing"} >= {("f1", "psi")}
    assert {a["feature"] for a in per_detector} == {"f1"} and all(a["detectors"] == [a["detector"]]
                                                                  for a in per_detector)  # fmt: skip
    # One drift, one incident: the first detector to catch it fires it (critical at once), the rest join.
    assert [(a["feature"], a["status"], a["severity"]) for a in straight] == [("f1", "firing", "critical")]
    assert straight[0]["alert_id"] in {a["alert_id"] for a in per_detector}  # the causing detector's own id
    assert [a["alert_id"] for a in resumed] != []
    strip = lambda alerts: [{k: v for k, v in a.items() if k != "alert_id"} for a in alerts]  # noqa: E731
    assert strip(resumed) == strip(straight)


@pytest.mark.parametrize("drift", [Drift("f1", 3000, "mean_shift", 1.5), Drift("f2", 3000, "variance", 2.0),
                                   Drift("c0", 3000, "category_mix", 0.6), Drift("f3", 3000, "null_rate", 0.4)],
                         ids=lambda drift: drift.kind)  # fmt: skip
def test_batch_envelopes_give_the_same_alerts_as_single_events(unique: str, drift: Drift) -> None:
    """Same feature, detector, status and triggering event (all in alert_id), in the same order."""
    config = settings(unique)
    traffic = Traffic(numeric=4, categorical=1, seed=11, drifts=(drift,))

    async def scenario(per_message: int, batch: int) -> list[dict]:
        return await feed(make_engine(config, MemoryStateStore()), records(traffic, 6000, per_message), batch)

    singles = asyncio.run(scenario(1, 20))
    # The drifting feature's alerts, and perhaps the whole model's (pca_reconstruction): batched alike.
    assert {a["feature"] for a in singles if a["status"] == "firing"} - {None} == {drift.feature}
    for per_message, batch in ((100, 3), (1000, 1)):
        envelopes = asyncio.run(scenario(per_message, batch))
        assert [a["alert_id"] for a in envelopes] == [a["alert_id"] for a in singles], per_message


def test_a_model_named_in_the_config_file_judges_with_its_own_budget(
    unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    path = tmp_path / "driftstream.toml"
    path.write_text("false_alarm_budget = 2\n\n[models.busy]\nfalse_alarm_budget = 0.5\nevent_rate = 50000\n")
    monkeypatch.setenv(CONFIG_ENV, str(path))
    engine = make_engine(settings(unique), MemoryStateStore())
    records = [Record("events", 0, offset, 1.8e9, b"k", orjson.dumps({"model": model, "features": {"x": 1.0}}))
               for offset, model in enumerate(["busy", "quiet"])]  # fmt: skip
    asyncio.run(engine.process(records))
    monitors = engine.partitions[("events", 0)].monitors
    busy, quiet = monitors["busy"].lines("numeric"), monitors["quiet"].lines("numeric")
    assert (busy.false_alarm_budget, busy.event_rate) == (0.5, 50000.0)
    assert (quiet.false_alarm_budget, quiet.event_rate) == (2.0, 1000.0)
    # 200 times fewer false alarms per event: a stricter line for the busy model
    assert busy.ph_threshold > quiet.ph_threshold and busy.ks_alpha < quiet.ks_alpha


def test_rejections_go_to_the_dlq_with_their_reason_and_source(unique: str) -> None:
    config = settings(unique, max_models=2)
    good = {"model": "a", "features": {"x": 1.0}}
    batch = [good, {"model": "a", "features": 5}, dict(good, model="b"), dict(good, model="c")]
    items = [
        Record("events", 3, 10, 1.8e9, b"k", b"{broken"),
        Record("events", 3, 11, 1.8e9, b"k", orjson.dumps(batch)),
    ]
    engine = make_engine(config, MemoryStateStore())
    out = asyncio.run(engine.process(items))
    assert [dict(h)["driftstream-reason"] for _, _, h in out.dlq] == [
        b"invalid_json", b"invalid_features", b"too_many_models"
    ]
    key, value, headers = out.dlq[0]
    assert value == b"{broken" and key == b"k"
    assert dict(headers)["driftstream-source-offset"] == b"10"
    assert dict(headers)["driftstream-source-partition"] == b"3"
    _, value, headers = out.dlq[1]
    assert orjson.loads(value) == batch[1] and dict(headers)["driftstream-batch-index"] == b"1"
    assert set(engine.partitions[("events", 3)].monitors) == {"a", "b"}
    rejected = engine.metrics.registry.get_sample_value
    assert rejected("driftstream_events_rejected_total", {"reason": "too_many_models"}) == 1
    assert rejected("driftstream_events_consumed_total", {"model": "a"}) == 1


def test_an_unreadable_snapshot_starts_that_model_fresh(unique: str, redis_url: str) -> None:
    config = settings(unique, redis_url=redis_url)

    async def scenario() -> Engine:
        store = RedisStateStore.from_settings(config)
        key = store.partition_key("events", 0)
        await store._redis.hset(key, mapping={"v": 1, "offset": 4, "model:fraud": b"\xc1garbage", "model:ok": b"\x80"})
        engine = make_engine(config, store)
        await engine.process(records(TRAFFIC, 10)[5:])
        await store.close()
        return engine

    engine = asyncio.run(scenario())
    state = engine.partitions[("events", 0)]
    assert state.offset == 9 and state.monitors["fraud"].events_seen == 5
    assert engine.metrics.registry.get_sample_value("driftstream_state_restore_failures_total") == 2


def test_a_forgotten_partition_is_reloaded_from_the_store(unique: str) -> None:
    config = settings(unique)
    store = MemoryStateStore()
    items = records(TRAFFIC, 300)

    async def scenario() -> Engine:
        engine = make_engine(config, store)
        await engine.process(items[:200])
        await engine.checkpoint()
        await engine.process(items[200:250])  # applied, never checkpointed
        engine.forget([("events", 0)])
        await engine.process(items[150:])  # redelivered from before the checkpoint
        return engine

    engine = asyncio.run(scenario())
    state = engine.partitions[("events", 0)]
    # The unsaved 50 were dropped with the memory and applied again from Kafka: 300, not 350.
    assert state.offset == 299 and state.monitors["fraud"].events_seen == 300


def test_a_partition_of_an_unreadable_layout_version_starts_fresh_and_is_replaced(unique: str,
                                                                                   redis_url: str) -> None:
    config = settings(unique, redis_url=redis_url)

    async def scenario() -> tuple[Engine, dict]:
        store = RedisStateStore.from_settings(config)
        key = store.partition_key("events", 0)
        await store._redis.hset(key, mapping={"v": "garbage", "offset": 500, "model:fraud": b"unreadable"})
        engine = make_engine(config, store)
        await engine.process(records(TRAFFIC, 10))
        await engine.checkpoint()
        stored = await store._redis.hgetall(key)
        await store.close()
        return engine, stored

    engine, stored = asyncio.run(scenario())
    # Nothing of an unreadable layout is trusted, not even its offset: all 10 records apply.
    assert engine.partitions[("events", 0)].monitors["fraud"].events_seen == 10
    assert engine.metrics.registry.get_sample_value("driftstream_state_restore_failures_total") == 1
    assert stored[b"v"] == str(STATE_VERSION).encode() and stored[b"offset"] == b"9"
    assert stored[b"model:fraud"] != b"unreadable"


def test_a_partition_of_a_newer_layout_is_left_untouched_and_reported(unique: str, redis_url: str) -> None:
    """A rollback meets state a newer release wrote: it must not wipe it, nor apply that partition."""
    config = settings(unique, redis_url=redis_url)
    future = {b"v": b"99", b"offset": b"500", b"model:fraud": b"from the future"}

    async def scenario() -> tuple[Engine, dict, list]:
        store = RedisStateStore.from_settings(config)
        key = store.partition_key("events", 0)
        await store._redis.hset(key, mapping=future)
        engine = make_engine(config, store)
        out = await engine.process(records(TRAFFIC, 10) + records(TRAFFIC, 10, topic="other"))
        await engine.checkpoint()
        stored = await store._redis.hgetall(key)
        await store.close()
        return engine, stored, out.alert_objects

    engine, stored, _ = asyncio.run(scenario())
    assert stored == future  # not a byte changed
    assert engine.blocked == {("events", 0): 99} and ("events", 0) not in engine.partitions
    assert engine.partitions[("other", 0)].monitors["fraud"].events_seen == 10  # other partitions go on
    registry = engine.metrics.registry
    assert registry.get_sample_value("driftstream_partitions_blocked") == 1
    assert registry.get_sample_value("driftstream_state_restore_failures_total") == 1
    engine.forget([("events", 0)])
    assert registry.get_sample_value("driftstream_partitions_blocked") == 0


LAYOUT1_FIXTURE = Path(__file__).parent.parent / "fixtures" / "layout1-partition.msgpack"


def test_a_layout_1_checkpoint_of_the_previous_release_is_migrated_and_continued(unique: str,
                                                                                 redis_url: str) -> None:
    """tests/fixtures/layout1-partition.msgpack: what release e168f43 saved after 2600 events of
    TRAFFIC (version "1", offsets 0..2599). The migrated state goes on as if never interrupted."""
    # The fixture was written with the lines of that release: no false-alarm budget yet.
    config = settings(unique, redis_url=redis_url, false_alarm_budget=0)
    stream = model_events(TRAFFIC, 0)
    items = [Record("events", 0, offset, 1.8e9 + offset, b"fraud", orjson.dumps(dict(next(stream), model_version="1")))
             for offset in range(6000)]  # fmt: skip

    async def scenario() -> tuple[list[dict], list[dict], Engine, dict]:
        straight = await feed(make_engine(config, MemoryStateStore()), items)
        store = RedisStateStore.from_settings(config)
        key = store.partition_key("events", 0)
        await store._redis.hset(key, mapping=msgpack.unpackb(LAYOUT1_FIXTURE.read_bytes(), raw=True))
        engine = make_engine(config, store)
        resumed = await feed(engine, items[2000:])  # Kafka replays from an older commit
        await engine.checkpoint()
        stored = await store._redis.hgetall(key)
        await store.close()
        return straight, resumed, engine, stored

    straight, resumed, engine, stored = asyncio.run(scenario())
    monitor = engine.partitions[("events", 0)].monitors["fraud"]
    assert monitor.events_seen == 6000 and list(monitor.versions) == ["1"]
    assert set(monitor.whole.features) == {"f0", "f1", "f2", "f3", "c0"} and list(monitor.whole.predictions) == ["1"]
    assert engine.metrics.registry.get_sample_value("driftstream_state_restore_failures_total") == 0
    # Rewritten whole in the current layout.
    assert stored[b"v"] == str(STATE_VERSION).encode() and stored[b"offset"] == b"5999"
    assert msgpack.unpackb(stored[b"model:fraud"])["v"] == SNAPSHOT_VERSION
    after = [a for a in straight if a["window"]["event_index"] >= 2600]

    def decisions(alerts: list[dict]) -> list[tuple]:
        return [(a["feature"], a["detector"], a["status"], a["severity"], a["window"]["event_index"]) for a in alerts]

    assert decisions(resumed) == decisions(after) and decisions(after)
    assert [a["alert_id"] for a in resumed] == [a["alert_id"] for a in after]


def test_a_checkpoint_behind_the_stored_offset_is_refused_and_newer_state_reloaded(unique: str, store_factory) -> None:
    config = settings(unique)
    items = records(TRAFFIC, 400)

    async def scenario() -> Engine:
        stalled, owner = make_engine(config, store_factory(config)), make_engine(config, store_factory(config))
        await stalled.process(items[:100])
        await owner.process(items[:300])  # took the partition over and went further
        await owner.checkpoint()
        assert await stalled.checkpoint() == 0  # would move the stored offset back from 299 to 99
        await stalled.process(items[100:])  # redelivered: reloads the owner's state, applies 300..399
        await stalled.checkpoint()
        return stalled

    engine = asyncio.run(scenario())
    conflicts = engine.metrics.registry.get_sample_value
    assert conflicts("driftstream_checkpoint_conflicts_total", {"kind": "newer_owner"}) == 1
    state = engine.partitions[("events", 0)]
    assert state.offset == 399 and state.monitors["fraud"].events_seen == 400


def test_offsets_that_start_over_are_applied_with_the_detectors_kept(unique: str, store_factory) -> None:
    """A broker that lost its log (or a recreated topic) hands out offsets already seen."""
    config = settings(unique)
    items = records(TRAFFIC, 700)
    restarted = [Record(r.topic, r.partition, r.offset - 500, r.timestamp, r.key, r.value) for r in items[500:]]

    async def scenario() -> tuple[Engine, Checkpoint | None]:
        store = store_factory(config)
        engine = make_engine(config, store)
        await engine.process(items[:500])
        await engine.checkpoint()
        await engine.process(restarted[:50])
        await engine.checkpoint()  # moves the stored offset back to 49
        await engine.process(restarted[50:])
        await engine.checkpoint()
        return engine, await store.load("events", 0)

    engine, stored = asyncio.run(scenario())
    state = engine.partitions[("events", 0)]
    assert state.offset == 199 and state.monitors["fraud"].events_seen == 700
    assert engine.metrics.registry.get_sample_value("driftstream_offset_resets_total") == 1
    assert stored is not None and stored.offset == 199
    assert stored.offset_timestamp == round(items[699].timestamp * 1000)  # the fingerprint of record 199


def test_a_restarted_log_found_on_assignment_is_applied_from_its_start(unique: str) -> None:
    config = settings(unique)
    store = MemoryStateStore()

    async def scenario() -> Engine:
        engine = make_engine(config, store)
        await engine.process(records(TRAFFIC, 300))
        await engine.checkpoint()
        fresh = make_engine(config, store)
        await fresh.load("events", 0)
        fresh.restart_offsets("events", 0, "the record at offset 299 is not the one applied")
        await fresh.process(records(TRAFFIC, 40))  # offsets 0..39 of the new log all apply
        assert await fresh.checkpoint() == 1  # the stored offset may go back
        return fresh

    fresh = asyncio.run(scenario())
    state = fresh.partitions[("events", 0)]
    assert state.offset == 39 and state.monitors["fraud"].events_seen == 340
    assert fresh.metrics.registry.get_sample_value("driftstream_offset_resets_total") == 1


def test_a_store_that_lost_writes_gets_the_whole_partition_again(unique: str, redis_url: str) -> None:
    """Redis restarted empty, or a failover to a replica that missed the last writes: writing
    only the changed models beside a new offset would leave the others missing or stale."""
    config = settings(unique, redis_url=redis_url)
    items = records(TRAFFIC, 200)
    other = Record("events", 0, 200, 1.8e9 + 200, b"churn", orjson.dumps({"model": "churn", "features": {"x": 1.0}}))

    async def scenario() -> tuple[Engine, Checkpoint | None]:
        store = RedisStateStore.from_settings(config)
        engine = make_engine(config, store)
        await engine.process(items)
        await engine.checkpoint()
        await store._redis.delete(store.partition_key("events", 0))  # the store forgot
        await engine.process([other])  # only churn changes
        assert await engine.checkpoint() == 1
        stored = await store.load("events", 0)
        await store.close()
        return engine, stored

    engine, stored = asyncio.run(scenario())
    assert stored is not None and stored.offset == 200 and set(stored.models) == {"fraud", "churn"}
    conflicts = engine.metrics.registry.get_sample_value
    assert conflicts("driftstream_checkpoint_conflicts_total", {"kind": "diverged"}) == 1


def test_a_store_outage_fails_the_batch_before_any_state_changes(unique: str, redis_url: str) -> None:
    items = records(TRAFFIC, 300)
    down = settings(unique, redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_socket_timeout=0.5)
    up = settings(unique, redis_url=redis_url)

    def use(engine: Engine, config: Settings) -> None:
        """Point the engine's state and join stores at ``config``'s Redis."""
        engine.store = store = RedisStateStore.from_settings(config)
        engine.joins = RedisJoinStore(store.client, config.state_prefix, config.app_id, config.label_ttl)

    async def scenario() -> Engine:
        engine = make_engine(down, RedisStateStore.from_settings(down))
        with pytest.raises(StoreUnavailable):
            await engine.process(items[:100])
        assert engine.partitions == {}
        use(engine, up)  # the store is back
        await engine.process(items[:100])
        await engine.process(items[100:])
        use(engine, down)
        with pytest.raises(StoreUnavailable):
            await engine.checkpoint()
        use(engine, up)
        assert await engine.checkpoint() == 1
        return engine

    engine = asyncio.run(scenario())
    assert engine.partitions[("events", 0)].monitors["fraud"].events_seen == 300
    assert engine.metrics.registry.get_sample_value("driftstream_messages_consumed_total") == 300


def test_a_huge_bad_message_reaches_the_dlq_cut_with_a_pointer_to_the_whole(unique: str) -> None:
    config = settings(unique, dlq_max_value_bytes=2048)
    huge = b"[" + b"1," * 5000 + b"]"
    out = asyncio.run(make_engine(config, MemoryStateStore()).process([Record("events", 2, 7, 1.8e9, None, huge)]))
    (key, value, headers), = out.dlq
    assert value == huge[:2048]
    assert dict(headers)["driftstream-truncated-from"] == str(len(huge)).encode()
    assert dict(headers)["driftstream-source-offset"] == b"7"


class Recording(MemoryStateStore):
    """The in-memory store, keeping the checkpoints of every save call; the ``fail_at``-th raises as an
    outage would."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.calls: list[list[Checkpoint]] = []
        self.fail_at = fail_at

    async def save(self, checkpoints: list[Checkpoint]):
        self.calls.append(list(checkpoints))
        if len(self.calls) == self.fail_at:
            raise StoreUnavailable("injected outage")
        return await super().save(checkpoints)

    def partitions_saved(self) -> list[list[tuple[str, int]]]:
        return [[(c.topic, c.partition) for c in call] for call in self.calls]


def test_a_checkpoint_saves_in_bounded_groups_and_an_outage_keeps_the_saved_ones(unique: str, monkeypatch) -> None:
    monkeypatch.setattr("streams.engine.CHECKPOINT_GROUP_BYTES", 1)  # every partition is a group of its own
    items = [Record(r.topic, p, r.offset, r.timestamp, r.key, r.value)
             for p in range(3) for r in records(TRAFFIC, 50)]  # fmt: skip
    store = Recording(fail_at=2)

    async def scenario() -> Engine:
        engine = make_engine(settings(unique), store)
        await engine.process(items)
        with pytest.raises(StoreUnavailable):
            await engine.checkpoint()
        assert store.partitions_saved() == [[("events", 0)], [("events", 1)]]
        saved, unsaved = engine.partitions[("events", 0)], engine.partitions[("events", 1)]
        assert saved.stored == 49 and not saved.dirty and not saved.offset_dirty
        assert unsaved.stored is None and unsaved.dirty == {"fraud"}
        assert await engine.checkpoint() == 2  # only what the outage left
        assert store.partitions_saved()[2:] == [[("events", 1)], [("events", 2)]]
        return engine

    asyncio.run(scenario())
    for partition in range(3):
        assert (asyncio.run(store.load("events", partition))).offset == 49


def test_a_diverged_checkpoint_lets_go_of_its_snapshots_before_the_rewrite(unique: str) -> None:
    store = Recording()
    items = records(TRAFFIC, 200)

    async def scenario() -> None:
        engine = make_engine(settings(unique), store)
        await engine.process(items[:100])
        await engine.checkpoint()
        store._partitions.clear()  # Redis lost its data (a failover to an empty replica)
        await engine.process(items[100:])
        store.calls.clear()
        assert await engine.checkpoint() == 1
        [diverged], [rewrite] = store.calls
        assert diverged.write is Write.FORWARD and rewrite.write is Write.REPLACE
        assert diverged.models == {} and set(rewrite.models) == {"fraud"}

    asyncio.run(scenario())
    assert asyncio.run(store.load("events", 0)).offset == 199


def _shifted_baseline(shift: float, prediction_shift: float | None = None) -> bytes:
    """A baseline of TRAFFIC's numeric features moved by ``shift`` std (and of its prediction)."""
    rng = np.random.default_rng(0)
    references: dict = {f"f{i}": NumericReference.build(rng.standard_normal(5000) + shift, bins=10) for i in range(4)}
    if prediction_shift is not None:
        references[PREDICTION] = NumericReference.build(rng.uniform(0, 1, 5000) + prediction_shift, bins=10)
    return baseline_blob(references)


def test_a_baseline_loaded_for_a_running_model_replaces_its_reference_from_the_next_window(
    unique: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "BASELINE_POLL_SECONDS", 0.0)
    config = settings(unique, redis_url=redis_url)
    items = records(Traffic(numeric=4, categorical=1, seed=11), 6000)

    async def scenario() -> tuple[list[dict], Engine, Engine]:
        store = RedisStateStore.from_settings(config)
        engine = make_engine(config, store)
        alerts = await feed(engine, items[:3000])
        assert alerts == []
        await store.save_baseline("fraud", _shifted_baseline(3.0))  # a retrain moved every feature
        alerts += await feed(engine, items[3000:4500])
        await engine.checkpoint()
        # Loaded while no worker runs: a restarted one judges against it, not the checkpoint's.
        await store.save_baseline("fraud", _shifted_baseline(-3.0))
        restarted = make_engine(config, RedisStateStore.from_settings(config))
        await restarted.process(items[4500:4600])
        await store.close()
        return alerts, engine, restarted

    alerts, engine, restarted = asyncio.run(scenario())
    fired = {(a["feature"], a["detector"]) for a in alerts if a["status"] == "firing"}
    assert {("f0", "psi"), ("f3", "psi")} <= fired
    assert min(a["window"]["event_index"] for a in alerts) >= 3000
    monitor = engine.partitions[("events", 0)].monitors["fraud"]
    assert monitor.whole.features["f0"].reference.mean == pytest.approx(3.0, abs=0.1)
    assert monitor.whole.features["c0"].reference.summary["count"] == 1000  # no baseline: the stream's own
    again = restarted.partitions[("events", 0)].monitors["fraud"]
    assert again.whole.features["f0"].reference.mean == pytest.approx(-3.0, abs=0.1)


def test_a_baseline_per_version_is_the_reference_of_that_versions_prediction(unique: str) -> None:
    config = settings(unique)
    traffic = Traffic(numeric=2, categorical=0, seed=3, versions=(VersionSwitch(start=500, version="2"),))
    items = records(traffic, 1500)

    async def scenario() -> Engine:
        store = MemoryStateStore()
        await store.save_baseline("fraud", _shifted_baseline(0.0, prediction_shift=5.0), version="2")
        engine = make_engine(config, store)
        await feed(engine, items)
        return engine

    monitor = asyncio.run(scenario()).partitions[("events", 0)].monitors["fraud"]
    assert monitor.whole.predictions["1"].reference is None  # still building from its first 1000 values
    assert monitor.whole.predictions["2"].reference.mean == pytest.approx(5.5, abs=0.05)


def test_a_newer_layout_written_after_the_load_is_never_overwritten(unique: str, redis_url: str) -> None:
    """A newer release took the partition over while this worker held it: not even a whole
    rewrite (after a diverged checkpoint) may replace what it wrote."""
    config = settings(unique, redis_url=redis_url)
    items = records(TRAFFIC, 40)

    async def scenario() -> tuple[Engine, dict, dict]:
        store = RedisStateStore.from_settings(config)
        key = store.partition_key("events", 0)
        engine = make_engine(config, store)
        await engine.process(items[:20])
        await engine.checkpoint()
        future = {b"v": str(STATE_VERSION + 1).encode(), b"offset": b"25", b"model:fraud": b"a newer release's"}
        await store._redis.delete(key)
        await store._redis.hset(key, mapping=future)
        await engine.process(items[20:])
        await engine.checkpoint()
        stored = await store._redis.hgetall(key)
        await store.close()
        return engine, stored, future

    engine, stored, future = asyncio.run(scenario())
    assert stored == future
    assert engine.blocked == {("events", 0): STATE_VERSION + 1} and ("events", 0) not in engine.partitions
    assert engine.metrics.registry.get_sample_value("driftstream_partitions_blocked") == 1


class FailingBaselines(MemoryStateStore):
    """An in-memory store whose baseline reads fail after ``good`` of them (an outage midway)."""

    def __init__(self) -> None:
        super().__init__()
        self.good: int | None = None

    async def load_baseline(self, model: str, version: str | None = None) -> bytes | None:
        if self.good is not None:
            if self.good == 0:
                raise StoreUnavailable("down")
            self.good -= 1
        return await super().load_baseline(model, version)


def test_a_store_failing_while_baselines_are_reread_changes_no_model(unique: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "BASELINE_POLL_SECONDS", 0.0)
    config = settings(unique)
    models = ("m0", "m1", "m2")
    items = [Record("events", 0, offset, 1.8e9 + offset, b"m", orjson.dumps(
        {"model": models[offset % 3], "features": {f"f{i}": float(np.sin(offset * (i + 1))) for i in range(4)}}))
        for offset in range(3300)]  # fmt: skip

    async def scenario() -> Engine:
        store = FailingBaselines()
        engine = make_engine(config, store)
        await feed(engine, items[:3000])
        for model in models:
            await store.save_baseline(model, _shifted_baseline(3.0))
        store.good = 1  # the second model's read fails
        with pytest.raises(StoreUnavailable):
            await engine.process(items[3000:3100])
        means = [engine.partitions[("events", 0)].monitors[m].whole.features["f0"].reference.mean for m in models]
        assert max(abs(mean) for mean in means) < 1.0, means  # nothing rebased yet
        store.good = None
        await engine.process(items[3000:3100])  # the batch again, the store back
        return engine

    engine = asyncio.run(scenario())
    for model in models:
        assert engine.partitions[("events", 0)].monitors[model].whole.features["f0"].reference.mean == pytest.approx(
            3.0, abs=0.1)  # fmt: skip


def test_a_retired_versions_metric_series_go_with_it(unique: str) -> None:
    config = settings(unique, max_versions=2)
    stream = model_events(Traffic(numeric=2, categorical=0, seed=3), 0)
    items = [Record("events", 0, offset, 1.8e9 + offset, b"fraud",
                    orjson.dumps(dict(next(stream), model_version=f"v{offset // 1500}")))
             for offset in range(6000)]  # fmt: skip
    engine = make_engine(config, MemoryStateStore())
    asyncio.run(feed(engine, items))
    versions = {s.labels["version"] for s in engine.metrics.registry.collect() for s in s.samples
                if s.name == "driftstream_drift_statistic"}  # fmt: skip
    assert versions == {"", "v2", "v3"}
    assert engine.metrics.registry.get_sample_value("driftstream_versions_retired_total", {"model": "fraud"}) == 2


def test_drift_metrics_snapshots_carry_each_statistics_line(unique: str) -> None:
    """The line beside each statistic (as driftstream_drift_threshold): what the report plots a window against."""
    engine = make_engine(settings(unique), MemoryStateStore())

    async def run() -> list[dict]:
        out = await engine.process(records(TRAFFIC, 1600))
        return [orjson.loads(value) for _, value in out.metrics]

    snapshots = asyncio.run(run())
    entries = [entry for snapshot in snapshots for entry in snapshot["statistics"]]
    ks = [entry for entry in entries if entry["detector"] == "ks" and entry["feature"] == "f1"]
    assert ks and all(0 < entry["line"] < 1 for entry in ks)
    gauge = engine.metrics.registry.get_sample_value(
        "driftstream_drift_threshold", {"model": "fraud", "version": "", "segment": "", "feature": "f1",
                                        "detector": "ks"})  # fmt: skip
    assert gauge == ks[-1]["line"]
    assert {entry["line"] is not None for entry in entries} == {True}
