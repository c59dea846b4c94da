"""End to end: a real broker, a real redis-server, real worker processes."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from confluent_kafka import Producer

from streams.settings import Settings
from streams.simulate import Drift, Traffic, produce
from streams.state import RedisStateStore
from tests.integration.harness import WorkerProcess, alerts_of, isolated_settings, read_topic

pytestmark = pytest.mark.integration

CONTRACT_FIELDS = {
    "alert_id", "type", "status", "severity", "model", "model_version", "feature", "segment", "detector",
    "statistic", "threshold", "p_value", "window", "reference", "current", "detected_at", "message",
}  # fmt: skip
ADDED_FIELDS = {"detectors"}  # additive to the contract (README, alerts)


@pytest.fixture
def settings(kafka_bootstrap: str, redis_url: str) -> Settings:
    return isolated_settings(kafka_bootstrap, redis_url, "it", topic_partitions=2)



@pytest.mark.parametrize("per_detector", [True, False], ids=["per_detector", "per_incident"])
def test_a_mean_shift_alerts_on_that_feature_only(settings: Settings, per_detector: bool) -> None:
    traffic = Traffic(models=("fraud",), numeric=10, categorical=0, seed=3,
                      drifts=(Drift("f6", start=10_000, kind="mean_shift", magnitude=1.0),))  # fmt: skip
    settings = settings.model_copy(update={"alert_per_detector": per_detector})  # DRIFTSTREAM_ALERT_PER_DETECTOR
    worker = WorkerProcess(settings)
    try:
        assert produce(settings, traffic, count=20_000, batch_size=1) == 20_000
        worker.wait_consumed(20_000)
        alerts = alerts_of(settings)
    finally:
        worker.stop()
    firing = [a for a in alerts if a["status"] == "firing"]
    assert {a["feature"] for a in alerts} == {"f6"}, alerts
    for alert in alerts:
        assert CONTRACT_FIELDS | ADDED_FIELDS <= alert.keys()
        assert alert["window"]["event_index"] >= 10_000
        assert alert["model"] == "fraud" and alert["model_version"] == "1"
        assert alert["detector"] in alert["detectors"] and alert["detectors"] == sorted(alert["detectors"])
    assert len({a["alert_id"] for a in alerts}) == len(alerts)
    if not per_detector:
        # One incident, still firing at the end: fired once, at most escalated once (the detectors
        # that join it at no higher severity send nothing; they are named in its next alert).
        assert [a["severity"] for a in firing] in (["warning", "critical"], ["critical"]), alerts
        assert firing == alerts and all(a["type"] == "data_drift" for a in alerts)
        return
    assert all(a["detectors"] == [a["detector"]] for a in alerts)
    assert {a["detector"] for a in firing} >= {"psi", "adwin", "page_hinkley"}
    psi = next(a for a in firing if a["detector"] == "psi")
    assert psi["severity"] == "critical" and psi["statistic"] >= 0.25 and psi["threshold"] == 0.25
    assert psi["window"]["count"] == 1000 and psi["window"]["start"] <= psi["window"]["end"]
    assert psi["current"]["mean"] > psi["reference"]["mean"] + 0.8 * psi["reference"]["std"]
    assert "f6" in psi["message"] and "PSI" in psi["message"]


def test_a_malformed_element_of_an_envelope_goes_to_the_dlq_alone(settings: Settings) -> None:
    good = [{"model": "m", "event_id": str(i), "features": {"x": float(i)}} for i in range(3)]
    envelope = [good[0], {"model": "m", "features": {"x": [1, 2]}}, good[1], good[2]]
    producer = Producer(settings.confluent_config())
    producer.produce(settings.topic_events, key=b"m", value=orjson.dumps(envelope))
    producer.produce(settings.topic_events, key=b"m", value=b"\xff not json")
    producer.flush(10)
    worker = WorkerProcess(settings)
    try:
        worker.wait_consumed(2)
        worker.wait_for(lambda: worker.metric("driftstream_events_consumed_total", {"model": "m"}) == 3, 30,
                        "3 good events")  # fmt: skip
        rejected = worker.metric("driftstream_events_rejected_total")
        dlq = read_topic(settings, settings.topic_dlq)
    finally:
        worker.stop()
    assert rejected == 2
    by_reason = {dict(m.headers())["driftstream-reason"]: m for m in dlq}
    assert set(by_reason) == {b"invalid_feature_value", b"invalid_json"}
    element = by_reason[b"invalid_feature_value"]
    assert orjson.loads(element.value()) == envelope[1]
    assert dict(element.headers())["driftstream-batch-index"] == b"1"
    assert dict(element.headers())["driftstream-source-topic"] == settings.topic_events.encode()
    assert by_reason[b"invalid_json"].value() == b"\xff not json"


def test_a_restarted_worker_keeps_its_reference(settings: Settings) -> None:
    """The reference comes from the first 5000 events; after a restart, all new events are
    shifted. A rebuilt reference would take the shifted data as normal and stay quiet."""
    before = Traffic(models=("fraud",), numeric=3, categorical=0, seed=5)
    after = Traffic(models=("fraud",), numeric=3, categorical=0, seed=6,
                    drifts=(Drift("f0", start=0, kind="mean_shift", magnitude=2.0),))  # fmt: skip
    worker = WorkerProcess(settings)
    try:
        produce(settings, before, count=6000, batch_size=100)
        worker.wait_consumed(60)
        assert alerts_of(settings) == []
    finally:
        assert worker.stop() == 0

    async def saved_state() -> dict:
        store = RedisStateStore.from_settings(settings)
        try:
            return {p: await store.load(settings.topic_events, p) for p in (0, 1)}
        finally:
            await store.close()

    checkpoints = [c for c in asyncio.run(saved_state()).values() if c is not None]
    assert len(checkpoints) == 1 and "fraud" in checkpoints[0].models
    produce(settings, after, count=6000, batch_size=100)
    worker = WorkerProcess(settings)
    try:
        worker.wait_consumed(60)
        worker.wait_for(lambda: alerts_of(settings) != [], 60, "an alert")
        alerts = alerts_of(settings)
    finally:
        worker.stop()
    assert {a["feature"] for a in alerts} == {"f0"}
    for alert in alerts:  # every detector of a feature judges against its one reference
        assert alert["reference"]["mean"] == pytest.approx(0.0, abs=0.05)
        assert alert["window"]["event_index"] >= 6000  # the restored monitor kept counting
