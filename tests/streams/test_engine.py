"""The batch engine against a real redis-server (and the in-memory store)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from prometheus_client import CollectorRegistry

from streams.engine import Engine, Record
from streams.metrics import Metrics
from streams.settings import Settings
from streams.simulate import Drift, Traffic, model_events
from streams.state import MemoryStateStore, RedisStateStore, StateStore


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


@pytest.fixture(params=["redis", "memory"])
def store_factory(request, redis_url: str):
    """Stores of one backend; every Redis store shares the same server."""
    shared_memory = MemoryStateStore()

    def factory(config: Settings) -> StateStore:
        if request.param == "memory":
            return shared_memory
        return RedisStateStore.from_settings(config.model_copy(update={"redis_url": redis_url}))

    return factory


def test_drift_alerts_and_checkpointed_state_survive_a_new_engine(unique: str, store_factory) -> None:
    config = settings(unique)
    items = records(TRAFFIC, 6000)

    async def scenario() -> tuple[list[dict], list[dict]]:
        straight = await feed(make_engine(config, store_factory(config)), items)
        resumed_config = config.model_copy(update={"app_id": f"resumed-{unique}"})
        first = make_engine(resumed_config, store_factory(resumed_config))
        alerts = await feed(first, items[:2600])
        await first.checkpoint()
        second = make_engine(resumed_config, store_factory(resumed_config))
        # Records the checkpoint covers are skipped: replaying from offset 2000 changes nothing.
        alerts += await feed(second, items[2000:])
        return straight, alerts

    straight, resumed = asyncio.run(scenario())
    assert {(a["feature"], a["detector"]) for a in straight if a["status"] == "firing"} >= {("f1", "psi")}
    assert {a["feature"] for a in straight} == {"f1"}
    assert [a["alert_id"] for a in resumed] != []
    strip = lambda alerts: [{k: v for k, v in a.items() if k != "alert_id"} for a in alerts]  # noqa: E731
    assert strip(resumed) == strip(straight)


def test_batch_envelopes_give_the_same_alerts_as_single_events(unique: str) -> None:
    config = settings(unique)

    async def scenario(per_message: int) -> list[dict]:
        return await feed(make_engine(config, MemoryStateStore()), records(TRAFFIC, 6000, per_message), 20)

    singles, envelopes = asyncio.run(scenario(1)), asyncio.run(scenario(50))
    assert [a["alert_id"] for a in singles] == [a["alert_id"] for a in envelopes]


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
        await store._redis.hset(key, mapping={"offset": 4, "model:fraud": b"\xc1garbage", "model:ok": b"\x80"})
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
