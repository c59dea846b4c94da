"""Freshness through the engine: silence, its alert ids across a restart, and event-time metrics."""

from __future__ import annotations

import asyncio

import orjson
from prometheus_client import CollectorRegistry

from streams.engine import Engine, Record
from streams.metrics import Metrics
from streams.settings import Settings
from streams.simulate import Traffic, model_events
from streams.state import MemoryStateStore

NOW = 1.8e9


def events(model: str, count: int, start: int = 0, stamp: float = NOW) -> list[Record]:
    stream = model_events(Traffic(models=(model,), numeric=3, categorical=0, seed=3), 0)
    out = []
    for offset in range(start, start + count):
        event = next(stream) | {"timestamp": stamp}
        out.append(Record("events", 0, offset, NOW, model.encode(), orjson.dumps(event)))
    return out


def test_a_silent_model_fires_once_resolves_on_its_next_event_and_replays_with_the_same_id(unique: str) -> None:
    config = Settings(app_id=f"fresh-{unique}", state_prefix=f"f-{unique}", stale_after=60.0, reference_size=200,
                      window_size=100)  # fmt: skip
    store = MemoryStateStore()
    clock = [NOW]

    def engine() -> Engine:
        return Engine(config, store, Metrics(CollectorRegistry()), clock=lambda: clock[0])

    async def scenario() -> tuple[list[dict], list[dict], list[dict], list[dict]]:
        first = engine()
        await first.process(events("churn", 300))
        await first.checkpoint()
        clock[0] += 59.0
        assert not first.check_freshness().alert_objects
        clock[0] += 2.0
        # A partition with messages not applied yet (a catch-up, a store outage) is not judged.
        assert not first.check_freshness(skip=[("events", 0)]).alert_objects
        fired = first.check_freshness().alert_objects
        assert not first.check_freshness().alert_objects  # once
        # A crash before the checkpoint: the next worker loads the state from before the alert and,
        # after STALE_AFTER from its load, sends it again with the same id.
        second = engine()
        await second.process([])
        await second.load("events", 0)
        assert not second.check_freshness().alert_objects  # counted from its load
        clock[0] += 60.0
        again = second.check_freshness().alert_objects
        await second.checkpoint()
        third = engine()
        await third.load("events", 0)
        clock[0] += 600.0
        assert not third.check_freshness().alert_objects  # firing already, as checkpointed
        resolved = (await third.process(events("churn", 10, start=300))).alert_objects
        return fired, again, resolved, (await third.process(events("churn", 10, start=310))).alert_objects

    fired, again, resolved, later = asyncio.run(scenario())
    (alert,) = fired
    assert (alert["type"], alert["status"], alert["severity"], alert["detector"], alert["feature"]) == (
        "data_quality", "firing", "critical", "freshness", None)
    assert alert["model"] == "churn" and alert["statistic"] == 61.0 and alert["threshold"] == 60.0
    assert [a["alert_id"] for a in again] == [alert["alert_id"]]
    assert [a["status"] for a in resolved if a["detector"] == "freshness"] == ["resolved"]
    assert not [a for a in later if a["detector"] == "freshness"]


def test_event_lag_and_events_stamped_far_from_the_clock_are_measured(unique: str) -> None:
    config = Settings(app_id=f"lag-{unique}", state_prefix=f"l-{unique}", event_time_future=300.0,
                      event_time_past=3600.0)  # fmt: skip
    metrics = Metrics(CollectorRegistry())
    engine = Engine(config, MemoryStateStore(), metrics, clock=lambda: NOW)
    batch = events("fraud", 10, stamp=NOW - 2.0) + events("fraud", 3, 10, stamp=NOW + 900.0)
    batch += events("fraud", 4, 13, stamp=NOW - 7200.0)
    asyncio.run(engine.process(batch))
    registry = metrics.events_out_of_time.labels("fraud", "future")._value.get()
    assert registry == 3
    assert metrics.events_out_of_time.labels("fraud", "past")._value.get() == 4
    lag = metrics.event_lag.labels("fraud")
    assert lag._sum.get() == 10 * 2.0 - 3 * 900.0 + 4 * 7200.0
    assert sum(bucket.get() for bucket in lag._buckets) == 17
